"""A LlamaIndex retriever over colmed indexes (``pip install colmed[llamaindex]``).

Loads index folders in-process, or talks to a running ``colmed serve``; several indexes are fused with
reciprocal rank fusion (hybrid BM25 + dense). Each hit is a ``NodeWithScore`` around a ``TextNode`` whose
``id_`` is the document id, whose text is the document text (title, then body; the title alone when the
indexed corpus is not readable) and whose ``metadata`` holds ``id``, ``title``, ``score`` and ``rank``.

Example (the bundled sample, BM25 in memory):
    >>> import colmed.api as colmed
    >>> ds = colmed.load_dataset(colmed.SAMPLE_DATASET)
    >>> retriever = ColmedLlamaRetriever(index=colmed.build_index("bm25", ds), corpus=ds, k=2)
    >>> nodes = retriever.retrieve("dry cough on lisinopril")
    >>> nodes[0].node.node_id, nodes[0].node.metadata["title"]
    ('htn-02', 'ACE inhibitor cough')
"""

from __future__ import annotations

from typing import Any

from llama_index.core.retrievers import BaseRetriever
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

from colmed.integrations.searcher import ColmedSearcher


def hit_to_node(hit: dict[str, Any]) -> NodeWithScore:
    text = hit.get("text") or hit.get("title") or hit["id"]
    metadata = {"id": hit["id"], "title": hit.get("title", ""), "score": hit["score"], "rank": hit["rank"]}
    # Scores and ranks are per-query facts: keep them out of the text an LLM or embedder is given.
    node = TextNode(id_=hit["id"], text=text, metadata=metadata,
                    excluded_llm_metadata_keys=["score", "rank"], excluded_embed_metadata_keys=["score", "rank"])
    return NodeWithScore(node=node, score=hit["score"])


class ColmedLlamaRetriever(BaseRetriever):
    """LlamaIndex ``BaseRetriever`` over colmed indexes, in-process (``index=``) or served (``url=``).

    ``index``: index folder(s) or retriever(s) to load (several are fused with ``fuse``), or with ``url``
    the served index name(s). ``corpus`` supplies document texts when the indexed dataset is not on disk.
    """

    def __init__(self, index=None, url: str | None = None, k: int = 10, fuse: str | None = "rrf", corpus=None,
                 timeout: float = 60.0, **kwargs):
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        self.k = k
        self._searcher = ColmedSearcher(index=index, url=url, fuse=fuse, corpus=corpus, timeout=timeout)
        super().__init__(**kwargs)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return [hit_to_node(hit) for hit in self._searcher.search(query_bundle.query_str, k=self.k)]
