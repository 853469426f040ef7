"""Runs: ``{query_id: {doc_id: score}}`` dicts, TREC run files, and per-dataset protocol steps.

Example:
    >>> run = {"q1": {"q1": 9.0, "d2": 3.0}}
    >>> exclude_self_hits(run)
    {'q1': {'d2': 3.0}}
    >>> run["q1"]["q1"]   # the caller's run is never mutated
    9.0
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping

from colmed.core.errors import InputError
from colmed.core.io import atomic_write, read_text_lines

Run = dict[str, dict[str, float]]


def trec_eval_ranking(docs: Mapping[str, float]) -> list[tuple[str, float]]:
    """``(doc_id, score)`` pairs in trec_eval's order: score descending, then doc id descending.

    trec_eval (and pytrec_eval, which BEIR's published figures come from) breaks score ties by
    comparing doc ids as strings, the larger first; colmed ranks the same way everywhere.

    >>> trec_eval_ranking({"d1": 1.0, "d3": 2.0, "d2": 1.0})
    [('d3', 2.0), ('d2', 1.0), ('d1', 1.0)]
    """
    by_doc_desc = sorted(docs.items(), key=lambda kv: kv[0], reverse=True)
    return sorted(by_doc_desc, key=lambda kv: -kv[1])  # stable: ties keep doc id descending


def trec_eval_order(run: Mapping[str, Mapping[str, float]]) -> Run:
    """A copy of ``run`` whose scores are strictly decreasing in trec_eval's order (no ties left).

    Any scorer then ranks exactly as trec_eval does, so ranx's metrics equal trec_eval's. Only for
    scoring a run: the new scores are ranks (n, n-1, ..., 1), so never feed them to score fusion.

    >>> trec_eval_order({"q": {"d1": 0.5, "d2": 0.5, "d0": 0.9}})
    {'q': {'d0': 3.0, 'd2': 2.0, 'd1': 1.0}}
    """
    out: Run = {}
    for qid, docs in run.items():
        ranked = trec_eval_ranking(docs)
        out[qid] = {did: float(len(ranked) - i) for i, (did, _) in enumerate(ranked)}
    return out



def score_run(qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]],
              metrics=("ndcg@10",), *, per_query: bool = False) -> dict:
    """ranx metrics of ``run`` against ``qrels``, ranked as trec_eval ranks: the one place colmed scores a run.

    Every judged query counts: one without hits scores 0 (``trec_eval -c``); runs for unjudged queries
    are ignored. ``per_query=True`` gives arrays aligned to the sorted judged query ids. Protocol steps
    (self-hit exclusion, coverage checks) are :mod:`colmed.eval.evaluation`'s; this only scores.

    >>> score_run({"q1": {"d1": 1}, "q2": {"d2": 1}}, {"q1": {"d1": 1.0}}, ["ndcg@10"])
    {'ndcg@10': 0.5}
    """
    import numpy as np
    from ranx import Qrels, Run as RanxRun, evaluate

    metrics = list(metrics)
    judged = {q: dict(r) for q, r in qrels.items() if r}
    hits = {q: docs for q, docs in run.items() if docs}
    if not hits or not judged:
        zeros = np.zeros(len(judged))
        return {m: (zeros.copy() if per_query else 0.0) for m in metrics}
    out = evaluate(Qrels(judged), RanxRun(trec_eval_order(hits)), metrics, return_mean=not per_query,
                   make_comparable=True)
    if len(metrics) == 1:
        out = {metrics[0]: out}
    return {m: (np.asarray(v, dtype=float) if per_query else float(v)) for m, v in out.items()}

def write_trec(path: str | Path, run: Mapping[str, Mapping[str, float]], tag: str = "colmed") -> None:
    """Atomically write a TREC run (``qid Q0 docid rank score tag``), ranked as trec_eval ranks it.

    Ranks follow the written (6-decimal) scores, so scores that round to the same value are ranked
    by doc id descending, as trec_eval will rank them when it reads the file.
    """
    with atomic_write(path) as f:
        for qid, docs in run.items():
            written = {did: float(f"{score:.6f}") for did, score in docs.items()}
            for rank, (did, score) in enumerate(trec_eval_ranking(written), start=1):
                f.write(f"{qid} Q0 {did} {rank} {score:.6f} {tag}\n")


def read_trec(path: str | Path) -> Run:
    """Read a TREC run file; a malformed line is an error naming the file and line."""
    path = Path(path)
    run: Run = {}
    for lineno, line in read_text_lines(path, missing="run file not found"):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 6:
            raise InputError(f"expected 6 columns 'qid Q0 docid rank score tag', got {len(parts)}",
                             path=path, line=lineno)
        qid, _, did, _, score, _ = parts
        try:
            value = float(score)
        except ValueError:
            raise InputError(f"not a number: {score!r}", path=path, line=lineno, field="score") from None
        if not math.isfinite(value):  # nan/inf would sort arbitrarily and score silently
            raise InputError(f"not a finite number: {score!r}", path=path, line=lineno, field="score")
        run.setdefault(qid, {})[did] = value
    if not run:
        raise InputError("empty run", path=path)
    return run


def exclude_self_hits(run: Mapping[str, Mapping[str, float]]) -> Run:
    """A copy of ``run`` without any document whose id equals its query's id (BEIR's ArguAna protocol)."""
    return {qid: {did: s for did, s in docs.items() if did != qid} for qid, docs in run.items()}


def top_k(run: Mapping[str, Mapping[str, float]], k: int) -> Run:
    """A copy of ``run`` cut to the ``k`` best documents per query (ties broken as trec_eval does)."""
    return {q: dict(trec_eval_ranking(d)[:k]) for q, d in run.items()}
