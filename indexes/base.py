"""The shared retriever interface and the on-disk index directory format.

Every index directory looks like this, whatever the family::

    <dir>/manifest.json   IndexManifest: kind, model, dims, num_docs, settings, versions, created ...
    <dir>/docs.jsonl      one {"id", "title"} per internal position (position = row/pid)
    <dir>/...             kind-specific files (bm25s arrays, faiss index, PLAID index ...)

Kinds are registered by name in :data:`BUILDERS` / :data:`LOADERS` as ``"module:function"`` strings so
that a family's heavy imports (torch, faiss, colbert) happen only when it is used.

Example:
    >>> from colmed.data.datasets import Document, RetrievalDataset
    >>> corpus = {"d1": Document("d1", "aspirin lowers fever"), "d2": Document("d2", "insulin for diabetes")}
    >>> ds = RetrievalDataset("toy", corpus, {}, {})
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "bm25"
    >>> _ = build_index("bm25", ds, out)
    >>> retriever = load_index(out)
    >>> list(retriever.search({"q": "fever medicine"}, k=1)["q"])
    ['d1']
"""

from __future__ import annotations

import datetime as _dt
import importlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Protocol, runtime_checkable

from colmed.core.errors import InputError
from colmed.core.io import atomic_directory, write_json, write_jsonl, read_jsonl
from colmed.core.provenance import package_versions

FORMAT_VERSION = 1

Results = dict[str, dict[str, float]]


@runtime_checkable
class Retriever(Protocol):
    """Anything that maps queries to scored documents. BM25, dense and ColBERT all implement it."""

    def search(self, queries: Mapping[str, str], k: int = 100) -> Results:
        """Return ``{query_id: {doc_id: score}}`` with at most ``k`` docs per query, higher is better."""
        ...


@dataclass
class IndexManifest:
    """What an index is and how it was built; stored as ``manifest.json``."""

    kind: str
    model: str | None = None
    dims: int | None = None
    num_docs: int = 0
    dataset: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    query_prompt: str | None = None
    document_prompt: str | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    format_version: int = FORMAT_VERSION

    @classmethod
    def read(cls, index_dir: str | Path) -> "IndexManifest":
        path = Path(index_dir) / "manifest.json"
        if not path.is_file():
            raise InputError("not an index directory (no manifest.json)", path=index_dir)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise InputError(f"malformed JSON ({e.msg})", path=path, line=e.lineno) from None
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def write(self, index_dir: str | Path) -> None:
        if not self.created:
            self.created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        if not self.versions:
            self.versions = package_versions()
        write_json(Path(index_dir) / "manifest.json", asdict(self))


def write_docs(index_dir: str | Path, doc_ids: list[str], titles: list[str] | None = None) -> None:
    """Write the position -> (string id, title) map every index carries."""
    titles = titles or [""] * len(doc_ids)
    write_jsonl(Path(index_dir) / "docs.jsonl", ({"id": d, "title": t} for d, t in zip(doc_ids, titles)))


def read_docs(index_dir: str | Path) -> tuple[list[str], list[str]]:
    """Read ``docs.jsonl``: (doc ids by position, titles by position)."""
    ids, titles = [], []
    for _, rec in read_jsonl(Path(index_dir) / "docs.jsonl", required=("id",)):
        ids.append(str(rec["id"]))
        titles.append(rec.get("title") or "")
    return ids, titles


# kind -> "module:function". Builders take (dataset, out_dir, **options) and write into out_dir;
# loaders take (index_dir, manifest, **options) and return a Retriever.
BUILDERS: dict[str, str] = {
    "bm25": "colmed.indexes.bm25:build_bm25_index",
    "dense": "colmed.indexes.dense:build_dense_index",
    "colbert": "colmed.indexes.plaid:build_plaid_index",
}
LOADERS: dict[str, str] = {
    "bm25": "colmed.indexes.bm25:BM25Index.load",
    "dense": "colmed.indexes.dense:DenseIndex.load",
    "colbert": "colmed.indexes.plaid:PlaidIndex.load",
}


def _resolve(target: str):
    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def build_index(kind: str, dataset, out: str | Path, overwrite: bool = False, **options) -> IndexManifest:
    """Build an index of ``kind`` over ``dataset.corpus`` into ``out`` atomically and return its manifest.

    ``out`` is refused if it exists and ``overwrite`` is false; on any failure nothing is left at ``out``.
    """
    if kind not in BUILDERS:
        raise InputError(f"unknown retriever kind {kind!r}; choose from {', '.join(BUILDERS)}")
    if not dataset.corpus:
        raise InputError("empty corpus: nothing to index", path=dataset.source or dataset.name)
    builder = _resolve(BUILDERS[kind])
    with atomic_directory(out, overwrite=overwrite) as tmp:
        manifest: IndexManifest = builder(dataset, tmp, **options)
        manifest.dataset = {"name": dataset.name, "source": dataset.source, "fingerprint": dataset.fingerprint,
                            **manifest.dataset}
        manifest.num_docs = manifest.num_docs or len(dataset.corpus)
        manifest.write(tmp)
    return manifest


def load_index(index_dir: str | Path, **options) -> Retriever:
    """Open any index directory written by :func:`build_index` as a :class:`Retriever`."""
    manifest = IndexManifest.read(index_dir)
    if manifest.kind not in LOADERS:
        raise InputError(f"unknown index kind {manifest.kind!r}", path=Path(index_dir) / "manifest.json",
                         field="kind")
    return _resolve(LOADERS[manifest.kind])(index_dir, manifest, **options)
