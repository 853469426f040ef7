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
    from pathlib import Path

    from colmed.commands._common import quiet_libraries
    from colmed.core.errors import InputError
    from colmed.core.io import atomic_write, write_json
    from colmed.data.datasets import load_dataset
    from colmed.eval.evaluation import DEFAULT_METRICS, compare_runs
    from colmed.eval.protocol import check_comparable, check_prompts, protocol_record, read_sidecar
    from colmed.data.registry import get_spec
    from colmed.eval.report import plot_bars, print_table, to_markdown
    from colmed.data.runs import read_trec

    quiet_libraries()
    named = {}
    for item in runs:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = Path(item).name.removesuffix(".trec").removesuffix(".txt"), item
        if name in named:
            raise InputError(f"two runs are named {name!r}; name them with NAME=PATH", path=path)
        named[name] = path
    sidecars = {p: read_sidecar(p) for p in named.values()}
    check_comparable(sidecars)
    check_prompts(sidecars, allow_prompt_ablation=allow_prompt_ablation)
    ds = load_dataset(dataset, split=split, require_corpus=False)
    spec = get_spec(ds.name)
    exclude = (spec.exclude_self_hits if spec else False) if self_hits == "auto" else self_hits == "exclude"
    loaded = {n: read_trec(p) for n, p in named.items()}
    metrics = list(metrics) or list(DEFAULT_METRICS)
    comp = compare_runs(ds, loaded, metrics, stat_test=stat_test, max_p=max_p, exclude_self=exclude,
                        fuse=fuse, dataset_name=ds.name)
    ks = {sc.get("k") for sc in sidecars.values() if sc and sc.get("k") is not None}
    comp.protocol = protocol_record(ds, k=ks.pop() if len(ks) == 1 else None, exclude_self_hits=exclude,
                                    metrics=metrics, stat_test=stat_test,
                                    correction="none (pairwise markers; use colmed benchmark for Holm-corrected "
                                               "tests against a baseline)")
    comp.protocol["prompts"] = {n: {"query": (sc or {}).get("index", {}).get("query_prompt"),
                                    "document": (sc or {}).get("index", {}).get("document_prompt")}
                                for n, sc in zip(named, sidecars.values()) if sc}
    comp.protocol["prompt_ablation_allowed"] = allow_prompt_ablation
    print_table(comp, title=f"{ds.name} ({split}, {len(ds.qrels)} judged queries)")
    out = Path(out or f"compare-{ds.name}")
    with atomic_write(out / "report.md") as f:
        f.write(f"# colmed compare: {ds.name}\n\n" + to_markdown(comp, f"{ds.name} ({split})"))
    write_json(out / "comparison.json", comp.to_dict())
    plot_bars(comp.scores, metrics, out / "comparison.png", title=f"{ds.name} ({split})")
    click.echo(f"wrote {out}/report.md, comparison.json, comparison.png")
