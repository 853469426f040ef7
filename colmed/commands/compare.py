"""``colmed compare``: evaluate runs on a dataset's qrels with ranx, test significance, write a report."""

from __future__ import annotations

import click


@click.command("compare")
@click.option("--dataset", required=True, help="Local BEIR folder or hub name whose qrels judge the runs.")
@click.option("--split", default="test", show_default=True)
@click.option("--run", "runs", multiple=True, required=True, type=click.Path(),
              help="TREC run file (repeat). Name a run with NAME=PATH.")
@click.option("--fuse", default=None, help="Also evaluate a fusion of all runs (rrf, combsum, ...).")
@click.option("--test", "stat_test", type=click.Choice(["student", "fisher"]), default="student",
              show_default=True, help="Paired t-test or Fisher randomization test.")
@click.option("--max-p", type=float, default=0.05, show_default=True, help="Significance level.")
@click.option("--metric", "metrics", multiple=True, help="ranx metric (repeat); default nDCG@10, R@100, MAP@100, MRR@10.")
@click.option("--self-hits", type=click.Choice(["auto", "exclude", "keep"]), default="auto", show_default=True,
              help="Drop a query's own id from its results; auto = as the dataset's protocol says (ArguAna).")
@click.option("--allow-prompt-ablation", is_flag=True,
              help="Allow runs of the same model made with different query/document prompts (a prompt ablation).")
@click.option("--out", default=None, type=click.Path(), help="Report folder (default: compare-<dataset>).")
def command(dataset, split, runs, fuse, stat_test, max_p, metrics, self_hits, allow_prompt_ablation, out):
    """Compare runs: a table with significance markers, report.md, comparison.json and comparison.png.

    \b
    colmed compare --dataset ../shared/beir/nfcorpus --run bm25.trec --run dense.trec --fuse rrf
    """
    from colmed.commands._common import quiet_libraries
    from colmed.eval.compare import compare_trec_runs
    from colmed.eval.report import print_table, write_comparison

    quiet_libraries()
    comp = compare_trec_runs(dataset, list(runs), split=split, metrics=list(metrics) or None, fuse=fuse,
                             stat_test=stat_test, max_p=max_p,
                             exclude_self_hits={"auto": None, "exclude": True, "keep": False}[self_hits],
                             allow_prompt_ablation=allow_prompt_ablation)
    print_table(comp, title=f"{comp.dataset} ({split}, {comp.protocol['judged_queries']} judged queries)")
    out = write_comparison(comp, out or f"compare-{comp.dataset}", f"colmed compare: {comp.dataset}",
                           f"{comp.dataset} ({split})")
    click.echo(f"wrote {out}/report.md, comparison.json, comparison.png")
