"""colmed.data_gen: clinical notes -> LLM (or LLM-free) queries -> mined hard negatives -> triplets.

The canonical output record is :class:`~data_gen.records.TripletRecord`; both trainer families read it.
Entry points: :class:`data_gen.pipeline.TripletPipeline` (what ``colmed generate`` runs),
:func:`data_gen.pipeline.merge_shards`, the exporters in :mod:`data_gen.export`, the miner in
:mod:`data_gen.mining`, generators in :mod:`data_gen.generators`, LLM backends in
:mod:`data_gen.backends`, Ray scale-out in :mod:`data_gen.ray_pipeline`. See ``data_gen/README.md``.

Example:
    >>> from data_gen.config import GenerateConfig
    >>> from data_gen.pipeline import TripletPipeline
    >>> cfg = GenerateConfig(notes="../shared/beir/nfcorpus", out="runs/nfcorpus-triplets")  # doctest: +SKIP
    >>> TripletPipeline(cfg).run()["counts"]["records"]["total"]                          # doctest: +SKIP
    5465
"""
