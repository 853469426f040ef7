"""colmed.indexes: on-disk indexes (BM25, faiss, PLAID) behind one :class:`~colmed.indexes.base.Retriever` API.

- :func:`~colmed.indexes.base.build_index` builds any registered kind into a directory atomically.
- :func:`~colmed.indexes.base.load_index` opens any index directory as a retriever.
"""

if __name__ != "colmed.indexes":  # the folder installs as colmed.indexes; a bare `import indexes` would shadow other packages
    raise ImportError("import colmed.indexes, not indexes: colmed installs one top-level package")

