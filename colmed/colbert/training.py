"""Train a ColBERT model on colmed triplets with sentence-transformers' ``MultiVectorEncoderTrainer``.

The ColBERT family trains exactly as the dense family does (:mod:`colmed.bi_encoder.train`): the same
triplet reading and column layout (:class:`~colmed.bi_encoder.data.TripletTrainingData`), the same
trainer arguments (:func:`colmed.bi_encoder.train.training_arguments`: batch size, learning rate,
steps/epochs, warmup, no-duplicates batches, precision, evaluation and checkpointing), the same resume
and checkpoint-directory rules, and dev nDCG@10 through ranx keeping the best checkpoint. Only the model
class and the loss differ: a :class:`~sentence_transformers.MultiVectorEncoder` (see
:mod:`colmed.colbert.multivector` for the start points) trained with the MaxSim variants of
MultipleNegativesRankingLoss or its GradCache form (``loss: cached_mnrl``), in-batch and mined hard
negatives, ``scale = 1/temperature``.

On disk::

    <out>/                   the finished MultiVectorEncoder: MultiVectorEncoder(<out>) loads it (its query and
                             document conventions included); README.md model card; manifest.json
    <out>.checkpoints/       resumable trainer checkpoints (removed after success unless keep_checkpoints)

As for the dense family: one writer per ``out`` for the whole run, a run killed at any point resumes with
``--resume`` from its newest complete checkpoint to the same model bytes as an uninterrupted run, and under
``torchrun --nproc_per_node N -m colmed.cli train colbert ...`` the processes train one model data-parallel with
in-batch negatives gathered across them (``tests/test_torchrun.py``).

Example (not run as a doctest: training takes minutes; ``tests/test_colbert_multivector.py`` trains a
tiny model end to end):
    >>> from colmed.colbert.training import ColbertTrainingConfig, train_colbert
    >>> cfg = ColbertTrainingConfig(base_model="path/to/all-MiniLM-L6-v2", triplets="runs/triplets/",
    ...                             out="runs/colbert-minilm", max_steps=20, batch_size=8)
    >>> manifest = train_colbert(cfg)                                    # doctest: +SKIP
    >>> manifest["metrics"]["best_dev"] >= manifest["metrics"]["base_dev"]["dev_ndcg@10"]  # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from colmed.bi_encoder.config import TrainingConfig
from colmed.bi_encoder.dev_eval import RetrievalEvaluator
from colmed.core import config as config_io
from colmed.core.errors import InputError
from colmed.core.io import atomic_directory, check_output, write_json
from colmed.data.datasets import RetrievalDataset

logger = logging.getLogger(__name__)


@dataclass
class ColbertTrainingConfig(TrainingConfig):
    """Settings of one ``colmed train colbert`` run; every field is also a CLI flag and a YAML key.

    The names are :class:`~colmed.bi_encoder.config.BiEncoderTrainingConfig`'s (``batch_size``,
    ``learning_rate``, ``epochs``, ``max_steps``, ``warmup_ratio``, ``weight_decay``, ``temperature``,
    ``loss``, ``mini_batch_size``, ``max_query_length``, ``max_doc_length``, ``seed``, ``precision``,
    ``dev`` ...), and mean the same. ``max_steps`` of -1 trains for ``epochs``. ``nway`` is 1 positive +
    (nway-1) hard negatives per query; ``None`` picks the smallest number of negatives any train record
    has, plus one. ``max_query_length``/``max_doc_length`` and ``dim`` shape a ColBERT built from a
    plain model (they become the saved model's conventions; ``dim`` of the base hidden size means no
    projection, smaller means a PCA-initialised projection over ``pca_passages`` training passages); a
    ColBERT checkpoint keeps its own. ``distill`` trains on the records' ``teacher_scores`` (KL divergence
    between the teacher's and the model's score distributions over the positive and the nway-1
    negatives, no in-batch negatives) instead of ``loss``.

    Example:
        >>> cfg = ColbertTrainingConfig(base_model="m", batch_size=16, max_steps=200, warmup_ratio=0.1)
        >>> cfg.scale, cfg.max_query_length, cfg.max_doc_length, cfg.dim
        (1.0, 32, 256, None)
    """

    # shared settings (TrainingConfig) whose ColBERT defaults differ
    learning_rate: float = 1e-5
    max_steps: int = 500
    warmup_ratio: float = 0.0
    temperature: float = 1.0
    max_query_length: int = 32
    seed: int = 12345
    # ColBERT only
    nway: int | None = None
    distill: bool = False
    dim: int | None = None
    pca_passages: int = 2000
    split: str = "train"

    def __post_init__(self) -> None:
        config_io.check_types(self)
        checks = [("batch_size", self.batch_size >= 1, "must be >= 1"),
                  ("mini_batch_size", self.mini_batch_size >= 1, "must be >= 1"),
                  ("max_steps", self.max_steps >= 1 or self.max_steps == -1,
                   "must be >= 1, or -1 to train for `epochs`"),
                  ("epochs", self.epochs > 0, "must be > 0"),
                  ("learning_rate", self.learning_rate > 0, "must be > 0"),
                  ("temperature", self.temperature > 0, "must be > 0"),
                  ("warmup_ratio", 0 <= self.warmup_ratio < 1, "must be in [0, 1)"),
                  ("dim", self.dim is None or self.dim >= 1, "must be >= 1"),
                  ("pca_passages", self.pca_passages >= 1, "must be >= 1"),
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
        for name, what in (("base_model", "a ColBERT checkpoint or a sentence-transformers/BERT-like model"),
                           ("triplets", "triplets.jsonl or a folder holding it"), ("out", "the folder to write")):
            if not getattr(self, name):
                raise InputError(f"required: {what}", field=name)

    def total_steps(self, num_examples: int) -> int:
        """``max_steps``, or enough steps for ``epochs`` passes over ``num_examples`` when it is -1."""
        if self.max_steps > 0:
            return self.max_steps
        return max(1, math.ceil(self.epochs * num_examples / self.batch_size))


def triplets_file(path: str | Path) -> Path:
    """``triplets.jsonl`` itself, or inside a folder; a missing file is an error naming it."""
    path = Path(path)
    file = path / "triplets.jsonl" if path.is_dir() else path
    if not file.is_file():
        raise InputError("triplets file not found", path=file)
    return file


def auto_nway(path: str | Path, split: str = "train") -> int:
    """1 + the fewest hard negatives any ``split`` record with negatives has (every such record is kept).

    Example:
        >>> import json, tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "triplets.jsonl"
        >>> rec = {"query_id": "q", "query": "a", "positive_id": "p", "positive": "b"}
        >>> _ = p.write_text("\\n".join(json.dumps({**rec, "negative_ids": ids, "negatives": ids})
        ...                            for ids in (["n1", "n2"], ["n1", "n2", "n3"])))
        >>> auto_nway(p)
        3
    """
    from colmed.data.triplets import read_triplets

    file = triplets_file(path)
    counts = [len(r.negatives) for r in read_triplets(file) if r.split == split and r.negatives]
    if not counts:
        raise InputError(f"no {split!r} record has hard negatives; ColBERT training uses nway >= 2", path=file,
                         field="negatives")
    return 1 + min(counts)


class MaxSimRetrievalEvaluator(RetrievalEvaluator):
    """Dev evaluation for ColBERT: exhaustive MaxSim over the dev corpus with the model being trained, ranx metrics.

    The trainer logs ``eval_<name>_ndcg@10`` and keeps the best checkpoint by it, as for the dense family
    (:class:`colmed.bi_encoder.dev_eval.DenseRetrievalEvaluator`, which shares everything but ``retrieve``).
    """

    def __init__(self, dataset: RetrievalDataset, name: str = "dev",
                 metrics: tuple[str, ...] = ("ndcg@10", "mrr@10", "recall@100"), batch_size: int = 32):
        super().__init__(dataset, name=name, metrics=metrics, batch_size=batch_size)

    def retrieve(self, model) -> dict[str, dict[str, float]]:
        from colmed.colbert.multivector import ExhaustiveMaxSim

        doc_ids = list(self.dataset.corpus)
        scorer = ExhaustiveMaxSim(model, doc_ids, [self.dataset.corpus[d].full_text for d in doc_ids],
                                  batch_size=self.batch_size)
        return scorer.search(self.dataset.queries, k=100)


def build_loss(model, config: ColbertTrainingConfig):
    """MaxSim MNRL (in-batch + mined negatives) or its cached (GradCache) form, gathered across processes;
    with ``distill``, KL divergence to the teacher scores.

    The scoring function is the model's own (MaxSim, or MeanMaxSim for a model that scores that way), passed
    explicitly: the losses' default reads it from ``self.model``, which under torchrun the trainer replaces
    with its DistributedDataParallel wrapper, which has no ``similarity``.
    """
    from sentence_transformers.multi_vector_encoder import losses, scoring

    from colmed.bi_encoder.train import _world_size

    mean = str(model.similarity_fn_name) == "meanmaxsim"
    if config.distill:
        return losses.MultiVectorDistillKLDivLoss(
            model, temperature=config.temperature,
            similarity_fct=scoring.mean_colbert_kd_scores if mean else scoring.colbert_kd_scores)
    similarity = scoring.mean_colbert_scores if mean else scoring.colbert_scores
    # Under torchrun each process's queries are scored against every process's documents.
    gather = _world_size() > 1
    if config.loss == "cached_mnrl":
        return losses.CachedMultiVectorMultipleNegativesRankingLoss(
            model, scale=config.scale, similarity_fct=similarity, mini_batch_size=config.mini_batch_size,
            gather_across_devices=gather)
    return losses.MultiVectorMultipleNegativesRankingLoss(model, scale=config.scale, similarity_fct=similarity,
                                                          gather_across_devices=gather)


def with_teacher_scores(train, path: str | Path, nway: int, split: str = "train"):
    """``train`` (the shared anchor/positive/negative_i columns) plus a ``label`` column of ``nway`` teacher
    scores per row, positive first: what the distillation loss reads. Every row needs them.

    The rows are matched to the file's usable records in order, as :class:`TripletTrainingData` builds them.
    """
    from colmed.data.triplets import read_triplets

    file = triplets_file(path)
    scores: list[list[float]] = []
    positives: list[str] = []
    for record in read_triplets(file):
        if record.split != split or not record.query.strip() or not record.positive.strip():
            continue
        usable = [i for i, t in zip(record.negative_ids, record.negatives)
                  if i != record.positive_id and t.strip() and t != record.positive]
        if len(usable) < nway - 1:
            continue
        if not record.teacher_scores or len(record.teacher_scores) < nway:
            raise InputError(f"--distill needs {nway} teacher scores per record (positive first, then negatives); "
                             f"query {record.query_id!r} has {len(record.teacher_scores or [])}", path=file,
                             field="teacher_scores")
        if len(usable) != len(record.negatives):
            raise InputError(f"query {record.query_id!r}: a negative equals the positive, so its teacher scores "
                             "no longer line up; remove it from the record", path=file, field="negatives")
        scores.append([float(x) for x in record.teacher_scores[:nway]])
        positives.append(record.positive)
    if len(scores) != len(train) or positives != train["positive"]:
        raise InputError(f"{len(scores)} records with teacher scores for {len(train)} training rows "
                         "(--distill does not combine with max_train_samples)", path=file, field="teacher_scores")
    return train.add_column("label", scores)


def _dev_set(config: ColbertTrainingConfig, data) -> RetrievalDataset | None:
    if not config.dev:
        return None
    if config.dev == "triplets":
        if data.dev is None:
            logger.warning("no dev-split triplets: training without dev evaluation (last step is kept)")
        dev = data.dev
    else:
        from colmed.data.datasets import load_dataset

        dev = load_dataset(config.dev, split=config.dev_split)
    if dev is not None and (config.dev_max_queries or config.dev_max_docs):
        dev = dev.subset(max_queries=config.dev_max_queries, max_docs=config.dev_max_docs)
    return dev


def _pca_sample(train, limit: int) -> list[str]:
    """The first ``limit`` distinct passages (positives, then negatives) of the training rows."""
    seen: dict[str, None] = {}
    for column in [c for c in train.column_names if c == "positive" or c.startswith("negative_")]:
        for text in train[column]:
            seen.setdefault(text)
            if len(seen) >= limit:
                return list(seen)
    return list(seen)


def train_colbert(config: ColbertTrainingConfig, overwrite: bool = False, progress: bool = True,
                  resume: bool = False, callbacks: list | None = None) -> dict[str, Any]:
    """Train on ``config.triplets`` and write the MultiVectorEncoder folder ``config.out``; returns its manifest.

    ``resume`` continues from the newest checkpoint in ``config.checkpoints_path`` (same settings
    required); ``overwrite`` replaces a finished ``config.out`` and discards old checkpoints.
    """
    import torch
    from sentence_transformers import MultiVectorEncoderTrainer, MultiVectorEncoderTrainingArguments

    from colmed.bi_encoder.data import TripletTrainingData
    from colmed.bi_encoder.train import (_record_start, _resolve_precision, _world_size, discard_checkpoints,
                                         gathers_across_processes, model_card_restorer, open_run, run_inputs,
                                         training_arguments)
    from colmed.colbert.multivector import colbert_from_base, conventions

    config.validate()
    # Refused before loading; inputs read before anything is written (open_run below takes the lock and prepares
    # the checkpoints), so a bad argument leaves nothing behind.
    check_output(config.out, overwrite, kind="model", inputs=run_inputs(config))
    if config.split != "train":
        raise InputError("only the 'train' split of the triplets is trained on (dev records evaluate)", field="split")
    nway = config.nway or auto_nway(config.triplets, config.split)
    data = TripletTrainingData.from_path(config.triplets, num_negatives=nway - 1,
                                         max_train_samples=config.max_train_samples, seed=config.seed)
    train = data.train
    if config.distill:
        train = with_teacher_scores(train, config.triplets, nway, config.split)
    if len(train) < config.batch_size:
        raise InputError(f"only {len(train)} usable triplets, fewer than one batch (batch_size={config.batch_size}); "
                         f"lower --batch-size", path=data.source.get("path"))

    model = colbert_from_base(config.base_model, config.dim, query_length=config.max_query_length,
                              document_length=config.max_doc_length,
                              pca_texts=_pca_sample(train, config.pca_passages))
    model.model_card_data.local_files_only = True
    model.model_card_data.train_datasets = [{"name": f"colmed triplets ({Path(config.triplets).name})"}]
    start_conventions = conventions(model)

    dev = _dev_set(config, data)
    evaluator = MaxSimRetrievalEvaluator(dev, batch_size=config.batch_size) if dev is not None else None
    precision = _resolve_precision(config.precision, torch)
    with open_run(config, resume=resume, overwrite=overwrite) as (out, ckpt_dir, last_checkpoint):
        base_dev = _record_start(config, ckpt_dir, model, evaluator, resuming=last_checkpoint is not None)

        args = training_arguments(config, ckpt_dir, num_rows=len(train), precision=precision,
                                  best_metric=f"eval_dev_{evaluator.metrics[0]}" if evaluator is not None else None,
                                  arguments_class=MultiVectorEncoderTrainingArguments,
                                  disable_tqdm=not progress)
        if last_checkpoint is not None:
            callbacks = [*(callbacks or []), model_card_restorer(evaluator, base_dev)]
        loss = build_loss(model, config)
        trainer = MultiVectorEncoderTrainer(model=model, args=args, train_dataset=train,
                                            loss=loss, evaluator=evaluator, callbacks=callbacks)
        started = time.perf_counter()
        trainer.train(resume_from_checkpoint=str(last_checkpoint) if last_checkpoint else None)
        seconds = time.perf_counter() - started
        losses = [[h["step"], h["loss"]] for h in trainer.state.log_history if "loss" in h]
        dev_history = [h for h in trainer.state.log_history if any(k.startswith("eval_") for k in h)]
        manifest: dict[str, Any] = {}
        if trainer.is_world_process_zero():
            from colmed.core.provenance import run_manifest

            manifest = run_manifest(
                config.to_dict() | {"nway": nway}, packages=("datasets", "accelerate"),
                kind="colmed-colbert",
                model_class="MultiVectorEncoder",
                base_model=config.base_model,
                conventions=conventions(model),
                start_conventions=start_conventions,
                loss={"name": "distill_kl" if config.distill else config.loss, "scale": config.scale,
                      "temperature": config.temperature, "negatives_per_query": nway - 1,
                      "in_batch_negatives": not config.distill,
                      "gather_across_processes": gathers_across_processes(loss)},
                precision=precision,
                world_size=_world_size(),
                data={**data.source, "stats": data.stats, "examples": len(train)},
                metrics={"base_dev": base_dev, "best_dev": trainer.state.best_metric,
                         "best_checkpoint": Path(trainer.state.best_model_checkpoint).name
                         if trainer.state.best_model_checkpoint else None,
                         "dev_history": dev_history},
                # the bi-encoder trainer's names: the study, benches and reports read both families alike
                train_seconds=round(seconds, 2),
                global_steps=trainer.state.global_step,
                final_loss=losses[-1][1] if losses else None,
                loss_curve=losses,
                resumed_from=last_checkpoint.name if last_checkpoint else None,
            )
            with atomic_directory(out, overwrite=overwrite, kind="model", inputs=run_inputs(config),
                                  locked=True) as tmp:
                model.save(str(tmp))
                write_json(tmp / "manifest.json", manifest)
            if not config.keep_checkpoints:
                discard_checkpoints(ckpt_dir)
    return manifest


def load_manifest(checkpoint_dir: str | Path) -> dict[str, Any]:
    """Read the ``manifest.json`` colmed wrote beside a trained checkpoint."""
    path = Path(checkpoint_dir) / "manifest.json"
    if not path.is_file():
        raise InputError("no manifest.json: not a colmed-trained checkpoint", path=checkpoint_dir)
    return json.loads(path.read_text(encoding="utf-8"))
