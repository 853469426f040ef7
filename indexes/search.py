"""Run a query set through any retriever and store a TREC run with its protocol sidecar.

The sidecar (``<run>.json``) records what produced the run: the index manifest (kind, model, prompts,
settings), the query source, split and hash, and ``k``. :mod:`eval` uses it to refuse comparing runs
made under different protocols.

Example:
    >>> from colmed.indexes.bm25 import BM25Index
    >>> import tempfile, pathlib
    >>> idx = BM25Index.build(["d1", "d2"], ["aspirin fever", "insulin diabetes"], show_progress=False)
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "run.trec"
    >>> info = search_queries(idx, {"q1": "fever"}, k=1)
    >>> info["q1"]
    {'d1': ...}
"""

from __future__ import annotations

import numbers
import time
from pathlib import Path
from typing import Mapping

from colmed.core.io import write_json
from colmed.data.runs import write_trec
from colmed.indexes.base import IndexManifest, Retriever


def search_queries(retriever: Retriever, queries: Mapping[str, str], k: int = 100, batch_size: int = 64,
                   progress: bool = False) -> dict[str, dict[str, float]]:
    """Search ``queries`` in batches (with an optional progress bar) and merge the results."""
    from tqdm.auto import tqdm

    check_search_args(queries, k, batch_size)
    qids = list(queries)
    run: dict[str, dict[str, float]] = {}
    with tqdm(total=len(qids), desc="searching", unit="q", disable=not progress) as bar:
        for i in range(0, len(qids), batch_size):
            chunk = {q: queries[q] for q in qids[i:i + batch_size]}
            run.update(retriever.search(chunk, k=k))
            bar.update(len(chunk))
    return run


def check_search_args(queries: Mapping[str, str] | None, k: int, batch_size: int = 1,
                      field: str = "text") -> None:
    """Refuse a search that could return nothing useful: ``k`` or ``batch_size`` below 1, no queries, or
    an empty query text (``field`` names where the queries came from). ``queries=None`` checks the numbers only.

    Example:
        >>> check_search_args({"q1": "fever"}, k=0)
        Traceback (most recent call last):
        ...
        colmed.core.errors.InputError: field '--k': must be at least 1, got 0
    """
    from colmed.core.errors import InputError

    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise InputError(f"must be at least 1, got {k!r}", field="--k")
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise InputError(f"must be at least 1, got {batch_size!r}", field="--batch-size")
    if queries is None:
        return
    if not queries:
        raise InputError("no queries to search", field="--queries")
    for qid, text in queries.items():
        if not isinstance(text, str) or not text.strip():
            raise InputError(f"query {qid!r} is empty" if field == "text" else "is empty", field=field)


def load_queries(source: str | Path, split: str = "test") -> tuple[dict[str, str], dict]:
    """Queries from a ``queries.jsonl`` file or the judged queries of a BEIR folder / hub dataset."""
    from colmed.core.errors import InputError
    from colmed.data.datasets import load_dataset, read_queries

    p = Path(source)
    if p.is_file():
        queries = read_queries(p)
        return queries, {"queries_source": str(p.resolve()), "split": None}
    ds = load_dataset(source, split=split, require_corpus=False)
    if not ds.qrels:
        # Its queries would be searched and the run labelled with a split nothing judges.
        raise InputError(f"no qrels/{split}.tsv: split {split!r} has no judgements; pass --split with one it "
                         "has, or a queries.jsonl file to search unjudged queries", path=source, field="--split")
    return ds.queries, {"queries_source": ds.source, "dataset": ds.name, "dataset_fingerprint": ds.fingerprint,
                        "split": split, "qrels_hash": ds.qrels_hash}


def ann_recall_line(manifest: IndexManifest) -> str:
    """One line saying how exact the index is: ``exact search`` or its measured ANN recall."""
    stats, settings = manifest.stats or {}, manifest.settings or {}
    recall = {k: v for k, v in stats.items() if k.startswith("ann_recall@")}
    index_type = settings.get("index_type") or manifest.kind
    if recall:
        parts = ", ".join(f"{k.removeprefix('ann_')}={v:.4f}" for k, v in recall.items())
        n = stats.get("ann_recall_queries")
        return (f"{index_type} index: approximate; {parts} against exact search"
                + (f" on {n} queries" if n else ""))
    if (manifest.kind == "dense" and index_type == "flat") or manifest.kind == "bm25":
        return f"{index_type} index: exact search"
    return f"{index_type} index: approximate; recall against exact search not measured"


def write_run(run: Mapping[str, Mapping[str, float]], manifest: IndexManifest, queries: Mapping[str, str],
              source_info: dict, out: str | Path, k: int, timing: dict | None = None, tag: str | None = None,
              extra: dict | None = None) -> None:
    """Write ``out`` (TREC) and its protocol sidecar ``out.json``; the sidecar is written last, so a run
    file with a sidecar is always complete."""
    from colmed.data.datasets import queries_hash

    write_trec(out, run, tag=tag or Path(out).stem)
    write_json(str(out) + ".json", {
        "run": Path(out).name, "k": k, "queries_hash": queries_hash(queries), **source_info,
        "index": {"kind": manifest.kind, "model": manifest.model, "query_prompt": manifest.query_prompt,
                  "document_prompt": manifest.document_prompt, "settings": manifest.settings,
                  "dataset": manifest.dataset, "stats": manifest.stats},
        "ann": ann_recall_line(manifest), "timing": timing or {}, **(extra or {})})


def search_to_trec(retriever: Retriever, manifest: IndexManifest, queries_source: str | Path, out: str | Path,
                   k: int = 100, split: str = "test", batch_size: int = 64, tag: str | None = None) -> dict:
    """Search every query of ``queries_source`` and write ``out`` (TREC) plus ``out.json`` (protocol)."""
    queries, source_info = load_queries(queries_source, split)
    return search_loaded_to_trec(retriever, manifest, queries, source_info, out, k=k, batch_size=batch_size, tag=tag)


def search_loaded_to_trec(retriever: Retriever, manifest: IndexManifest, queries: Mapping[str, str],
                          source_info: dict, out: str | Path, k: int = 100, batch_size: int = 64,
                          tag: str | None = None, extra: dict | None = None) -> dict:
    """:func:`search_to_trec` for queries already read by :func:`load_queries`; ``extra`` joins the sidecar
    (e.g. the search options the retriever was opened with)."""
    t0 = time.perf_counter()
    run = search_queries(retriever, queries, k=k, batch_size=batch_size, progress=True)
    seconds = time.perf_counter() - t0
    info = {"queries": len(queries), "seconds": round(seconds, 3), "qps": len(queries) / max(seconds, 1e-9)}
    write_run(run, manifest, queries, source_info, out, k, timing=info, tag=tag, extra=extra)
    return info
