"""What both framework adapters share: one query in, ranked hits (id, title, score, text) out, from
indexes loaded in-process (:class:`colmed.serve.IndexPool`) or from a running ``colmed serve`` (httpx).

Example (in-process, the bundled sample):
    >>> import colmed.api as colmed
    >>> ds = colmed.load_dataset(colmed.SAMPLE_DATASET)
    >>> searcher = ColmedSearcher(index=colmed.build_index("bm25", ds), corpus=ds)
    >>> hit = searcher.search("ACE inhibitor dry cough", k=1)[0]
    >>> hit["id"], hit["text"][:19]
    ('htn-02', 'ACE inhibitor cough')
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from colmed.core.errors import InputError


def as_named_indexes(index) -> dict[str, Any]:
    """One index folder or retriever, a list of them, or a ``{name: folder or retriever}`` map, named."""
    if isinstance(index, Mapping):
        return dict(index)
    items = list(index) if isinstance(index, (list, tuple)) else [index]
    named: dict[str, Any] = {}
    for i, item in enumerate(items):
        name = Path(item).name if isinstance(item, (str, Path)) else f"index{i}"
        named[name if name not in named else f"{name}-{i}"] = item
    return named


class ColmedSearcher:
    """Search colmed indexes in-process (``index=``) or through a ``colmed serve`` at ``url``.

    In-process, ``index`` is an index folder, a retriever, a list of them or a ``{name: ...}`` map; several
    are fused with ``fuse`` (RRF). Remotely, ``index`` is the served name (or a list of names to fuse);
    ``None`` lets the server decide (its only index, or its ``--fuse``). Hits carry the document text
    when it is known: from ``corpus`` (in-process), or else from the dataset the index was built from.
    """

    def __init__(self, index=None, url: str | None = None, fuse: str | None = "rrf", corpus=None,
                 timeout: float = 60.0, **load_options):
        if index is None and url is None:
            raise InputError("give the indexes to load (index=...) or a colmed serve url (url=...)", field="index")
        self.url, self.fuse, self.timeout = url, fuse, timeout
        self.pool = None
        self._client = None
        if url is None:
            from colmed.serve import IndexPool

            self.pool = IndexPool(as_named_indexes(index), fuse=fuse, corpus=corpus, **load_options)
            self.names = list(self.pool.indexes)
        else:
            if corpus is not None:
                raise InputError("corpus= applies to indexes loaded in-process; a server reads its own",
                                 field="corpus")
            if index is not None and not all(isinstance(n, str) for n in (index if isinstance(index, list) else [index])):
                raise InputError("with url=, index names a served index (or a list of names)", field="index")
            self.names = index if isinstance(index, list) else ([index] if index is not None else [])

    def search(self, query: str, k: int = 10) -> list[dict[str, Any]]:
        """Ranked hits ``{"id", "title", "score", "rank", "text"}`` for one query."""
        if self.pool is not None:
            names = self.names if len(self.names) > 1 else None
            _, results = self.pool.search([query], k=k, indexes=names, fuse=self.fuse if names else None,
                                          include_text=True)
            return results[0]
        return self._remote(query, k)

    def _remote(self, query: str, k: int) -> list[dict[str, Any]]:
        import httpx

        if self._client is None:
            self._client = httpx.Client(base_url=self.url, timeout=self.timeout)
        body: dict[str, Any] = {"query": query, "k": k, "include_text": True}
        if len(self.names) == 1:
            body["index"] = self.names[0]
        elif self.names:
            body["indexes"], body["fuse"] = self.names, self.fuse or "rrf"
        try:
            response = self._client.post("/search", json=body)
        except httpx.HTTPError as e:
            raise InputError(f"colmed serve at {self.url} did not answer: {e}", field="url") from None
        if response.status_code != 200:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise InputError(f"colmed serve answered {response.status_code}: {detail}", field="url")
        return response.json()["results"][0]["hits"]

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
