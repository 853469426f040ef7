"""``colmed benchmark``: retrievers x a benchmark suite, cached, with CIs, Holm-corrected tests and a
published-figure check."""

from __future__ import annotations

import click


@click.command("benchmark")
@click.option("--retriever", "retrievers", multiple=True,
              help="[NAME=]bm25 | dense:<model> | colbert:<checkpoint> | index:<dir> (repeat). index:<dir> "
                   "benchmarks an index from `colmed index` as built, on the dataset it was built over.")
@click.option("--suite", default=None, help="Suite from the dataset registry (default: medical).")
@click.option("--dataset", "datasets", multiple=True,
              help="Registered dataset name or BEIR folder (repeat); overrides --suite.")
@click.option("--data-dir", default=None, type=click.Path(),
              help="Folder of local BEIR datasets (<data-dir>/<name>), e.g. ../shared/beir; else the hub.")
@click.option("--baseline", default=None, help="Retriever name the others are tested against (default: the first).")
@click.option("--compare", "comparisons", multiple=True, metavar="A:B",
              help="Also test retriever A against retriever B (repeat; Holm-corrected across the pairs), e.g. "
                   "dense-trained:dense-base.")
@click.option("--check-published", is_flag=True, default=None,
              help="Put colmed's figures beside the published ones (eval/data/published.yaml) and flag gaps.")
@click.option("--tolerance", type=float, default=None, help="Allowed |colmed - published| nDCG@10 (default: 0.02).")
@click.option("--out", default=None, type=click.Path(), help="Benchmark folder (reports + cache/).")
@click.option("--cache-dir", default=None, type=click.Path(),
              help="Index/run cache (default <out>/cache). Keyed by content, so several benchmarks or studies "
                   "can share one and compute a retriever once.")
@click.option("--config", "config_path", default=None, type=click.Path(), help="YAML config; flags override it.")
@click.option("--k", type=int, default=None, help="Documents retrieved per query (default 100).")
@click.option("--test", "stat_test", type=click.Choice(["student", "fisher"]), default=None,
              help="Paired significance test (default: student).")
@click.option("--bootstrap-resamples", type=int, default=None, help="Bootstrap resamples for the CIs (default 2000).")
@click.option("--index-type", type=click.Choice(["flat", "hnsw", "ivfpq"]), default=None,
              help="Dense retrievers: faiss index type (default flat = exact).")
@click.option("--batch-size", type=int, default=None)
@click.option("--device", default=None)
@click.option("--backend", type=click.Choice(["torch", "openvino"]), default=None,
              help="Dense and ColBERT retrievers: encoder engine [torch]; openvino needs colmed[openvino].")
@click.option("--quantize", type=click.Choice(["none", "bf16", "int8"]), default=None,
              help="Dense and ColBERT retrievers, --backend openvino: int8, bf16 or none (fp32) [none].")
def command(retrievers, suite, datasets, data_dir, baseline, comparisons, check_published, tolerance, out, cache_dir, config_path, k,
            stat_test, bootstrap_resamples, index_type, batch_size, device, backend, quantize):
    """Evaluate retrievers on a suite: MedEmbed-style tables (nDCG@10 with 95% CIs, Recall@100, MRR@10),
    Holm-corrected significance against a baseline, CSV/JSON/PNG and a manifest. Indexes and runs are
    cached in <out>/cache (or --cache-dir), so adding a retriever only computes the new one.

    \b
    colmed benchmark --retriever bm25 --retriever dense:sentence-transformers/all-MiniLM-L6-v2 \\
        --suite medical --data-dir ../shared/beir --check-published --out runs/bench
    """
    from colmed.commands._common import info, quiet_libraries
    from colmed.core.errors import InputError
    from colmed.benchmark import BenchmarkConfig, run_benchmark

    quiet_libraries()
    overrides = dict(retrievers=list(retrievers), suite=suite, datasets=list(datasets), data_dir=data_dir,
                     baseline=baseline, comparisons=list(comparisons), check_published=check_published, tolerance=tolerance, out=out, cache_dir=cache_dir, k=k,
                     stat_test=stat_test, bootstrap_resamples=bootstrap_resamples, index_type=index_type,
                     batch_size=batch_size, device=device, backend=backend, quantize=quantize)
    if config_path:
        config = BenchmarkConfig.from_yaml(config_path, **overrides)
    else:
        if not out:
            raise InputError("--out is required (the benchmark folder)", field="out")
        config = BenchmarkConfig(**{k: v for k, v in overrides.items() if v is not None and v != []})
    result = run_benchmark(config, log=info)  # status lines on stderr, silent with --quiet
    _print_summary(result)
    click.echo(f"wrote {config.out}/report.md, ndcg@10.csv, metrics.csv, results.json, benchmark.png, manifest.json")


def _print_summary(result) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from colmed.benchmark.report import ndcg_cells

    table = Table(title="nDCG@10 (95% CI); ▲/▼ = significantly better/worse than the baseline (Holm)")
    for h in ["retriever", *result.dataset_names, "average"]:
        table.add_column(h, justify="left" if h == "retriever" else "right")
    for row, cells in ndcg_cells(result, sep="\n"):
        n = row["retriever"]
        cells = [escape(c) for c in cells]
        avg = "n/a" if row["average"] is None else f"{row['average']:.4f}"
        table.add_row(n + (" (baseline)" if n == result.baseline else ""), *cells, avg)
    console = Console(stderr=False)
    console.print(table)
    if result.skipped:  # each was reported in one line as it happened
        console.print(f"skipped: {', '.join(s.dataset for s in result.skipped)} (see report.md)", markup=False)
    from colmed.eval.published import published_row_line

    for r in result.published or []:
        console.print(published_row_line(r), markup=False)
