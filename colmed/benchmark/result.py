"""The typed result of a benchmark: per dataset, per retriever scores with intervals, tests against the
baseline, cache status and timings; the protocol of each dataset; published-figure checks.

:meth:`BenchmarkResult.to_dict` gives the JSON written to ``results.json``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from colmed.benchmark.spec import BenchmarkConfig


@dataclass
class BaselineTest:
    """One retriever against another (the baseline, or a configured comparison) on one dataset and metric
    (paired test, Holm-corrected)."""

    delta: float  # retriever minus baseline (A minus B for a comparison)
    delta_ci: tuple[float, float]  # paired bootstrap interval of delta
    p_value: float
    p_holm: float
    significant: bool  # p_holm < max_p
    direction: str  # "better" | "worse"

    def to_dict(self) -> dict:
        return {"delta": self.delta, "delta_ci": list(self.delta_ci), "p_value": self.p_value,
                "p_holm": self.p_holm, "significant": self.significant, "direction": self.direction}


@dataclass
class RetrieverOnDataset:
    """One retriever on one dataset: its scores, or why it does not apply, and where its run came from."""

    retriever: str
    status: str  # "cached", "searched (index reused)", "built index + searched" or "not applicable"
    scores: dict[str, float] = field(default_factory=dict)  # metric -> mean over judged queries
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)  # metric -> bootstrap interval
    vs_baseline: dict[str, BaselineTest] = field(default_factory=dict)  # metric -> test (not for the baseline)
    coverage: dict[str, int] = field(default_factory=dict)  # judged queries, queries with results, ...
    reason: str | None = None  # why not applicable
    run_path: str | None = None
    index_dir: str | None = None
    index: dict | None = None  # the index manifest the run was searched with
    ann: str | None = None  # approximate-search recall line, when the index is approximate
    timing: dict | None = None  # search: queries, seconds, qps

    @property
    def applicable(self) -> bool:
        return self.status != "not applicable"

    def cell_dict(self) -> dict:
        out: dict[str, Any] = {"status": self.status}
        if self.reason is not None:
            out["reason"] = self.reason
        if self.run_path is not None:
            out.update(run_path=self.run_path, index_dir=self.index_dir)
        return {**out, "index": self.index, "ann": self.ann, "timing": self.timing}


@dataclass
class DatasetResult:
    """Every retriever on one dataset, and the protocol it was evaluated under."""

    name: str
    protocol: dict  # colmed.eval.protocol.protocol_record plus warnings and colbert_query_maxlen
    retrievers: dict[str, RetrieverOnDataset] = field(default_factory=dict)
    comparisons: dict[str, dict[str, BaselineTest]] = field(default_factory=dict)  # "A:B" -> metric -> test


@dataclass
class SkippedDataset:
    dataset: str
    reason: str


@dataclass
class RetrieverInfo:
    """A benchmarked retriever and its identity (model content hash, index manifest, options)."""

    name: str
    kind: str
    target: str | None
    options: dict
    identity: dict


@dataclass
class BenchmarkResult:
    """What :func:`colmed.benchmark.run_benchmark` returns."""

    config: BenchmarkConfig
    baseline: str
    retrievers: list[RetrieverInfo]
    datasets: dict[str, DatasetResult] = field(default_factory=dict)  # evaluated datasets, in suite order
    skipped: list[SkippedDataset] = field(default_factory=list)
    published: list[dict] | None = None  # colmed.eval.published.check_published rows (check_published=True)
    seconds: float = 0.0

    @property
    def dataset_names(self) -> list[str]:
        return list(self.datasets)

    @property
    def retriever_names(self) -> list[str]:
        return [r.name for r in self.retrievers]

    def cell(self, retriever: str, dataset: str) -> RetrieverOnDataset:
        return self.datasets[dataset].retrievers[retriever]

    def score(self, retriever: str, dataset: str, metric: str = "ndcg@10") -> float | None:
        """A mean score, or ``None`` when the retriever does not apply to the dataset."""
        cell = self.datasets[dataset].retrievers.get(retriever)
        return cell.scores.get(metric) if cell else None

    def scores(self, metric: str = "ndcg@10") -> dict[str, dict[str, float]]:
        """retriever -> dataset -> mean ``metric``, over the datasets each retriever applies to."""
        return {n: {d: v for d in self.datasets if (v := self.score(n, d, metric)) is not None}
                for n in self.retriever_names}

    def to_dict(self) -> dict:
        """Plain JSON: the ``results.json`` layout (``scores[retriever][dataset]``, ``ci[dataset][retriever]``...)."""
        cells = lambda d: [c for c in self.datasets[d].retrievers.values() if c.applicable]  # noqa: E731
        return {
            "datasets": self.dataset_names,
            "skipped": [asdict(s) for s in self.skipped],
            "scores": {n: {d: dict(c.scores) for d, ds in self.datasets.items()
                           if (c := ds.retrievers.get(n)) is not None and c.applicable} for n in self.retriever_names},
            "ci": {d: {c.retriever: {m: list(v) for m, v in c.ci.items()} for c in cells(d)} for d in self.datasets},
            "vs_baseline": {d: {c.retriever: {m: t.to_dict() for m, t in c.vs_baseline.items()}
                                for c in cells(d) if c.vs_baseline} for d in self.datasets},
            "comparisons": {d: {pair: {m: t.to_dict() for m, t in tests.items()}
                                for pair, tests in ds.comparisons.items()} for d, ds in self.datasets.items()},
            "protocol": {d: ds.protocol for d, ds in self.datasets.items()},
            "cells": {d: {n: c.cell_dict() for n, c in ds.retrievers.items()} for d, ds in self.datasets.items()},
            "coverage": {d: {c.retriever: c.coverage for c in cells(d)} for d in self.datasets},
            "baseline": self.baseline,
            "retrievers": [asdict(r) for r in self.retrievers],
            "published": self.published,
            "config": asdict(self.config),
            "seconds": self.seconds,
        }
