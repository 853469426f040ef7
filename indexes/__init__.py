"""colmed.indexes: on-disk indexes (BM25, faiss, PLAID) behind one :class:`~indexes.base.Retriever` API.

- :func:`~indexes.base.build_index` builds any registered kind into a directory atomically.
- :func:`~indexes.base.load_index` opens any index directory as a retriever.
"""
