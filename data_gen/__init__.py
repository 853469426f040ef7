"""colmed.data_gen: clinical notes -> LLM (or LLM-free) queries -> mined hard negatives -> triplets.

The canonical output record is :class:`~colmed.data.triplets.TripletRecord`; both trainer families read it.
Entry points: :class:`colmed.data_gen.pipeline.TripletPipeline` (what ``colmed generate`` runs),
:func:`colmed.data_gen.pipeline.merge_shards`, the exporters in :mod:`colmed.data_gen.export`, the miner in
:mod:`colmed.data_gen.mining`, generators in :mod:`colmed.data_gen.generators`, LLM backends in
:mod:`colmed.data_gen.backends`, Ray scale-out in :mod:`colmed.data_gen.ray_pipeline`. See ``data_gen/README.md``.

Example (LLM-free inverse-cloze queries from the bundled sample; a BEIR corpus reads as notes, so
``notes="../shared/beir/nfcorpus"`` works the same way):
    >>> import tempfile
    >>> from importlib.resources import files
    >>> from colmed.data_gen.config import GenerateConfig
    >>> from colmed.data_gen.pipeline import TripletPipeline
    >>> notes = str(files("colmed") / "data" / "sample_medical")
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     cfg = GenerateConfig(notes=notes, out=f"{tmp}/triplets", progress=False)
    ...     manifest = TripletPipeline(cfg).run()
    >>> manifest["counts"]["records"]["total"]
    8
"""

if __name__ != "colmed.data_gen":  # the folder installs as colmed.data_gen; a bare `import data_gen` would shadow other packages
    raise ImportError("import colmed.data_gen, not data_gen: colmed installs one top-level package")

