"""Evaluation and comparison of runs, through ranx only.

Protocol steps are explicit and per dataset: the registry decides self-hit exclusion (ArguAna) unless
the caller passes ``exclude_self_hits`` explicitly; runs are cut to ``k``; a run whose query ids do not
match the qrels fails loudly instead of silently scoring zero (the ranx pitfall in AmenRa/ranx#27, #39).

Example:
    >>> qrels = {"q1": {"d1": 1}, "q2": {"d2": 2}}
    >>> run = {"q1": {"d1": 0.9, "d3": 0.1}, "q2": {"d3": 0.8, "d2": 0.5}}
    >>> round(evaluate_run(qrels, run, ["mrr@10"])["mrr@10"], 3)
    0.75
    >>> from colmed.data.datasets import RetrievalDataset
    >>> arguana = RetrievalDataset("arguana", {}, {"a1": "x"}, {"a1": {"a2": 1}})
    >>> self_hit = {"a1": {"a1": 2.0, "a2": 1.0}}   # ArguAna's protocol drops a query's own id
    >>> evaluate_run(arguana, self_hit, ["mrr@10"])["mrr@10"]
    1.0
    >>> evaluate_run(arguana, self_hit, ["mrr@10"], exclude_self_hits=False)["mrr@10"]
    0.5
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from colmed.core.errors import InputError
from colmed.data.runs import Run, exclude_self_hits as drop_self_hits, score_run, top_k, trec_eval_order
from colmed.eval.protocol import SIGNIFICANCE_TESTS

logger = logging.getLogger(__name__)

DEFAULT_METRICS = ("ndcg@10", "recall@100", "map@100", "mrr@10")
STAT_TESTS = tuple(SIGNIFICANCE_TESTS)
# A run missing more than this fraction of the judged queries is refused, not scored as zeros.
MAX_MISSING_QUERIES = 0.05


def _qrels_dict(dataset_or_qrels) -> dict[str, dict[str, int]]:
    return dataset_or_qrels.qrels if hasattr(dataset_or_qrels, "qrels") else dict(dataset_or_qrels)


def resolve_self_hits(dataset_or_qrels, exclude_self_hits: bool | None = None) -> bool:
    """Whether a query's own id is dropped from its results: ``exclude_self_hits`` when given, else the
    dataset registry's protocol for the dataset's name (ArguAna: yes); bare qrels have no protocol (no)."""
    if exclude_self_hits is not None:
        return bool(exclude_self_hits)
    from colmed.data.registry import get_spec

    spec = get_spec(getattr(dataset_or_qrels, "name", "") or "")
    return bool(spec and spec.exclude_self_hits)


def prepare_run(qrels: Mapping[str, Mapping[str, int]], run: Mapping[str, Mapping[str, float]], *,
                name: str = "run", exclude_self_hits: bool = False, k: int | None = None,
                max_missing: float = MAX_MISSING_QUERIES) -> tuple[Run, dict]:
    """Apply the protocol to a copy of ``run`` and check its query ids against ``qrels``.

    Returns the prepared run (judged queries only) and coverage stats. Raises :class:`InputError`
    when more than ``max_missing`` of the judged queries are absent from the run.
    """
    judged = [q for q, rels in qrels.items() if rels]
    prepared = drop_self_hits(run) if exclude_self_hits else {q: dict(d) for q, d in run.items()}
    if k is not None:
        prepared = top_k(prepared, k)
    present = [q for q in judged if prepared.get(q)]
    missing = len(judged) - len(present)
    if judged and missing / len(judged) > max_missing:
        example = next(q for q in judged if not prepared.get(q))
        overlap = len(set(run) & set(qrels))
        raise InputError(
            f"run has results for {len(present)} of {len(judged)} judged queries ({missing} missing, e.g. "
            f"{example!r}; {overlap} of its {len(run)} query ids appear in the qrels): wrong dataset, split or "
            f"query-id format?", path=name)
    stats = {"judged_queries": len(judged), "queries_with_results": len(present), "missing_queries": missing,
             "unjudged_queries_dropped": len(set(prepared) - set(qrels))}
    return {q: prepared[q] for q in present}, stats


def evaluate_run(dataset_or_qrels, run: Mapping[str, Mapping[str, float]], metrics=DEFAULT_METRICS, *,
                 exclude_self_hits: bool | None = None, per_query: bool = False, name: str = "run",
                 max_missing: float = MAX_MISSING_QUERIES) -> dict:
    """Mean metrics of one run (``per_query=True``: arrays aligned to the sorted judged query ids;
    a judged query the run lacks scores zero, within ``max_missing``).

    ``exclude_self_hits=None`` applies the dataset's registry protocol (:func:`resolve_self_hits`).
    """
    qrels = _qrels_dict(dataset_or_qrels)
    prepared, _ = prepare_run(qrels, run, name=name, max_missing=max_missing,
                              exclude_self_hits=resolve_self_hits(dataset_or_qrels, exclude_self_hits))
    return score_run(qrels, prepared, metrics, per_query=per_query)


@dataclass
class Comparison:
    """The result of :func:`compare_runs`: means, pairwise p-values and markers, ready to render."""

    dataset: str
    metrics: list[str]
    names: list[str]
    scores: dict[str, dict[str, float]]
    p_values: dict[str, dict[str, dict[str, float]]]  # run -> other run -> metric -> p
    significant: dict[str, dict[str, list[str]]]  # run -> metric -> names of runs it beats
    stat_test: str
    max_p: float
    per_query: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    coverage: dict[str, dict] = field(default_factory=dict)
    protocol: dict = field(default_factory=dict)
    # run -> metric -> (low, high): percentile bootstrap over queries (colmed.eval.uncertainty)
    confidence_intervals: dict[str, dict[str, tuple[float, float]]] = field(default_factory=dict)
    confidence: float = 0.95

    def to_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def compare_runs(dataset_or_qrels, runs: Mapping[str, Mapping[str, Mapping[str, float]]],
                 metrics=DEFAULT_METRICS, *, stat_test: str = "student", max_p: float = 0.05,
                 exclude_self_hits: bool | None = None, fuse: str | None = None, dataset_name: str = "",
                 max_missing: float = MAX_MISSING_QUERIES, confidence: float | None = 0.95,
                 n_resamples: int = 2000) -> Comparison:
    """Evaluate named runs on the same qrels and test every pair for significance (ranx ``compare``).

    ``stat_test`` is ``student`` (two-sided paired t-test) or ``fisher`` (randomization test).
    ``fuse`` (e.g. ``rrf``) adds a fused run of all inputs, named ``fused-<method>``.
    ``confidence`` (e.g. 0.95) adds percentile-bootstrap intervals over queries for every mean
    (:func:`colmed.eval.uncertainty.bootstrap_ci`); ``None`` skips them.
    ``exclude_self_hits=None`` applies the dataset's registry protocol (:func:`resolve_self_hits`).
    """
    from ranx import Qrels, Run as RanxRun, compare

    if stat_test not in STAT_TESTS:
        raise InputError(f"unknown test {stat_test!r}; choose from {', '.join(STAT_TESTS)}", field="stat_test")
    if not runs:
        raise InputError("no runs to compare")
    qrels = _qrels_dict(dataset_or_qrels)
    exclude = resolve_self_hits(dataset_or_qrels, exclude_self_hits)
    prepared, coverage = {}, {}
    for name, run in runs.items():
        prepared[name], coverage[name] = prepare_run(qrels, run, name=name, exclude_self_hits=exclude,
                                                     max_missing=max_missing)
    if fuse:
        fused = fuse_runs(list(prepared.values()), method=fuse)
        name = f"fused-{fuse}"
        prepared[name], coverage[name] = prepare_run(qrels, fused, name=name, max_missing=max_missing)
    rq = Qrels({q: dict(r) for q, r in qrels.items() if r})
    ranx_runs = [RanxRun(trec_eval_order(r), name=n) for n, r in prepared.items()]  # ties ranked as trec_eval
    metrics = list(metrics)
    report = compare(rq, ranx_runs, metrics, stat_test=stat_test, max_p=max_p, make_comparable=True,
                     rounding_digits=4)
    names = list(prepared)
    per_query = {n: {m: v.tolist() for m, v in score_run(qrels, r, metrics, per_query=True).items()}
                 for n, r in prepared.items()}

    def p_value(a: str, b: str, m: str) -> float:
        p = float(report.comparisons[a, b][m]["p_value"])
        # Identical per-query scores leave the t statistic undefined (scipy: nan): no evidence of a difference.
        return 1.0 if math.isnan(p) and per_query[a][m] == per_query[b][m] else p

    p_values = {a: {b: {m: p_value(a, b, m) for m in metrics} for b in names if b != a} for a in names}
    beats = {a: {m: [b for b in names if b != a and report.comparisons[a, b][m]["significant"]
                     and report.results[a][m] > report.results[b][m]] for m in metrics} for a in names}
    intervals = {}
    if confidence:
        from colmed.eval.uncertainty import bootstrap_ci

        intervals = {n: {m: bootstrap_ci(per_query[n][m], confidence, n_resamples) for m in metrics} for n in names}
    return Comparison(dataset_name or getattr(dataset_or_qrels, "name", ""), metrics, names,
                      {n: dict(report.results[n]) for n in names}, p_values, beats, stat_test, max_p, per_query, coverage, confidence_intervals=intervals,
                      confidence=confidence or 0.95)


def fuse_runs(runs: list[Mapping[str, Mapping[str, float]]], method: str = "rrf", norm: str | None = None) -> Run:
    """Fuse runs with ranx (``rrf`` by default; any ranx fusion method and normalisation).

    A query that only some runs answer (BM25 finds nothing for a query with no known term) is fused
    from the runs that have it: ranx needs identical query sets, so queries are fused in groups by
    which runs answer them.
    """
    from collections import defaultdict

    from ranx import Run as RanxRun, fuse

    if norm is None:
        norm = "min-max" if method != "rrf" else None
    groups: dict[tuple[int, ...], list[str]] = defaultdict(list)
    for q in dict.fromkeys(q for r in runs for q in r):
        groups[tuple(i for i, r in enumerate(runs) if r.get(q))].append(q)
    out: Run = {}
    for members, qids in groups.items():
        if not members:
            continue
        # ranx refuses to fuse one run; fusing a run with itself keeps its per-query order.
        parts = [runs[i] for i in members] if len(members) > 1 else [runs[members[0]]] * 2
        fused = fuse([RanxRun({q: dict(r[q]) for q in qids}) for r in parts], method=method, norm=norm)
        out.update({q: {d: float(s) for d, s in docs.items()} for q, docs in fused.to_dict().items()})
    return out
