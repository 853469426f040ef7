"""``colmed demo``: the offline end-to-end demo (BM25 vs MiniLM on the bundled medical sample)."""

from __future__ import annotations

import click


@click.command("demo")
@click.option("--out", default="colmed-demo", show_default=True, type=click.Path(), help="Output folder.")
@click.option("--dataset", default=None, help="A BEIR folder or hub name instead of the bundled sample.")
@click.option("--model", default=None, help="Dense model (default: packaged all-MiniLM-L6-v2).")
def command(out, dataset, model):
    """Index, search and compare BM25, all-MiniLM-L6-v2 and their RRF fusion, offline on CPU.

    Writes indexes/, runs/, report.md, comparison.json and comparison.png under --out.
    """
    from colmed.commands._common import info, quiet_libraries
    from colmed.demo import run_demo
    from colmed.eval.report import print_table

    quiet_libraries()
    comparison = run_demo(out, dataset=dataset, model=model, echo=info)
    print_table(comparison, title=f"{comparison.dataset}: BM25 vs all-MiniLM-L6-v2")
    click.echo(f"report: {out}/report.md, plot: {out}/comparison.png")
