"""Run every retriever of a :class:`BenchmarkConfig` on every loadable dataset and evaluate them.

Example:
    >>> import tempfile
    >>> from colmed.demo import sample_dataset_path
    >>> cfg = BenchmarkConfig(retrievers=["bm25"], datasets=[str(sample_dataset_path())], out=tempfile.mkdtemp())
    >>> result = run_benchmark(cfg, log=lambda line: None)
    >>> round(result.score("bm25", "sample_medical", "ndcg@10"), 4), result.cell("bm25", "sample_medical").status
    (0.8242, 'built index + searched')
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from colmed.benchmark.cache import _stderr, get_run
from colmed.benchmark.datasets import dataset_names, dataset_search_options, load_benchmark_dataset
from colmed.benchmark.result import (BaselineTest, BenchmarkResult, DatasetResult, RetrieverInfo,
                                     RetrieverOnDataset, SkippedDataset)
from colmed.benchmark.spec import BenchmarkConfig, RetrieverSpec
from colmed.core.errors import ColmedError, InputError


def evaluate_dataset(dataset, runs: dict[str, dict], baseline: str | None, config: BenchmarkConfig,
                     exclude_self_hits: bool) -> tuple[dict[str, RetrieverOnDataset], dict[str, dict[str, BaselineTest]]]:
    """Scores, intervals and baseline tests of every run on one dataset (status filled in by the caller), and
    the configured comparisons whose two runs both apply ("A:B" -> metric -> test, Holm across those pairs)."""
    from colmed.eval.evaluation import compare_runs
    from colmed.eval.uncertainty import bootstrap_ci, holm, paired_bootstrap_ci

    metrics = list(config.metrics)
    # Runs come from the dataset's own queries (checked by hash); a query with no hit scores zero.
    comp = compare_runs(dataset, runs, metrics, stat_test=config.stat_test, max_p=config.max_p,
                        exclude_self_hits=exclude_self_hits, dataset_name=dataset.name, max_missing=1.0,
                        confidence=None)
    names = list(runs)
    out = {n: RetrieverOnDataset(
        n, status="", scores=dict(comp.scores[n]), coverage=comp.coverage[n],
        ci={m: bootstrap_ci(comp.per_query[n][m], config.confidence, config.bootstrap_resamples) for m in metrics})
        for n in names}
    def tests(pairs: list[tuple[str, str]]) -> dict[tuple[str, str], dict[str, BaselineTest]]:
        found: dict[tuple[str, str], dict[str, BaselineTest]] = {pair: {} for pair in pairs}
        for m in metrics:
            raw = [comp.p_values[a][b][m] for a, b in pairs]
            for (a, b), p, p_adj in zip(pairs, raw, holm(raw, alpha=config.max_p)):
                delta = comp.scores[a][m] - comp.scores[b][m]
                low, high = paired_bootstrap_ci(comp.per_query[a][m], comp.per_query[b][m], config.confidence,
                                                config.bootstrap_resamples)
                found[a, b][m] = BaselineTest(delta, (low, high), p, p_adj, bool(p_adj < config.max_p),
                                              "better" if delta > 0 else "worse")
        return found

    if baseline in runs and len(names) > 1:
        for (n, _), by_metric in tests([(n, baseline) for n in names if n != baseline]).items():
            out[n].vs_baseline = by_metric
    pairs = [(a, b) for a, b in config.comparison_pairs(config.retriever_names()) if a in runs and b in runs]
    return out, {f"{a}:{b}": t for (a, b), t in tests(pairs).items()}


def fused_run(spec: RetrieverSpec, runs: dict[str, dict], k: int) -> tuple[RetrieverOnDataset, dict | None]:
    """An ``rrf`` retriever on one dataset: reciprocal rank fusion (ranx, k=60) of its components' runs, cut to
    the benchmark's ``k`` like every other run; not applicable where a component is not."""
    from colmed.eval.evaluation import fuse_runs

    missing = [c for c in spec.components if c not in runs]
    if missing:
        return RetrieverOnDataset(spec.name, "not applicable", reason=f"{', '.join(missing)} not applicable"), None
    fused = fuse_runs([runs[c] for c in spec.components], method="rrf")
    run = {q: dict(sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))[:k]) for q, docs in fused.items()}
    return RetrieverOnDataset(spec.name, f"fused (rrf of {' + '.join(spec.components)})"), run


def run_benchmark(config: BenchmarkConfig, log: Callable[[str], None] = _stderr) -> BenchmarkResult:
    """Run every retriever on every loadable dataset, write the reports into ``config.out``
    (:func:`colmed.benchmark.report.write_reports`) and return the result."""
    from colmed.core.io import check_output_path, output_kind, output_lock

    config.validate()
    out = check_output_path(config.out, inputs=[config.data_dir if config.data_dir and Path(config.data_dir).exists()
                                                else None])
    found = output_kind(out)
    if found not in (None, "benchmark"):
        raise InputError(f"holds a colmed {found} output; a benchmark writes its own folder", path=config.out,
                         field="out")
    with output_lock(out):  # one benchmark per folder: two would interleave their cache and reports
        return _run_benchmark(config, log)


