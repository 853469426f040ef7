"""``colmed train colbert``: train a ColBERTv2 model with colbert-ai on colmed triplets.

Example:
    colmed train colbert --triplets runs/nfcorpus-triplets --base path/to/all-MiniLM-L6-v2 \\
        --out runs/colbert-minilm --maxsteps 300 --bsize 16 --lr 3e-5

Settings come from the dataclass defaults, then ``--config cfg.yaml``, then explicit flags.
"""

from __future__ import annotations

from pathlib import Path

import click


@click.command(name="colbert")
@click.option("--triplets", required=True, type=click.Path(path_type=Path),
              help="triplets.jsonl or a folder holding it (data_gen TripletRecord lines).")
@click.option("--base", default=None, help="ColBERT checkpoint or BERT-like model: hub name or local folder.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Checkpoint folder to write.")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="YAML file of ColbertTrainingConfig fields (flag names with underscores).")
@click.option("--nway", type=int, default=None, help="1 positive + (nway-1) negatives per query [auto].")
@click.option("--bsize", type=int, default=None, help="Queries per batch [32].")
@click.option("--lr", type=float, default=None, help="Learning rate [1e-5].")
@click.option("--maxsteps", type=int, default=None, help="Training steps [500].")
@click.option("--warmup", type=int, default=None, help="Linear warmup steps, then linear decay [none].")
@click.option("--doc-maxlen", type=int, default=None, help="Document tokens [180].")
@click.option("--query-maxlen", type=int, default=None, help="Query tokens [32].")
@click.option("--dim", type=int, default=None, help="Token embedding size [the base checkpoint's, else 128].")
@click.option("--ib-negatives/--no-ib-negatives", "use_ib_negatives", default=None,
              help="Add in-batch negatives to the loss [on].")
@click.option("--distill/--no-distill", default=None, help="Distil teacher_scores (KL) instead of one-hot [off].")
@click.option("--split", default=None, help="Which records' split to train on [train].")
@click.option("--seed", type=int, default=None, help="Order of training examples [12345].")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def command(triplets, base, out, config_path, nway, bsize, lr, maxsteps, warmup, doc_maxlen, query_maxlen, dim,
            use_ib_negatives, distill, split, seed, overwrite, quiet):
    """Train a ColBERTv2 model with colbert-ai on triplets; save a colbert-ai/RAGatouille/PyLate checkpoint."""
    from colmed.colbert.training import ColbertTrainingConfig, train_colbert

    config = ColbertTrainingConfig.from_yaml(config_path) if config_path else ColbertTrainingConfig()
    config = config.merged(base=base, nway=nway, bsize=bsize, lr=lr, maxsteps=maxsteps, warmup=warmup,
                           doc_maxlen=doc_maxlen, query_maxlen=query_maxlen, dim=dim,
                           use_ib_negatives=use_ib_negatives, distill=distill, split=split, seed=seed)
    manifest = train_colbert(triplets, out, config, overwrite=overwrite, progress=not quiet)
    click.echo(f"wrote {out} ({manifest['steps']} steps, {manifest['training_seconds']:.0f}s, "
               f"final loss {manifest['final_loss']:.4f}, {manifest['data']['examples']} triplets, "
               f"nway {manifest['config']['nway']})")
