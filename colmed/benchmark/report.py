"""A benchmark's reports: markdown (MedEmbed-style tables with CIs, tests against the baseline, retrievers,
protocol, published figures), CSV (wide nDCG@10 and long every-metric tables), JSON, a PNG plot and a
manifest, written atomically into the benchmark folder."""

from __future__ import annotations

import csv
import datetime as _dt
import io
import os
import platform
import sys
from dataclasses import asdict
from pathlib import Path

from colmed.benchmark.result import BenchmarkResult
from colmed.eval.report import markdown_table, significance_test_name

METRIC_LABELS = {"ndcg@10": "nDCG@10", "recall@100": "Recall@100", "mrr@10": "MRR@10", "map@100": "MAP@100"}
OUTPUTS = ("report.md", "ndcg@10.csv", "metrics.csv", "results.json", "benchmark.png", "manifest.json")


def _average(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _marker(result: BenchmarkResult, dataset: str, name: str, metric: str) -> str:
    t = result.cell(name, dataset).vs_baseline.get(metric)
    if not t or not t.significant:
        return ""
    return "▲" if t.direction == "better" else "▼"


def ndcg_table_rows(result: BenchmarkResult, metric: str = "ndcg@10") -> list[dict]:
    """One row per retriever: dataset -> value, ``average`` (over the datasets it has), ``partial``."""
    rows = []
    for n, vals in result.scores(metric).items():
        rows.append({"retriever": n, **vals, "average": _average(list(vals.values())),
                     "partial": len(vals) < len(result.datasets)})
    return rows


def ndcg_cells(result: BenchmarkResult, sep: str = " ") -> list[tuple[dict, list[str]]]:
    """Each nDCG@10 row with its per-dataset cells: score, significance marker, CI (``sep`` before it)."""
    out = []
    for row in ndcg_table_rows(result):
        n = row["retriever"]
        cells = []
        for d in result.datasets:
            if d not in row:
                cells.append("n/a")
                continue
            low, high = result.cell(n, d).ci["ndcg@10"]
            cells.append(f"{row[d]:.4f}{_marker(result, d, n, 'ndcg@10')}{sep}[{low:.3f}, {high:.3f}]")
        out.append((row, cells))
    return out


def to_markdown(result: BenchmarkResult) -> str:
    config = result.config
    datasets = result.dataset_names
    baseline = result.baseline
    conf = round(config.confidence * 100)
    lines = [f"# colmed benchmark: {config.suite if not config.datasets else ', '.join(config.datasets)}", "",
             f"Date: {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}. Machine: "
             f"{platform.platform()}, {os.cpu_count()} CPU cores. Wall time: {result.seconds} s.", "",
             f"Command: `{' '.join(sys.argv) if sys.argv and 'colmed' in sys.argv[0] else 'run_benchmark(...)'}`", ""]
    if not datasets:
        lines += ["No dataset could be evaluated.", ""]
    else:
        rows = []
        for row, cells in ndcg_cells(result):
            n = row["retriever"]
            avg = "n/a" if row["average"] is None else f"{row['average']:.4f}{'*' if row['partial'] else ''}"
            rows.append([f"{n} (baseline)" if n == baseline else n, *cells, avg])
        lines += [f"## nDCG@10 (test split) with {conf}% bootstrap CI over queries", "",
                  *markdown_table(["retriever", *datasets, "average"], rows)]
        compared = len(result.retrievers) - 1
        sig = (f"▲/▼: significantly better/worse than the baseline `{baseline}` on that dataset "
               f"({significance_test_name(config.stat_test)}, Holm-corrected across the {compared} compared "
               f"retriever{'s' if compared != 1 else ''}, p < {config.max_p}). " if compared else "")
        lines += ["", sig + f"Intervals: {conf}% percentile bootstrap over queries "
                            f"({config.bootstrap_resamples} resamples)."
                  + (" *: average over the datasets this retriever could be run on." if any(
                      r["partial"] for r in ndcg_table_rows(result)) else ""), ""]
        others = [m for m in config.metrics if m != "ndcg@10"]
        if others:
            rows = []
            for n in result.retriever_names:
                cells = []
                for d in datasets:
                    v = result.score(n, d, others[0])
                    cells.append("n/a" if v is None else " / ".join(
                        f"{result.score(n, d, m):.4f}{_marker(result, d, n, m)}" for m in others))
                avgs = [_average(list(result.scores(m)[n].values())) for m in others]
                rows.append([n, *cells, " / ".join("n/a" if a is None else f"{a:.4f}" for a in avgs)])
            lines += [f"## {' / '.join(METRIC_LABELS.get(m, m) for m in others)}", "",
                      *markdown_table(["retriever", *datasets, "average"], rows), ""]
        lines += _significance_section(result)
        lines += _comparisons_section(result)
    if result.skipped:
        lines += ["## Skipped datasets", ""] + [f"- {s.dataset}: {s.reason}" for s in result.skipped] + [""]
    lines += _retrievers_section(result)
    lines += _protocol_section(result)
    if result.published is not None:
        from colmed.eval.published import published_to_markdown

        lines += ["## Reproduction of published figures (--check-published)", "",
                  published_to_markdown(result.published)]
    return "\n".join(lines) + "\n"


def _significance_section(result: BenchmarkResult) -> list[str]:
    rows = []
    for d, ds in result.datasets.items():
        for n, cell in ds.retrievers.items():
            t = cell.vs_baseline.get("ndcg@10")
            if t:
                rows.append([d, n, f"{t.delta:+.4f}", f"[{t.delta_ci[0]:+.4f}, {t.delta_ci[1]:+.4f}]",
                             f"{t.p_value:.4g}", f"{t.p_holm:.4g}", "yes" if t.significant else "no"])
    if not rows:
        return []
    conf = round(result.config.confidence * 100)
    return [f"## nDCG@10 against the baseline `{result.baseline}`", "",
            *markdown_table(["dataset", "retriever", "Δ nDCG@10", f"{conf}% paired CI of Δ", "p", "p (Holm)",
                             "significant"], rows), ""]


def _comparisons_section(result: BenchmarkResult) -> list[str]:
    rows = []
    for d, ds in result.datasets.items():
        for pair, tests in ds.comparisons.items():
            a, _, b = pair.partition(":")
            for m in ("ndcg@10", "recall@100"):
                t = tests.get(m)
                if t:
                    rows.append([d, f"{a} − {b}", m, f"{t.delta:+.4f}", f"[{t.delta_ci[0]:+.4f}, {t.delta_ci[1]:+.4f}]",
                                 f"{t.p_value:.4g}", f"{t.p_holm:.4g}", "yes" if t.significant else "no"])
    if not rows:
        return []
    conf = round(result.config.confidence * 100)
    return ["## Paired comparisons", "",
            f"Each configured pair A − B on the queries both were run on; {result.config.stat_test} paired test, Holm-"
            "corrected across the pairs of a dataset (a family apart from the baseline tests).", "",
            *markdown_table(["dataset", "A − B", "metric", "Δ", f"{conf}% paired CI of Δ", "p", "p (Holm)",
                             "significant"], rows), ""]


def _retrievers_section(result: BenchmarkResult) -> list[str]:
    rows = []
    for r in result.retrievers:
        anns, statuses, prompts = set(), set(), set()
        for ds in result.datasets.values():
            cell = ds.retrievers.get(r.name)
            statuses.add(cell.status if cell else "?")
            if cell and cell.ann:
                anns.add(cell.ann)
            idx = (cell.index if cell else None) or {}
            if idx.get("kind") in ("dense", "colbert"):
                prompts.add(f"{idx.get('query_prompt')!r} / {idx.get('document_prompt')!r}")
        model = r.identity.get("model") or r.identity.get("index") or "bm25s"
        h = r.identity.get("model_hash")
        rows.append([r.name, r.kind, f"{model}{f' (sha256 {h[:12]})' if h else ''}", "; ".join(sorted(prompts)) or "-",
                     "; ".join(sorted(anns)) or "-", ", ".join(sorted(statuses)) or "-"])
    return ["## Retrievers", "", *markdown_table(
        ["retriever", "kind", "model / index", "prompts (query / document)", "index exactness", "cache"], rows), ""]


def _protocol_section(result: BenchmarkResult) -> list[str]:
    from colmed.eval.protocol import METRIC_DEFINITIONS
    from colmed.eval.uncertainty import CORRECTION

    config = result.config
    rows = [[d, p["split"], p["judged_queries"], p["self_hits"].split(" ")[0], p["k"], p["dataset_fingerprint"][:12],
             p["qrels_hash"][:12], p["dataset_source"]]
            for d, p in ((d, ds.protocol) for d, ds in result.datasets.items())]
    lines = ["## Protocol", "", *markdown_table(["dataset", "split", "judged queries", "self-hits", "k",
                                                 "dataset fingerprint", "qrels sha256", "source"], rows)]
    lines += ["", "Metrics: " + "; ".join(f"{METRIC_LABELS.get(m, m)} = {METRIC_DEFINITIONS.get(m, m)}"
                                          for m in config.metrics) + ".",
              f"Significance: {significance_test_name(config.stat_test)}; correction: {CORRECTION}.",
              "Self-hits: a query's own id is removed from its results where the dataset registry says so "
              "(ArguAna), as BEIR and MTEB do."]
    long_queries = [f"{d} {ds.protocol['colbert_query_maxlen']}" for d, ds in result.datasets.items()
                    if ds.protocol.get("colbert_query_maxlen")]
    if long_queries:
        lines.append("ColBERT query tokens: " + ", ".join(long_queries) + " (ColBERTv2's BEIR setting for "
                     "argument-length queries); elsewhere the model's own query_maxlen.")
    lines.append("")
    warnings = [f"- {d}: {w}" for d, ds in result.datasets.items() for w in ds.protocol.get("warnings", [])]
    if warnings:
        lines += ["Data warnings:", *warnings, ""]
    return lines


def to_csv(result: BenchmarkResult) -> tuple[str, str]:
    """(nDCG@10 wide table, long table of every metric with intervals and tests)."""
    wide = io.StringIO()
    w = csv.writer(wide)
    w.writerow(["retriever", *result.datasets, "average"])
    for row in ndcg_table_rows(result):
        w.writerow([row["retriever"], *(f"{row[d]:.6f}" if d in row else "" for d in result.datasets),
                    "" if row["average"] is None else f"{row['average']:.6f}"])
    long = io.StringIO()
    w = csv.writer(long)
    w.writerow(["dataset", "retriever", "metric", "value", "ci_low", "ci_high", "delta_vs_baseline",
                "delta_ci_low", "delta_ci_high", "p_value", "p_holm", "significant"])
    for d, ds in result.datasets.items():
        for n in result.retriever_names:
            cell = ds.retrievers.get(n)
            if cell is None or not cell.applicable:
                continue
            for m, v in cell.scores.items():
                low, high = cell.ci[m]
                t = cell.vs_baseline.get(m)
                w.writerow([d, n, m, f"{v:.6f}", f"{low:.6f}", f"{high:.6f}",
                            *(["", "", "", "", "", ""] if not t else
                              [f"{t.delta:.6f}", f"{t.delta_ci[0]:.6f}", f"{t.delta_ci[1]:.6f}",
                               f"{t.p_value:.6g}", f"{t.p_holm:.6g}", t.significant])])
    return wide.getvalue(), long.getvalue()


def benchmark_manifest(result: BenchmarkResult) -> dict:
    """The benchmark's ``manifest.json`` (:func:`colmed.core.provenance.run_manifest` plus its inputs)."""
    from colmed.core.provenance import run_manifest

    manifest = run_manifest(asdict(result.config), packages=("statsmodels", "scipy", "datasketch"),
                            kind="colmed-benchmark", command=sys.argv,
                            machine={"platform": platform.platform(), "cpus": os.cpu_count()},
                            skipped=[asdict(s) for s in result.skipped], outputs=list(OUTPUTS[:-1]))
    # The inputs are datasets and retrievers identified by content, not files.
    manifest["inputs"] = {
        "datasets": {d: {k: ds.protocol[k] for k in ("dataset_source", "dataset_fingerprint", "qrels_hash",
                                                      "queries_hash")} for d, ds in result.datasets.items()},
        "retrievers": {r.name: r.identity for r in result.retrievers}}
    return manifest


def write_reports(result: BenchmarkResult, out: str | Path | None = None) -> Path:
    """report.md, ndcg@10.csv, metrics.csv, results.json, benchmark.png and manifest.json, each atomically,
    into ``out`` (default: the config's ``out``)."""
    from colmed.core.io import atomic_write, write_json
    from colmed.eval.report import plot_bars

    out = Path(out or result.config.out)
    with atomic_write(out / "report.md") as f:
        f.write(to_markdown(result))
    wide, long = to_csv(result)
    with atomic_write(out / "ndcg@10.csv") as f:
        f.write(wide)
    with atomic_write(out / "metrics.csv") as f:
        f.write(long)
    write_json(out / "results.json", result.to_dict())
    if result.datasets:
        scores = result.scores("ndcg@10")
        errors = {n: {d: result.cell(n, d).ci["ndcg@10"] for d in per} for n, per in scores.items()}
        plot_bars(scores, result.dataset_names, out / "benchmark.png",
                  title=f"nDCG@10 ({round(result.config.confidence * 100)}% bootstrap CI)", errors=errors)
    write_json(out / "manifest.json", benchmark_manifest(result))
    return out
