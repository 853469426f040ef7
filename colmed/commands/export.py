"""``colmed export``: write a trained model in another library's format.

Example:
    colmed export colbert --model runs/colbert --out runs/colbert-stanford
"""

from __future__ import annotations

import click


@click.group(name="export")
def group():
    """Write a trained model in another library's format."""


@group.command(name="colbert")
@click.option("--model", required=True, help="ColBERT model folder (a MultiVectorEncoder: colmed train colbert's).")
@click.option("--out", required=True, type=click.Path(), help="Folder to write the Stanford ColBERT checkpoint to.")
@click.option("--overwrite", is_flag=True, help="Replace --out if it holds a colmed model.")
@click.option("--allow-convention-mismatch", is_flag=True,
              help="Export a model whose markers, [MASK] query expansion or skiplist the Stanford format cannot "
                   "express, with Stanford's in their place; the differences go into manifest.json.")
def colbert(model, out, overwrite, allow_convention_mismatch):
    """Export a ColBERT as a Stanford checkpoint.

    The folder is a Stanford HF_ColBERT checkpoint, which colbert-ai, RAGatouille and PyLate load.
    colbert-ai loads the export and encodes probe texts before it is kept; an exact export must encode
    as the model does. A model whose conventions the format cannot express is refused unless
    --allow-convention-mismatch is given.

    \b
    colmed export colbert --model runs/colbert --out runs/colbert-stanford
    """
    from colmed.colbert.export import export_stanford
    from colmed.commands._common import info, quiet_libraries

    quiet_libraries()
    info(f"exporting {model} as a Stanford ColBERT checkpoint ...")
    manifest = export_stanford(model, out, overwrite=overwrite, allow_convention_mismatch=allow_convention_mismatch)
    check = manifest["colbert_ai_check"]
    config = manifest["colbert_config"]
    shape = (f"{config['dim']}-d, queries [MASK]-expanded to {config['query_maxlen']} tokens, documents up to "
             f"{config['doc_maxlen']}")
    if manifest["convention_mismatches"]:
        differ = ", ".join(d["convention"] for d in manifest["convention_mismatches"])
        click.echo(f"warning: {out} does not encode as {model} does; conventions changed: {differ} "
                   "(see manifest.json convention_mismatches)", err=True)
        click.echo(f"wrote {out} ({shape}; colbert-ai loads it)")
    else:
        click.echo(f"wrote {out} ({shape}; colbert-ai encodes {check['queries']} probe queries and "
                   f"{check['documents']} documents as the model does, max |difference| {check['max_abs_diff']:.1e})")
