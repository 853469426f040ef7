"""colmed: late-interaction and dense retrieval for medical and clinical search.

One namespace: ``colmed.core`` (errors, atomic I/O, provenance) → ``colmed.data`` (datasets, registry,
runs, triplets) → ``colmed.indexes`` (BM25, faiss, PLAID), ``colmed.bi_encoder`` / ``colmed.colbert``
(models and training), ``colmed.data_gen`` (synthetic triplets) → ``colmed.eval`` (ranx evaluation) →
``colmed.benchmark`` / ``colmed.study`` → the ``colmed`` CLI. The functions below are the public API
(see :mod:`colmed.api`); each CLI command is one of them.
"""

__version__ = "0.1.0"

from colmed.api import (  # noqa: E402  (the version must be importable without the API's imports)
    SAMPLE_DATASET,
    benchmark,
    build_index,
    compare,
    evaluate,
    fuse,
    generate,
    load_dataset,
    load_index,
    search,
    train_colbert,
    train_dense,
)

__all__ = ["SAMPLE_DATASET", "benchmark", "build_index", "compare", "evaluate", "fuse", "generate",
           "load_dataset", "load_index", "search", "train_colbert", "train_dense", "__version__"]
