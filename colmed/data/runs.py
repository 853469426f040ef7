"""Runs: ``{query_id: {doc_id: score}}`` dicts, TREC run files, and per-dataset protocol steps.

Example:
    >>> run = {"q1": {"q1": 9.0, "d2": 3.0}}
    >>> exclude_self_hits(run)
    {'q1': {'d2': 3.0}}
    >>> run["q1"]["q1"]   # the caller's run is never mutated
    9.0
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from colmed.core.errors import InputError
from colmed.core.io import atomic_write

Run = dict[str, dict[str, float]]


def write_trec(path: str | Path, run: Mapping[str, Mapping[str, float]], tag: str = "colmed") -> None:
    """Atomically write a TREC run (``qid Q0 docid rank score tag``), ranked by score then doc id."""
    with atomic_write(path) as f:
        for qid, docs in run.items():
            ranked = sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))
            for rank, (did, score) in enumerate(ranked, start=1):
                f.write(f"{qid} Q0 {did} {rank} {score:.6f} {tag}\n")


def read_trec(path: str | Path) -> Run:
    """Read a TREC run file; a malformed line is an error naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise InputError("run file not found", path=path)
    run: Run = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 6:
                raise InputError(f"expected 6 columns 'qid Q0 docid rank score tag', got {len(parts)}",
                                 path=path, line=lineno)
            qid, _, did, _, score, _ = parts
            try:
                run.setdefault(qid, {})[did] = float(score)
            except ValueError:
                raise InputError(f"not a number: {score!r}", path=path, line=lineno, field="score") from None
    if not run:
        raise InputError("empty run", path=path)
    return run


def exclude_self_hits(run: Mapping[str, Mapping[str, float]]) -> Run:
    """A copy of ``run`` without any document whose id equals its query's id (BEIR's ArguAna protocol)."""
    return {qid: {did: s for did, s in docs.items() if did != qid} for qid, docs in run.items()}


def top_k(run: Mapping[str, Mapping[str, float]], k: int) -> Run:
    """A copy of ``run`` cut to the ``k`` best documents per query."""
    return {q: dict(sorted(d.items(), key=lambda kv: (-kv[1], kv[0]))[:k]) for q, d in run.items()}
