"""``colmed train colbert``: train a ColBERT (sentence-transformers MultiVectorEncoder) on colmed triplets.

Example:
    colmed train colbert --triplets runs/nfcorpus-triplets --base path/to/all-MiniLM-L6-v2 \\
        --out runs/colbert-minilm --max-steps 300 --batch-size 16 --learning-rate 3e-5

Settings come from the dataclass defaults, then ``--config cfg.yaml``, then explicit flags. The flags
are ``colmed train bi-encoder``'s and mean the same; colbert-ai's spellings (``--maxsteps``,
``--bsize``, ``--lr``, ``--doc-maxlen``, ``--query-maxlen``, and ``--warmup`` in steps) still work.
Multi-GPU: ``torchrun --nproc_per_node 4 -m colmed.cli train colbert ...`` (same flags).
"""

from __future__ import annotations

from pathlib import Path

import click

from colmed.core.errors import InputError

from colmed.commands.train_options import old_spelling, resolve_old_spellings

OLD_SPELLINGS = {"maxsteps": "max_steps", "bsize": "batch_size", "lr": "learning_rate",
                 "doc_maxlen": "max_doc_length", "query_maxlen": "max_query_length"}


@click.command(name="colbert")
@click.option("--triplets", default=None, help="triplets.jsonl or a folder holding it (data_gen TripletRecord lines).")
@click.option("--base", "base_model", default=None,
              help="ColBERT checkpoint (MultiVectorEncoder, PyLate, Stanford) or a sentence-transformers/BERT model.")
@click.option("--out", default=None, help="Model folder to write (refused if it exists).")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="YAML file of ColbertTrainingConfig fields (flag names with underscores).")
@click.option("--num-negatives", type=int, default=None,
              help="Mined hard negatives per query, as for train bi-encoder (= --nway minus 1) [auto: the fewest "
                   "any train record has].")
@click.option("--nway", type=int, default=None, help="1 positive + (nway-1) mined negatives per query [auto].")
@click.option("--batch-size", type=int, default=None, help="Queries per batch (per device) [32].")
@click.option("--learning-rate", type=float, default=None, help="Learning rate [1e-5].")
@click.option("--max-steps", type=int, default=None, help="Training steps; -1 trains for --epochs [500].")
@click.option("--epochs", type=float, default=None, help="Passes over the triplets when --max-steps is -1 [1].")
@click.option("--warmup-ratio", type=float, default=None, help="Fraction of steps of linear warmup [0].")
@click.option("--temperature", type=float, default=None, help="Loss temperature; scale = 1/temperature [1].")
@click.option("--loss", type=click.Choice(["mnrl", "cached_mnrl"]), default=None,
              help="mnrl, or cached_mnrl (GradCache) for big batches on small GPUs [mnrl].")
@click.option("--mini-batch-size", type=int, default=None, help="cached_mnrl: sub-batch size [32].")
@click.option("--distill/--no-distill", default=None,
              help="Distil the records' teacher_scores (KL divergence) instead of --loss [off].")
@click.option("--max-doc-length", type=int, default=None, help="Document tokens, for a model built from a base [256].")
@click.option("--max-query-length", type=int, default=None, help="Query tokens, for a model built from a base [32].")
@click.option("--dim", type=int, default=None,
              help="Token embedding size for a model built from a base: its hidden size = no projection, "
                   "smaller = PCA-initialised projection [128].")
@click.option("--pca-passages", type=int, default=None, help="Training passages the PCA projection is fit on [2000].")
@click.option("--seed", type=int, default=None, help="Random seed [12345].")
@click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default=None,
              help="auto = bf16/fp16 on GPU, fp32 on CPU [auto].")
@click.option("--dev", default=None,
              help="'triplets' (dev split of the triplets), a BEIR folder/hub name, or 'none' [triplets].")
@click.option("--dev-max-queries", type=int, default=None, help="Cap on dev queries [500].")
@click.option("--eval-steps", type=int, default=None, help="Evaluate and checkpoint every N steps (0 = per epoch) [0].")
@click.option("--checkpoint-dir", default=None, help="Where resumable checkpoints go [<out>.checkpoints].")
@click.option("--keep-checkpoints", is_flag=True, default=None, help="Keep checkpoints after success.")
@old_spelling("--maxsteps", int)
@old_spelling("--bsize", int)
@old_spelling("--lr", float)
@old_spelling("--doc-maxlen", int)
@old_spelling("--query-maxlen", int)
@old_spelling("--warmup", int)
@click.option("--resume", is_flag=True, help="Continue from the newest checkpoint of an interrupted run.")
@click.option("--overwrite", is_flag=True, help="Replace --out if it exists and discard old checkpoints.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def command(config_path, resume, overwrite, quiet, dev, **flags):
    """Train a ColBERT (MultiVectorEncoder) on triplets with the sentence-transformers trainer."""
    import dataclasses

    from colmed.colbert.training import ColbertTrainingConfig, train_colbert

    warmup_steps = flags.pop("old_warmup")
    num_negatives = flags.pop("num_negatives")
    if num_negatives is not None:
        if flags["nway"] is not None and flags["nway"] != num_negatives + 1:
            raise InputError(f"--num-negatives {num_negatives} contradicts --nway {flags['nway']}", field="nway")
        flags["nway"] = num_negatives + 1
    given = resolve_old_spellings(flags, OLD_SPELLINGS)
    if dev is not None:
        given["dev"] = None if dev.lower() == "none" else dev
    config = (ColbertTrainingConfig.from_yaml(config_path, given) if config_path
              else ColbertTrainingConfig.from_dict(given))
    if warmup_steps is not None:  # the old --warmup counted steps; the shared vocabulary has a ratio
        if config.max_steps < 1:
            raise InputError("--warmup (steps) needs --max-steps; use --warmup-ratio", field="warmup_ratio")
        config = dataclasses.replace(config, warmup_ratio=warmup_steps / config.max_steps)
    manifest = train_colbert(config, overwrite=overwrite, progress=not quiet, resume=resume)
    if not manifest:  # not the main process of a multi-process run
        return
    base = manifest["metrics"]["base_dev"].get("dev_ndcg@10")
    best = manifest["metrics"]["best_dev"]
    dev_line = (f"dev ndcg@10 untrained {base:.4f} -> best {best:.4f}" if base is not None and best is not None
                else "no dev evaluation")
    loss = manifest["final_loss"]
    click.echo(f"wrote {config.out} ({manifest['global_steps']} steps, {manifest['train_seconds']:.0f}s, "
               f"final loss {loss if loss is None else format(loss, '.4f')}, {manifest['data']['examples']} triplets, "
               f"nway {manifest['config']['nway']}, {manifest['conventions']['dim']}-d; {dev_line})")
