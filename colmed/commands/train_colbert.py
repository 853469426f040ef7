"""``colmed train colbert``: train a ColBERTv2 model with colbert-ai on colmed triplets.

Example:
    colmed train colbert --triplets runs/nfcorpus-triplets --base path/to/all-MiniLM-L6-v2 \\
        --out runs/colbert-minilm --max-steps 300 --batch-size 16 --learning-rate 3e-5

Settings come from the dataclass defaults, then ``--config cfg.yaml``, then explicit flags. The flags
share their names with ``colmed train bi-encoder``; colbert-ai's spellings (``--maxsteps``, ``--bsize``,
``--lr``, ``--doc-maxlen``, ``--query-maxlen``, and ``--warmup`` in steps) still work.
"""

from __future__ import annotations

from pathlib import Path

import click

from colmed.commands.train_options import old_spelling, resolve_old_spellings

OLD_SPELLINGS = {"maxsteps": "max_steps", "bsize": "batch_size", "lr": "learning_rate",
                 "doc_maxlen": "max_doc_length", "query_maxlen": "max_query_length"}


@click.command(name="colbert")
@click.option("--triplets", default=None, help="triplets.jsonl or a folder holding it (data_gen TripletRecord lines).")
@click.option("--base", "base_model", default=None,
              help="ColBERT checkpoint or BERT-like model: hub name or local folder.")
@click.option("--out", default=None, help="Checkpoint folder to write.")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="YAML file of ColbertTrainingConfig fields (flag names with underscores).")
@click.option("--nway", type=int, default=None, help="1 positive + (nway-1) negatives per query [auto].")
@click.option("--batch-size", type=int, default=None, help="Queries per batch [32].")
@click.option("--learning-rate", type=float, default=None, help="Learning rate [1e-5].")
@click.option("--max-steps", type=int, default=None, help="Training steps; -1 trains for --epochs [500].")
@click.option("--epochs", type=float, default=None, help="Passes over the triplets when --max-steps is -1 [1].")
@click.option("--warmup-ratio", type=float, default=None, help="Fraction of steps of linear warmup, then linear decay [0].")
@click.option("--max-doc-length", type=int, default=None, help="Document tokens [180].")
@click.option("--max-query-length", type=int, default=None, help="Query tokens [32].")
@click.option("--dim", type=int, default=None, help="Token embedding size [the base checkpoint's, else 128].")
@click.option("--ib-negatives/--no-ib-negatives", "use_ib_negatives", default=None,
              help="Add in-batch negatives to the loss [on].")
@click.option("--distill/--no-distill", default=None, help="Distil teacher_scores (KL) instead of one-hot [off].")
@click.option("--split", default=None, help="Which records' split to train on [train].")
@click.option("--seed", type=int, default=None, help="Order of training examples [12345].")
@old_spelling("--maxsteps", int)
@old_spelling("--bsize", int)
@old_spelling("--lr", float)
@old_spelling("--doc-maxlen", int)
@old_spelling("--query-maxlen", int)
@old_spelling("--warmup", int)
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def command(config_path, overwrite, quiet, **flags):
    """Train a ColBERTv2 model with colbert-ai on triplets; save a colbert-ai/RAGatouille/PyLate checkpoint."""
    import dataclasses

    from colmed.colbert.training import ColbertTrainingConfig, train_colbert
    from colmed.core.errors import InputError

    warmup_steps = flags.pop("old_warmup")
    given = resolve_old_spellings(flags, OLD_SPELLINGS)
    config = (ColbertTrainingConfig.from_yaml(config_path, given) if config_path
              else ColbertTrainingConfig.from_dict(given))
    if warmup_steps is not None:  # the old --warmup counted steps; the shared vocabulary has a ratio
        if config.max_steps < 1:
            raise InputError("--warmup (steps) needs --max-steps; use --warmup-ratio", field="warmup_ratio")
        config = dataclasses.replace(config, warmup_ratio=warmup_steps / config.max_steps)
    manifest = train_colbert(config, overwrite=overwrite, progress=not quiet)
    click.echo(f"wrote {config.out} ({manifest['steps']} steps, {manifest['training_seconds']:.0f}s, "
               f"final loss {manifest['final_loss']:.4f}, {manifest['data']['examples']} triplets, "
               f"nway {manifest['config']['nway']})")
