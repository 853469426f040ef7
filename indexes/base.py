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
from colmed.core.io import atomic_directory, resolve_model_arg, sha256_file, write_json, write_jsonl, read_jsonl
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
    # relative path -> {"size", "sha256"} of every other file in the directory, checked when it loads
    files: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def read(cls, index_dir: str | Path) -> "IndexManifest":
        """Read and type-check ``manifest.json``; a damaged one is an :class:`InputError` naming the field."""
        path = Path(index_dir) / "manifest.json"
        if not path.is_file():
            raise InputError("not an index directory (no manifest.json)", path=index_dir)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as e:
            raise InputError(f"not valid UTF-8 ({e.reason})", path=path) from None
        except json.JSONDecodeError as e:
            raise InputError(f"malformed JSON ({e.msg})", path=path, line=e.lineno) from None
        if not isinstance(data, dict):
            raise InputError(f"expected a JSON object, found a {type(data).__name__}", path=path)
        if not isinstance(data.get("kind"), str) or not data["kind"]:
            raise InputError("missing or not a string", path=path, field="kind")
        for name, types in _MANIFEST_TYPES.items():
            if name in data and not _is_instance(data[name], types):
                raise InputError(f"expected {_type_names(types)}, found {type(data[name]).__name__}", path=path,
                                 field=name)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def write(self, index_dir: str | Path) -> None:
        if not self.created:
            self.created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        if not self.versions:
            self.versions = package_versions()
        write_json(Path(index_dir) / "manifest.json", asdict(self))


_MANIFEST_TYPES: dict[str, tuple[type, ...]] = {
    "model": (str, type(None)), "dims": (int, type(None)), "num_docs": (int,), "dataset": (dict,),
    "settings": (dict,), "query_prompt": (str, type(None)), "document_prompt": (str, type(None)),
    "stats": (dict,), "versions": (dict,), "created": (str,), "format_version": (int,), "files": (dict,),
}
# Index settings whose type the loaders rely on, by kind ("module:Class" of a settings dataclass, or a table).
SETTINGS_TYPES: dict[str, str | dict[str, tuple[type, ...]]] = {
    "bm25": "colmed.indexes.bm25:BM25Settings",
    "dense": "colmed.indexes.dense:FaissSettings",
    "colbert": {"nbits": (int,), "doc_maxlen": (int,), "query_maxlen": (int, type(None))},
}
_ANNOTATION_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "None": (type(None),)}


def _is_instance(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in types:  # JSON true is not a number here
        return False
    return isinstance(value, types)


def _type_names(types: tuple[type, ...]) -> str:
    names = {"NoneType": "null", "dict": "an object", "str": "a string", "int": "an integer", "float": "a number",
             "bool": "true/false"}
    if int in types and float in types:
        types = tuple(t for t in types if t is not int)
    return " or ".join(names.get(t.__name__, t.__name__) for t in types)


def _settings_types(kind: str) -> dict[str, tuple[type, ...]]:
    spec = SETTINGS_TYPES.get(kind)
    if spec is None or isinstance(spec, dict):
        return spec or {}
    fields = _resolve(spec).__dataclass_fields__
    out: dict[str, tuple[type, ...]] = {}
    for name, f in fields.items():
        annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        types: tuple[type, ...] = ()
        for part in annotation.split("|"):
            types += _ANNOTATION_TYPES.get(part.strip(), ())
        if types:
            out[name] = types
    return out


def check_settings(manifest: "IndexManifest", index_dir: str | Path) -> None:
    """Refuse a manifest whose settings have the wrong type for its kind, naming the setting."""
    for name, types in _settings_types(manifest.kind).items():
        if name in manifest.settings and not _is_instance(manifest.settings[name], types):
            raise InputError(f"expected {_type_names(types)}, found {manifest.settings[name]!r}",
                             path=Path(index_dir) / "manifest.json", field=f"settings.{name}")


def file_records(index_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Size and sha256 of every file under ``index_dir`` but ``manifest.json``, by relative path."""
    root = Path(index_dir)
    return {p.relative_to(root).as_posix(): {"size": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(root.rglob("*")) if p.is_file() and p.relative_to(root).as_posix() != "manifest.json"}


def verify_index(index_dir: str | Path, manifest: "IndexManifest | None" = None, hashes: bool = False) -> None:
    """Check the files ``manifest.files`` records: present, of their size, and (``hashes``) their sha256.

    The first damaged file is an :class:`InputError` naming it. An index written before sizes were recorded
    is checked only for ``docs.jsonl`` holding ``num_docs`` documents.
    """
    root = Path(index_dir)
    manifest = manifest or IndexManifest.read(root)
    if not manifest.files:
        docs = root / "docs.jsonl"
        if docs.is_file() and manifest.num_docs:
            with open(docs, "rb") as f:
                n = sum(1 for line in f if line.strip())
            if n != manifest.num_docs:
                raise InputError(f"holds {n} documents, the manifest says {manifest.num_docs}: the index is "
                                 "damaged; rebuild it", path=docs)
        return
    for rel, record in manifest.files.items():
        path = root / rel
        if not path.is_file():
            raise InputError("missing: the index is damaged; rebuild it", path=path)
        size = path.stat().st_size
        if not isinstance(record, dict) or size != record.get("size"):
            raise InputError(f"is {size} bytes, the manifest says {record.get('size') if isinstance(record, dict) else record}: "
                             "the index is damaged; rebuild it", path=path)
        if hashes and sha256_file(path) != record.get("sha256"):
            raise InputError("sha256 differs from the manifest's: the index is damaged; rebuild it", path=path)


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
# kind -> "module:function" building in memory: (dataset, **options) -> (Retriever, IndexManifest).
# PLAID has none: colbert-ai's index exists only as files.
IN_MEMORY_BUILDERS: dict[str, str] = {
    "bm25": "colmed.indexes.bm25:build_bm25_in_memory",
    "dense": "colmed.indexes.dense:build_dense_in_memory",
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
    if options.get("model"):
        # A local model is stored absolute (the index then loads from any folder); a path that does not
        # exist is refused here rather than looked up on the hub.
        options["model"] = resolve_model_arg(options["model"])
    local_source = dataset.source if dataset.source and Path(dataset.source).exists() else None
    local_model = options.get("model") if options.get("model") and Path(options["model"]).exists() else None
    builder = _resolve(BUILDERS[kind])
    with atomic_directory(out, overwrite=overwrite, kind="index", inputs=(local_source, local_model)) as tmp:
        manifest: IndexManifest = builder(dataset, tmp, **options)
        manifest.dataset = {"name": dataset.name, "source": dataset.source, "fingerprint": dataset.fingerprint,
                            **manifest.dataset}
        manifest.num_docs = manifest.num_docs or len(dataset.corpus)
        manifest.files = file_records(tmp)
        manifest.write(tmp)
    return manifest


def load_index(index_dir: str | Path, verify: bool = False, **options) -> Retriever:
    """Open any index directory written by :func:`build_index` as a :class:`Retriever`.

    Every recorded file's size is checked first (and its sha256 with ``verify``), so a damaged index is
    one line naming the file rather than a library traceback.
    """
    manifest = IndexManifest.read(index_dir)
    if manifest.kind not in LOADERS:
        raise InputError(f"unknown index kind {manifest.kind!r}", path=Path(index_dir) / "manifest.json",
                         field="kind")
    check_settings(manifest, index_dir)
    verify_index(index_dir, manifest, hashes=verify)
    retriever = _resolve(LOADERS[manifest.kind])(index_dir, manifest, **options)
    retriever.manifest = manifest
    return retriever
