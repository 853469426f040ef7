"""colmed.data: what retrieval, training and evaluation exchange (above :mod:`colmed.core`, below everything else).

- :mod:`colmed.data.datasets`: BEIR folders and hub datasets as :class:`~colmed.data.datasets.RetrievalDataset`.
- :mod:`colmed.data.registry`: the benchmark registry and each dataset's evaluation protocol.
- :mod:`colmed.data.runs`: TREC runs (read, write, self-hit exclusion, top-k).
- :mod:`colmed.data.triplets`: the canonical training record both trainer families read.

``sample_medical/`` is the bundled smoke sample (a BEIR folder) the demo and doctests use.
"""
