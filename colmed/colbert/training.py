"""Train a ColBERTv2 model on colmed triplets with colbert-ai, and save a checkpoint others can load.

The output folder is a colbert-ai checkpoint (``config.json``, ``model.safetensors``, tokenizer files and
``artifact.metadata`` with the ColBERT settings), which colbert-ai, RAGatouille and PyLate load directly,
plus colmed's ``manifest.json`` (config, versions, data hash, time, loss curve) and ``train.log``
(colbert-ai's own output). It is built in a temp sibling and renamed at the end, so a crash leaves nothing
half-written, and an existing folder is only replaced with ``overwrite=True``.

colbert-ai 0.2.22 cannot resume training (its resume code is commented out upstream), so an interrupted
run restarts from the base model.

Example (not run as a doctest: it needs a trained ColBERT checkpoint and colbert-ai's C++ extensions,
compiled once in ~2.5 min; ``tests/test_colbert.py`` runs this path on a tiny model):
    >>> from colmed.colbert.training import ColbertTrainingConfig, train_colbert
    >>> cfg = ColbertTrainingConfig(base_model="path/to/all-MiniLM-L6-v2", triplets="runs/triplets/",
    ...                             out="runs/colbert-minilm", max_steps=20, batch_size=8)
    >>> manifest = train_colbert(cfg)                                    # doctest: +SKIP
    >>> manifest["final_loss"] < manifest["loss_curve"][0][1]            # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from colmed.core import config as config_io
from colmed.core.errors import IndexExistsError, InputError
from colmed.core.io import atomic_directory, read_jsonl, sha256_file, write_json
from colmed.data.triplets import TripletRecord


@dataclass
class ColbertTrainingConfig:
    """Settings of one ``colmed train colbert`` run; every field is also a CLI flag and a YAML key.

    The hyperparameters carry the names :class:`~colmed.bi_encoder.config.BiEncoderTrainingConfig` uses
    (``batch_size``, ``learning_rate``, ``epochs``, ``max_steps``, ``warmup_ratio``, ``max_query_length``,
    ``max_doc_length``, ``seed``); :func:`colbert_settings` maps them to colbert-ai's own. ``max_steps``
    of -1 trains for ``epochs`` passes over the usable triplets instead. ``nway`` is 1 positive +
    (nway-1) hard negatives per query; ``None`` picks the smallest number of negatives any usable record
    has, plus one. ``distill`` trains on ``teacher_scores`` (KL divergence, colbert-ai's distillation)
    instead of the one-hot positive. ``seed`` orders the training examples; colbert-ai seeds torch itself
    with 12345. ``dim`` (token embedding size) defaults to the base checkpoint's when it is a ColBERT
    checkpoint, else 128.

    Example:
        >>> cfg = ColbertTrainingConfig(base_model="m", batch_size=16, max_steps=200, warmup_ratio=0.1)
        >>> s = colbert_settings(cfg, nway=2)
        >>> s["bsize"], s["maxsteps"], s["warmup"], s["lr"], s["query_maxlen"], s["doc_maxlen"]
        (16, 200, 20, 1e-05, 32, 180)
    """

    base_model: str = ""
    triplets: str = ""
    out: str = ""
    nway: int | None = None
    batch_size: int = 32
    learning_rate: float = 1e-5
    epochs: float = 1.0
    max_steps: int = 500
    warmup_ratio: float = 0.0
    max_doc_length: int = 180
    max_query_length: int = 32
    dim: int | None = None
    use_ib_negatives: bool = True
    distill: bool = False
    distillation_alpha: float = 1.0
    split: str = "train"
    seed: int = 12345

    def __post_init__(self) -> None:
        config_io.check_types(self)
        checks = [("batch_size", self.batch_size >= 1, "must be >= 1"),
                  ("max_steps", self.max_steps >= 1 or self.max_steps == -1,
                   "must be >= 1, or -1 to train for `epochs`"),
                  ("epochs", self.epochs > 0, "must be > 0"),
                  ("learning_rate", self.learning_rate > 0, "must be > 0"),
                  ("warmup_ratio", 0 <= self.warmup_ratio < 1, "must be in [0, 1)"),
                  ("dim", self.dim is None or self.dim >= 1, "must be >= 1"),
                  ("nway", self.nway is None or self.nway >= 2, "must be >= 2 (one positive, >= 1 negative)"),
                  ("max_doc_length", self.max_doc_length >= 8, "must be >= 8"),
                  ("max_query_length", self.max_query_length >= 4, "must be >= 4")]
        for name, ok, message in checks:
            if not ok:
                raise InputError(f"{message}, got {getattr(self, name)}", field=name)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: config_io.Overrides = ()) -> "ColbertTrainingConfig":
        """Read a YAML mapping of fields (types checked, unknown keys refused); ``overrides`` win."""
        return config_io.from_yaml(cls, path, overrides)

    @classmethod
    def from_dict(cls, values: dict[str, Any], path: str | Path | None = None) -> "ColbertTrainingConfig":
        return config_io.from_dict(cls, values, path=path)

    def to_dict(self) -> dict[str, Any]:
        return config_io.to_dict(self)

    def validate(self) -> None:
        """What a run needs beyond well-formed settings: a base model, triplets and an output folder."""
        for name, what in (("base_model", "a colbert checkpoint or a BERT-like model"),
                           ("triplets", "triplets.jsonl or a folder holding it"), ("out", "the folder to write")):
            if not getattr(self, name):
                raise InputError(f"required: {what}", field=name)

    def total_steps(self, num_examples: int) -> int:
        """``max_steps``, or enough steps for ``epochs`` passes over ``num_examples`` when it is -1."""
        if self.max_steps > 0:
            return self.max_steps
        return max(1, math.ceil(self.epochs * num_examples / self.batch_size))


def colbert_settings(config: ColbertTrainingConfig, nway: int, steps: int | None = None) -> dict[str, Any]:
    """colmed's trainer vocabulary as colbert-ai ``ColBERTConfig`` fields (the one place that maps them).

    ``steps`` is the run's length (:meth:`ColbertTrainingConfig.total_steps`); by default ``max_steps``.
    """
    steps = steps if steps is not None else config.max_steps
    if steps < 1:
        raise ValueError("max_steps is -1 (train for `epochs`): pass steps=config.total_steps(num_examples)")
    warmup = round(config.warmup_ratio * steps)
    return {"bsize": config.batch_size, "lr": config.learning_rate, "maxsteps": steps, "nway": nway,
            "doc_maxlen": config.max_doc_length, "query_maxlen": config.max_query_length,
            **({"dim": config.dim} if config.dim else {}),
            "use_ib_negatives": config.use_ib_negatives, "warmup": warmup or None,
            "ignore_scores": not config.distill, "distillation_alpha": config.distillation_alpha,
            "accumsteps": 1}


@dataclass
class PreparedTriplets:
    """colbert-ai's in-memory training data plus what was kept and dropped, for the manifest."""

    examples: list[list]
    queries: dict[int, str]
    collection: list[str]
    nway: int
    counts: dict[str, int] = field(default_factory=dict)


def read_triplet_records(path: str | Path) -> tuple[Path, list[tuple[int, TripletRecord]]]:
    """Read triplets from a JSONL file or a folder with ``triplets.jsonl``, keeping line numbers."""
    path = Path(path)
    if path.is_dir():
        path = path / "triplets.jsonl"
    records = [(lineno, TripletRecord.from_dict(rec, path=path, line=lineno)) for lineno, rec in read_jsonl(path)]
    if not records:
        raise InputError("no triplets", path=path)
    return path, records


def prepare_triplets(path: Path, records: list[tuple[int, TripletRecord]], config: ColbertTrainingConfig
                     ) -> PreparedTriplets:
    """Turn triplet records into colbert-ai's (examples, queries, collection), with integer ids.

    Records of another split, or with fewer than ``nway-1`` negatives, are dropped and counted; a query
    or passage id that reappears with different text is an error (the data would be ambiguous).
    """
    usable = [(n, r) for n, r in records if r.split == config.split]
    if not usable:
        raise InputError(f"no records with split {config.split!r}", path=path, field="split")
    nway = config.nway
    if nway is None:
        with_negatives = [len(r.negatives) for _, r in usable if r.negatives]
        if not with_negatives:
            raise InputError("no record has hard negatives; colbert-ai training needs nway >= 2",
                             path=path, field="negatives")
        nway = 1 + min(with_negatives)
    kept = [(n, r) for n, r in usable if len(r.negatives) >= nway - 1]
    if not kept:
        raise InputError(f"no record has the {nway - 1} negatives nway={nway} needs", path=path, field="negatives")

    qids: dict[str, int] = {}
    queries: dict[int, str] = {}
    pids: dict[str, int] = {}
    collection: list[str] = []

    def pid_of(doc_id: str, text: str, lineno: int, field_name: str) -> int:
        if doc_id in pids:
            if collection[pids[doc_id]] != text:
                raise InputError(f"passage id {doc_id!r} appears earlier with different text", path=path,
                                 line=lineno, field=field_name)
            return pids[doc_id]
        if not text.strip():
            raise InputError(f"empty passage {doc_id!r}", path=path, line=lineno, field=field_name)
        pids[doc_id] = len(collection)
        collection.append(text)
        return pids[doc_id]

    examples: list[list] = []
    for lineno, r in kept:
        if r.query_id in qids:
            if queries[qids[r.query_id]] != r.query:
                raise InputError(f"query id {r.query_id!r} appears earlier with different text", path=path,
                                 line=lineno, field="query")
        else:
            if not r.query.strip():
                raise InputError("empty query", path=path, line=lineno, field="query")
            qids[r.query_id] = len(qids)
            queries[qids[r.query_id]] = r.query
        passage_pids = [pid_of(r.positive_id, r.positive, lineno, "positive")]
        passage_pids += [pid_of(i, t, lineno, "negatives") for i, t in zip(r.negative_ids, r.negatives)][:nway - 1]
        if config.distill:
            scores = r.teacher_scores
            if not scores or len(scores) < nway:
                raise InputError(f"--distill needs {nway} teacher scores (positive first, then negatives)",
                                 path=path, line=lineno, field="teacher_scores")
            examples.append([qids[r.query_id], *[[p, float(s)] for p, s in zip(passage_pids, scores)]])
        else:
            examples.append([qids[r.query_id], *passage_pids])

    if len(examples) < config.batch_size:
        raise InputError(f"only {len(examples)} usable triplets, fewer than one batch "
                         f"(batch_size={config.batch_size}); lower --batch-size", path=path)
    counts = {"records": len(records), "other_split": len(records) - len(usable),
              "too_few_negatives": len(usable) - len(kept), "examples": len(examples),
              "queries": len(queries), "passages": len(collection)}
    return PreparedTriplets(examples, queries, collection, nway, counts)


def _epoch_ordered(examples: list[list], steps: int, bsize: int, seed: int) -> tuple[list[list], int]:
    """Shuffle per epoch and repeat until ``steps * bsize`` examples exist (colbert-ai stops when they run out)."""
    rng = random.Random(seed)
    needed = steps * bsize
    ordered: list[list] = []
    epochs = 0
    while len(ordered) < needed:
        epoch = list(examples)
        rng.shuffle(epoch)
        ordered.extend(epoch)
        epochs += 1
    return ordered[:needed], epochs


def train_colbert(config: ColbertTrainingConfig, overwrite: bool = False, progress: bool = True) -> dict[str, Any]:
    """Train on ``config.triplets`` and write the checkpoint folder ``config.out``; returns its manifest."""
    from tqdm.auto import tqdm

    from colmed.colbert import adapter
    from colmed.core.provenance import run_manifest

    config.validate()
    out = Path(config.out)
    if out.exists() and not overwrite:
        raise IndexExistsError(f"{out}: already exists; pass --overwrite to replace it")
    triplets_path, records = read_triplet_records(config.triplets)
    prepared = prepare_triplets(triplets_path, records, config)
    steps = config.total_steps(len(prepared.examples))
    ordered, epochs = _epoch_ordered(prepared.examples, steps, config.batch_size, config.seed)
    settings = colbert_settings(config, prepared.nway, steps)
    losses: list[list[float]] = []
    started = time.time()
    with atomic_directory(out, overwrite=overwrite) as tmp:
        scratch = tmp / ".scratch"
        bar = tqdm(total=steps, desc="colbert train", unit="step", disable=not progress)

        def on_step(step: int, loss: float) -> None:
            losses.append([step + 1, round(loss, 6)])
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")

        try:
            with open(tmp / "train.log", "w", encoding="utf-8") as log:
                checkpoint = adapter.train(adapter.ColbertTrainingData(ordered, prepared.queries, prepared.collection),
                                           config.base_model, tmp / ".checkpoint", settings=settings,
                                           scratch=scratch, on_step=on_step, log=log)
        finally:
            bar.close()
        for item in checkpoint.iterdir():
            shutil.move(str(item), tmp / item.name)
        shutil.rmtree(tmp / ".checkpoint", ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)
        seconds = time.time() - started
        window = max(1, len(losses) // 10)
        manifest = run_manifest(
            config.to_dict() | {"nway": prepared.nway},
            kind="colbert-checkpoint",
            colbert_settings=settings,
            base_model=config.base_model,
            data={"triplets": str(triplets_path.resolve()), "sha256": sha256_file(triplets_path),
                  **prepared.counts, "epochs": epochs, "examples_seen": len(ordered)},
            training_seconds=round(seconds, 2),
            steps=len(losses),
            final_loss=sum(l for _, l in losses[-window:]) / len(losses[-window:]) if losses else None,
            loss_curve=losses,
        )
        write_json(tmp / "manifest.json", manifest)
    return manifest


def load_manifest(checkpoint_dir: str | Path) -> dict[str, Any]:
    """Read the ``manifest.json`` colmed wrote beside a trained checkpoint."""
    path = Path(checkpoint_dir) / "manifest.json"
    if not path.is_file():
        raise InputError("no manifest.json: not a colmed-trained checkpoint", path=checkpoint_dir)
    return json.loads(path.read_text(encoding="utf-8"))
