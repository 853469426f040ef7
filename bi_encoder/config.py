"""The bi-encoder training configuration: one dataclass, loadable from YAML, overridable by CLI flags.

Every field has a default, so ``BiEncoderTrainingConfig(base_model=..., triplets=..., out=...)`` is a
complete config. Named presets live in ``bi_encoder/presets/<name>.yaml`` and fill in fields the user did
not set; explicit values (YAML file or CLI flag) always win over the preset.

Example:
    >>> cfg = BiEncoderTrainingConfig.from_preset("medembed", base_model="m", triplets="t", out="o")
    >>> cfg.epochs, cfg.batch_size, cfg.learning_rate, cfg.temperature, cfg.scale
    (3.0, 32, 2e-05, 0.02, 50.0)
    >>> cfg.max_query_length, cfg.max_doc_length
    (128, 256)

The hyperparameter names are the ones :class:`~colmed.colbert.training.ColbertTrainingConfig` uses too
(``batch_size``, ``learning_rate``, ``epochs``, ``max_steps``, ``warmup_ratio``, ``max_query_length``,
``max_doc_length``, ``seed``); ``colmed.bi_encoder.train`` maps them to sentence-transformers' own.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from colmed.core import config
from colmed.core.errors import InputError

PRESETS_DIR = Path(__file__).parent / "presets"


@dataclass
class TrainingConfig:
    """The settings both trainer families share: one vocabulary with one meaning, defined once.

    :class:`BiEncoderTrainingConfig` and :class:`~colmed.colbert.training.ColbertTrainingConfig` extend it
    (each may give a field its own default); each trainer maps these names to its library's own.
    ``max_steps`` of -1 trains for ``epochs``; ``eval_steps`` of 0 evaluates once per epoch.
    """

    base_model: str = ""
    triplets: str = ""
    out: str = ""
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 32
    learning_rate: float = 2e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    temperature: float = 0.05
    loss: Literal["mnrl", "cached_mnrl"] = "mnrl"
    mini_batch_size: int = 32
    max_query_length: int = 128
    max_doc_length: int = 256
    seed: int = 42
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    dev: str | None = "triplets"
    dev_split: str = "dev"
    dev_max_queries: int | None = 500
    dev_max_docs: int | None = None
    eval_steps: int = 0
    save_total_limit: int = 2
    logging_steps: int = 10
    max_train_samples: int | None = None
    dataloader_workers: int = 0
    keep_checkpoints: bool = False
    checkpoint_dir: str | None = None

    @property
    def scale(self) -> float:
        """What the ranking losses multiply similarity scores by (``1/temperature``)."""
        return round(1.0 / self.temperature, 6)

    @property
    def checkpoints_path(self) -> Path:
        """Where resumable trainer checkpoints live: beside ``out``, so ``out`` only ever holds a finished model."""
        if self.checkpoint_dir:
            return Path(self.checkpoint_dir)
        out = Path(self.out)
        return out.with_name(out.name + ".checkpoints")


@dataclass
class BiEncoderTrainingConfig(TrainingConfig):
    """Everything that decides a bi-encoder fine-tuning run.

    ``temperature`` is the InfoNCE temperature; sentence-transformers' losses take ``scale = 1/temperature``.
    ``num_negatives`` mined hard negatives per triplet become columns ``negative_1..n`` (records with fewer
    are skipped and counted). ``dev`` is ``"triplets"`` (the ``split == "dev"`` records) or a local BEIR
    folder/hub name evaluated on ``dev_split``. ``eval_steps``/``save_steps`` of 0 mean once per epoch.
    """

    base_model: str = "sentence-transformers/all-MiniLM-L6-v2"
    preset: str | None = None
    num_negatives: int = 1
    matryoshka_dims: list[int] | None = None
    query_prompt: str | None = None
    document_prompt: str | None = None

    def __post_init__(self) -> None:
        config.check_types(self)
        if not self.temperature > 0:
            raise InputError(f"must be > 0, got {self.temperature}", field="temperature")
        for name in ("batch_size", "mini_batch_size", "max_query_length", "max_doc_length"):
            if getattr(self, name) < 1:
                raise InputError(f"must be >= 1, got {getattr(self, name)}", field=name)
        if self.num_negatives < 0:
            raise InputError(f"must be >= 0, got {self.num_negatives}", field="num_negatives")
        if not 0 <= self.warmup_ratio < 1:
            raise InputError(f"must be in [0, 1), got {self.warmup_ratio}", field="warmup_ratio")
        if self.max_steps == 0 or self.max_steps < -1:
            raise InputError(f"must be >= 1, or -1 to train for `epochs`, got {self.max_steps}", field="max_steps")
        if self.matryoshka_dims is not None:
            self.matryoshka_dims = sorted(set(self.matryoshka_dims), reverse=True)

    def to_dict(self) -> dict[str, Any]:
        return config.to_dict(self)

    @classmethod
    def field_names(cls) -> set[str]:
        return set(config.field_names(cls))

    @classmethod
    def config_defaults(cls, values: dict[str, Any]) -> dict[str, Any]:
        """The fields of the preset ``values`` names, if any: they fill what ``values`` leaves unset."""
        return load_preset(values["preset"]) if values.get("preset") else {}

    @classmethod
    def from_dict(cls, values: dict[str, Any], path: str | Path | None = None) -> "BiEncoderTrainingConfig":
        """Build a config from ``values`` (types checked); a preset named in ``values["preset"]`` fills unset fields."""
        return config.from_dict(cls, values, path=path)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: config.Overrides = ()) -> "BiEncoderTrainingConfig":
        """Read a YAML mapping of fields; ``overrides`` (``"key=value"`` strings or a mapping, e.g. the CLI
        flags that were given) win over the file, and the file over a preset it names."""
        return config.from_yaml(cls, path, overrides)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "BiEncoderTrainingConfig":
        return cls.from_dict({"preset": name, **overrides})


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def load_preset(name: str) -> dict[str, Any]:
    """The field values of a named preset (``bi_encoder/presets/<name>.yaml``), types checked."""
    from colmed.core.io import read_yaml_mapping

    path = PRESETS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise InputError(f"unknown preset {name!r}; available: {', '.join(available_presets()) or 'none'}",
                         field="preset")
    values = read_yaml_mapping(path)
    if values.get("preset"):
        raise InputError("a preset cannot name another preset", path=path, field="preset")
    config.from_dict(BiEncoderTrainingConfig, values, path=path)  # unknown keys and wrong types name the preset
    return values
