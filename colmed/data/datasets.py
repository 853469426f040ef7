"""One dataset type for every retrieval benchmark, loaded from a local BEIR folder or the hub.

A BEIR folder holds ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl`` (``_id``, ``text``)
and ``qrels/<split>.tsv`` (header ``query-id corpus-id score``). All ids are strings.

Example:
    >>> from importlib.resources import files
    >>> from colmed.data.datasets import load_dataset
    >>> ds = load_dataset(str(files("colmed") / "data" / "sample_medical"), split="test")  # the bundled sample
    >>> len(ds.corpus), len(ds.queries)
    (40, 18)

``load_dataset("../shared/beir/nfcorpus")`` gives (3633, 323) the same way.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from colmed.core.errors import InputError
from colmed.core.io import read_jsonl, read_text_lines, sha256_file

logger = logging.getLogger(__name__)

# BEIR itself ships ArguAna with 5 qrels naming absent docs; more than this fraction is a broken file.
MAX_UNKNOWN_QRELS_FRACTION = 0.01


def full_text(title: str, text: str) -> str:
    """What retrievers index and trainers see (the BEIR convention): the title, then the text."""
    return f"{title} {text}".strip() if title else text


@dataclass(frozen=True)
class Document:
    """A corpus document. ``full_text`` is what retrievers index (BEIR convention: title, then text)."""

    doc_id: str
    text: str
    title: str = ""

    @property
    def full_text(self) -> str:
        return full_text(self.title, self.text)


@dataclass
class RetrievalDataset:
    """A corpus, the queries of one split, and their graded relevance judgements.

    ``queries`` holds only the queries that have judgements in ``qrels`` (the BEIR convention), unless
    the split has no qrels file. ``fingerprint`` identifies the content (file hashes or hub revision).
    """

    name: str
    corpus: dict[str, Document]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    split: str = "test"
    source: str = ""
    fingerprint: str = ""
    qrels_hash: str = ""
    warnings: list[str] = field(default_factory=list)

    def doc_ids(self) -> list[str]:
        return list(self.corpus)

    def doc_texts(self) -> list[str]:
        return [d.full_text for d in self.corpus.values()]

    def subset(self, max_queries: int | None = None, max_docs: int | None = None) -> "RetrievalDataset":
        """A smaller copy: the first ``max_queries`` queries and a corpus that keeps their relevant docs."""
        qids = list(self.queries)[:max_queries] if max_queries else list(self.queries)
        queries = {q: self.queries[q] for q in qids}
        qrels = {q: dict(self.qrels.get(q, {})) for q in qids if q in self.qrels}
        if max_docs:
            keep = {d for rels in qrels.values() for d in rels if d in self.corpus}
            for d in self.corpus:
                if len(keep) >= max_docs:
                    break
                keep.add(d)
            corpus = {d: doc for d, doc in self.corpus.items() if d in keep}
        else:
            corpus = dict(self.corpus)
        return RetrievalDataset(self.name, corpus, queries, qrels, self.split, self.source,
                                self.fingerprint + f"/subset:{max_queries}:{max_docs}", self.qrels_hash,
                                list(self.warnings))



def queries_hash(queries: Mapping[str, str]) -> str:
    """Content hash of a query set (ids and texts), independent of order."""
    import json

    return hashlib.sha256(json.dumps(sorted(queries.items())).encode()).hexdigest()

def read_corpus(path: str | Path) -> dict[str, Document]:
    """Read a BEIR ``corpus.jsonl``; duplicate or empty ids and an empty corpus are errors."""
    corpus: dict[str, Document] = {}
    for lineno, rec in read_jsonl(path, required=("_id",)):
        doc_id = _record_id(rec, corpus, "document", path, lineno)
        text = rec.get("text")
        if text is None:
            raise InputError("missing", path=path, line=lineno, field="text")
        if not isinstance(text, str):
            raise InputError("expected a string", path=path, line=lineno, field="text")
        title = rec.get("title") or ""
        corpus[doc_id] = Document(doc_id, text, str(title))
    if not corpus:
        raise InputError("empty corpus: no documents", path=path)
    return corpus


def read_queries(path: str | Path) -> dict[str, str]:
    """Read a BEIR ``queries.jsonl`` (``_id``, ``text``); duplicate ids are errors."""
    queries: dict[str, str] = {}
    for lineno, rec in read_jsonl(path, required=("_id", "text")):
        qid = _record_id(rec, queries, "query", path, lineno)
        if not isinstance(rec["text"], str):
            raise InputError("expected a string", path=path, line=lineno, field="text")
        queries[qid] = rec["text"]
    if not queries:
        raise InputError("no queries: the file is empty", path=path)
    return queries


def _record_id(rec: dict, seen: Mapping[str, object], kind: str, path, lineno: int) -> str:
    """The ``_id`` of a corpus or queries line; empty, whitespace-holding or repeated ids are refused."""
    item_id = str(rec["_id"]).strip()
    if not item_id:
        raise InputError("empty id", path=path, line=lineno, field="_id")
    _check_id(item_id, path, lineno)
    if item_id in seen:
        raise InputError(f"duplicate {kind} id {item_id!r}", path=path, line=lineno, field="_id")
    return item_id


def _check_id(item_id: str, path, lineno: int) -> None:
    # A TREC run is whitespace-separated: an id with a space would index fine and then make a run that
    # no reader (compare, ranx, trec_eval) can read back.
    if any(c.isspace() for c in item_id):
        raise InputError(f"id {item_id!r} contains whitespace, which TREC runs cannot hold", path=path,
                         line=lineno, field="_id")


def read_qrels(path: str | Path) -> dict[str, dict[str, int]]:
    """Read a BEIR qrels TSV (header ``query-id corpus-id score``; CRLF tolerated)."""
    path = Path(path)
    qrels: dict[str, dict[str, int]] = {}
    for lineno, line in read_text_lines(path):
        line = line.rstrip("\r\n")
        row = [c.strip() for c in line.split("\t")]
        if not any(row):
            continue
        if lineno == 1 and row[0].lower() in ("query-id", "query_id", "qid"):
            continue
        if len(row) == 4:  # TREC qrels: qid iter docid rel
            row = [row[0], row[2], row[3]]
        if len(row) != 3:
            raise InputError(f"expected 3 tab-separated columns, got {len(row)}", path=path, line=lineno)
        qid, did, score = row
        try:
            value = float(score)
        except ValueError:
            raise InputError(f"not a number: {score!r}", path=path, line=lineno, field="score") from None
        if not math.isfinite(value) or value != int(value):
            raise InputError(f"not a whole-number relevance grade: {score!r}", path=path, line=lineno,
                             field="score")
        rel = int(value)
        qrels.setdefault(qid, {})[did] = rel
    if not qrels:
        raise InputError("no relevance judgements", path=path)
    return qrels


def _check_qrels(qrels, queries, corpus, path: Path, warnings: list[str]) -> None:
    n = sum(len(r) for r in qrels.values())
    bad_q = [q for q in qrels if q not in queries]
    if bad_q:
        raise InputError(f"{len(bad_q)} query ids not in queries.jsonl (first: {bad_q[0]!r})",
                         path=path, field="query-id")
    if corpus is None:
        return
    bad_d = [(q, d) for q, rels in qrels.items() for d in rels if d not in corpus]
    if bad_d:
        msg = f"{len(bad_d)} of {n} judgements name documents absent from the corpus (first: {bad_d[0][1]!r})"
        if len(bad_d) > MAX_UNKNOWN_QRELS_FRACTION * n:
            raise InputError(msg, path=path, field="corpus-id")
        # Kept, as BEIR keeps them: dropping would change the ideal DCG and break comparability.
        warnings.append(msg)
        logger.warning("%s: %s", path, msg)


def load_beir_folder(path: str | Path, split: str = "test", name: str | None = None,
                     require_corpus: bool = True) -> RetrievalDataset:
    """Load a local BEIR folder. See the module docstring for the layout."""
    path = Path(path)
    if not path.is_dir():
        raise InputError("dataset folder not found", path=path)
    corpus_path, queries_path = path / "corpus.jsonl", path / "queries.jsonl"
    qrels_path = path / "qrels" / f"{split}.tsv"
    corpus = None
    if corpus_path.is_file():
        corpus = read_corpus(corpus_path)
    elif require_corpus:
        raise InputError("no corpus.jsonl: this folder has queries and qrels only", path=path)
    # A corpus-only folder is enough to build an index; evaluation then needs queries and qrels.
    queries = read_queries(queries_path) if queries_path.is_file() or corpus is None else {}
    hashes = {p.name: sha256_file(p) for p in (corpus_path, queries_path) if p.is_file()}
    warnings: list[str] = []
    qrels: dict[str, dict[str, int]] = {}
    qrels_hash = ""
    if qrels_path.is_file():
        qrels = read_qrels(qrels_path)
        qrels_hash = sha256_file(qrels_path)
        hashes[f"qrels/{split}.tsv"] = qrels_hash
        _check_qrels(qrels, queries, corpus, qrels_path, warnings)
        queries = {q: t for q, t in queries.items() if q in qrels}
    fingerprint = hashlib.sha256("".join(f"{k}={v};" for k, v in sorted(hashes.items())).encode()).hexdigest()
    return RetrievalDataset(name or path.name, corpus or {}, queries, qrels, split, str(path.resolve()),
                            fingerprint, qrels_hash, warnings)


def load_hub_dataset(name: str, split: str = "test", revision: str | None = None) -> RetrievalDataset:
    """Load a retrieval dataset from the Hugging Face hub with ``datasets``.

    Understands the BEIR layout (``BeIR/<x>`` with configs ``corpus``/``queries`` plus ``BeIR/<x>-qrels``)
    and the MTEB layout (one repo with configs ``corpus``, ``queries`` and ``default`` qrels).
    """
    import datasets  # deferred: heavy

    def rows(repo, config, split_name):
        return datasets.load_dataset(repo, config, split=split_name, revision=revision)

    try:
        if name.startswith("BeIR/"):
            corpus_rows, query_rows = rows(name, "corpus", "corpus"), rows(name, "queries", "queries")
            qrel_rows = rows(f"{name}-qrels", None, split)
        else:
            corpus_rows, query_rows = rows(name, "corpus", "corpus"), rows(name, "queries", "queries")
            qrel_rows = rows(name, "default", split)
    except Exception as e:  # offline, unknown repo, missing split: one line for the user
        raise InputError(f"cannot load from the hub ({type(e).__name__}: {str(e).splitlines()[0][:200]})",
                         path=name) from None
    corpus = {str(r["_id"]): Document(str(r["_id"]), r.get("text") or "", r.get("title") or "")
              for r in corpus_rows}
    queries = {str(r["_id"]): r["text"] for r in query_rows}
    for row, item_id in enumerate(list(corpus) + list(queries), start=1):
        _check_id(item_id, name, row)
    qrels: dict[str, dict[str, int]] = {}
    for r in qrel_rows:
        qrels.setdefault(str(r["query-id"]), {})[str(r["corpus-id"])] = int(r["score"])
    warnings: list[str] = []
    _check_qrels(qrels, queries, corpus, Path(name), warnings)
    queries = {q: t for q, t in queries.items() if q in qrels}
    fp_src = f"{name}@{revision or getattr(corpus_rows, '_fingerprint', '')}"
    qhash = hashlib.sha256(repr(sorted((q, sorted(r.items())) for q, r in qrels.items())).encode()).hexdigest()
    return RetrievalDataset(name.split("/")[-1], corpus, queries, qrels, split, name,
                            hashlib.sha256(fp_src.encode()).hexdigest(), qhash, warnings)


def load_dataset(name_or_path: str | Path, split: str = "test", require_corpus: bool = True) -> RetrievalDataset:
    """Load from a local BEIR folder when ``name_or_path`` exists on disk, else from the hub.

    A registered short name (``nfcorpus``, ``arguana`` ...) is resolved through :mod:`colmed.data.registry`.
    """
    p = Path(name_or_path)
    if p.exists():
        from colmed.data.registry import canonical_name
        return load_beir_folder(p, split=split, name=canonical_name(p.name), require_corpus=require_corpus)
    from colmed.data.registry import BENCHMARKS
    spec = BENCHMARKS.get(str(name_or_path))
    if spec is None:
        from colmed.core.io import looks_like_path

        if looks_like_path(str(name_or_path)):  # a mistyped folder, not a hub name to look up
            raise InputError("no such file or folder", path=name_or_path)
    hub = spec.hub_name if spec else str(name_or_path)
    if "/" not in hub:
        raise InputError("not a local folder and not a hub dataset name", path=name_or_path)
    ds = load_hub_dataset(hub, split=split)
    if spec:
        ds.name = spec.name
    return ds
