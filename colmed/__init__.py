"""colmed: late-interaction and dense retrieval for medical and clinical search.

Packages: ``data_gen`` (synthetic triplets), ``bi_encoder`` (dense models), ``colmed.colbert``
(ColBERTv2 via colbert-ai), ``indexes`` (BM25, faiss, PLAID on disk), ``eval`` (ranx evaluation).
The CLI is ``colmed`` (see :mod:`colmed.cli`).
"""

__version__ = "0.1.0"