def _run_benchmark(config: BenchmarkConfig, log: Callable[[str], None]) -> BenchmarkResult:
    from colmed.benchmark.report import write_reports
    from colmed.eval.evaluation import resolve_self_hits
    from colmed.eval.protocol import protocol_record
    from colmed.eval.uncertainty import CORRECTION

    started = time.perf_counter()
    specs = config.retriever_specs()
    # Once per benchmark, afresh each time: a model retrained into the same folder gets a new identity.
    identities = {s.name: s.identity() for s in specs}
    result = BenchmarkResult(config, config.baseline or specs[0].name,
                             [RetrieverInfo(s.name, s.kind, s.target, s.options, identities[s.name]) for s in specs])
    cache_dir = Path(config.cache_dir) if config.cache_dir else Path(config.out) / "cache"
    for name in dataset_names(config):
        try:
            ds = load_benchmark_dataset(name, config.data_dir, config.split)
        except ColmedError as e:
            reason = str(e).removeprefix(f"{name}: ")  # the error often names the dataset already
            log(f"skipped {name}: {reason}")
            result.skipped.append(SkippedDataset(name, reason))
            continue
        if not ds.corpus or not ds.qrels:
            reason = "no corpus" if not ds.corpus else f"no qrels for split {config.split!r}"
            log(f"skipped {name}: {reason}")
            result.skipped.append(SkippedDataset(name, reason))
            continue
        exclude = resolve_self_hits(ds)
        runs, cells = {}, {}
        for s in specs:
            if s.kind == "rrf":
                continue  # fused below, from the runs of this dataset
            run, info = get_run(s, ds, config, cache_dir, log, identity=identities[s.name])
            sc = info.get("sidecar") or {}
            cells[s.name] = RetrieverOnDataset(s.name, info["status"], reason=info.get("reason"),
                                               run_path=info.get("run_path"), index_dir=info.get("index_dir"),
                                               index=sc.get("index"), ann=sc.get("ann"), timing=sc.get("timing"))
            if run is None:
                log(f"{ds.name}: {s.name} not applicable ({info['reason']})")
                continue
            runs[s.name] = run
        for s in specs:
            if s.kind == "rrf":
                cells[s.name], run = fused_run(s, runs, config.k)
                if run is not None:
                    runs[s.name] = run
        specs_order = [s.name for s in specs]
        runs = {n: runs[n] for n in specs_order if n in runs}
        cells = {n: cells[n] for n in specs_order}
        if not runs:
            result.skipped.append(SkippedDataset(ds.name, "no retriever applies"))
            continue
        evaluated_cells, comparisons = evaluate_dataset(ds, runs, result.baseline, config, exclude)
        for n, evaluated in evaluated_cells.items():
            cell = cells[n]
            cell.scores, cell.ci, cell.vs_baseline, cell.coverage = (evaluated.scores, evaluated.ci,
                                                                     evaluated.vs_baseline, evaluated.coverage)
        protocol = protocol_record(ds, k=config.k, exclude_self_hits=exclude, metrics=config.metrics,
                                   stat_test=config.stat_test, correction=CORRECTION)
        protocol["warnings"] = ds.warnings
        protocol["colbert_query_maxlen"] = dataset_search_options("colbert", ds.name).get("query_maxlen")
        result.datasets[ds.name] = DatasetResult(ds.name, protocol, cells, comparisons)
    _refuse_unused_indexes(specs, result)
    if not result.datasets:
        # a benchmark of nothing is a failed run, not an empty report
        raise InputError("no dataset could be evaluated (" + "; ".join(f"{k.dataset}: {k.reason}" for k in result.skipped)
                         + ")", field="datasets")
    result.published = _published_rows(specs, result) if config.check_published else None
    result.seconds = round(time.perf_counter() - started, 2)
    write_reports(result)
    return result


def _refuse_unused_indexes(specs: list[RetrieverSpec], result: BenchmarkResult) -> None:
    """An ``index:DIR`` retriever whose index matches none of the evaluated datasets is a mistake, not a skip."""
    from colmed.core.errors import InputError

    loaded = [*result.datasets, *(k.dataset for k in result.skipped if k.reason == "no retriever applies")]
    for s in specs:
        if s.kind == "index" and loaded and not any(
                (c := ds.retrievers.get(s.name)) is not None and c.applicable for ds in result.datasets.values()):
            built_over = s.index_manifest().dataset.get("name") or "an unrecorded dataset"
            raise InputError(f"index {s.target} was built over {built_over}, which is none of the datasets "
                             f"evaluated ({', '.join(loaded)}); benchmark it on the dataset it was built from",
                             field="retriever")


def _published_rows(specs: list[RetrieverSpec], result: BenchmarkResult) -> list[dict]:
    from dataclasses import asdict

    from colmed.eval.published import check_published, reference_key
    from colmed.indexes.bm25 import BM25Settings

    bm25_defaults = asdict(BM25Settings())  # the published BM25 figures are of bm25s' defaults
    keys = {}
    for s in specs:
        if s.kind == "index":
            m = s.index_manifest()
            tuned = m.kind == "bm25" and {**bm25_defaults, **m.settings} != bm25_defaults
            keys[s.name] = None if tuned else reference_key(m.kind, m.model)
        else:
            tuned = s.kind == "bm25" and {**bm25_defaults, **s.options} != bm25_defaults
            keys[s.name] = None if tuned else reference_key(s.kind, s.target)
    return check_published(result.scores("ndcg@10"), keys, tolerance=result.config.tolerance)
