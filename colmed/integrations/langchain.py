"""A LangChain retriever over colmed indexes (``pip install colmed[langchain]``).

Loads index folders in-process, or talks to a running ``colmed serve``; several indexes are fused with
reciprocal rank fusion (hybrid BM25 + dense). Each hit is a LangChain ``Document`` whose
``page_content`` is the document text (title, then body) and whose ``metadata`` holds ``id``, ``title``,
``score`` and ``rank``. Indexes store ids and titles only: the text comes from ``corpus`` or from the
dataset folder recorded when the index was built; when neither is readable ``page_content`` is the title.

Example (the bundled sample, BM25 in memory):
    >>> import colmed.api as colmed
    >>> ds = colmed.load_dataset(colmed.SAMPLE_DATASET)
    >>> retriever = ColmedRetriever(index=colmed.build_index("bm25", ds), corpus=ds, k=2)
    >>> docs = retriever.invoke("dry cough on lisinopril")
    >>> docs[0].metadata["id"], docs[0].page_content[:19]
    ('htn-02', 'ACE inhibitor cough')

A server and a hybrid retriever::

    ColmedRetriever(url="http://127.0.0.1:8000", index=["bm25", "dense"], k=10)     # fused by the server
    ColmedRetriever(index=["runs/nfcorpus-bm25", "runs/nfcorpus-minilm"], k=10)     # fused in-process
"""

from __future__ import annotations

from typing import Any, Literal

from langchain_core.callbacks import CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field, PrivateAttr

from colmed.integrations.searcher import ColmedSearcher


def hit_to_document(hit: dict[str, Any]) -> Document:
    text = hit.get("text") or hit.get("title") or hit["id"]
    return Document(page_content=text, id=hit["id"],
                    metadata={"id": hit["id"], "title": hit.get("title", ""), "score": hit["score"],
                              "rank": hit["rank"]})


class ColmedRetriever(BaseRetriever):
    """LangChain ``BaseRetriever`` over colmed indexes, in-process (``index=``) or served (``url=``)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    index: Any = Field(None, description="Index folder(s) or retriever(s) in-process; served index name(s) with url.")
    url: str | None = Field(None, description="Base URL of a running `colmed serve`.")
    k: int = Field(10, ge=1, description="Documents returned per query.")
    fuse: Literal["rrf"] | None = Field("rrf", description="How several indexes are fused.")
    corpus: Any = Field(None, description="Documents' text when the indexed dataset is not on disk.")
    timeout: float = 60.0
    _searcher: ColmedSearcher = PrivateAttr()

    def model_post_init(self, __context: Any) -> None:
        self._searcher = ColmedSearcher(index=self.index, url=self.url, fuse=self.fuse, corpus=self.corpus,
                                        timeout=self.timeout)

    def _get_relevant_documents(self, query: str, *, run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        return [hit_to_document(hit) for hit in self._searcher.search(query, k=self.k)]
