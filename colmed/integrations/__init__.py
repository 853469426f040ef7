"""colmed indexes inside RAG frameworks: a LangChain retriever (``colmed[langchain]``) and a LlamaIndex
retriever (``colmed[llamaindex]``). Both search indexes loaded in-process or a running ``colmed serve``,
and fuse several indexes with reciprocal rank fusion (hybrid BM25 + dense)."""
