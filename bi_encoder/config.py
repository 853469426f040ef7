"""The bi-encoder training configuration: one dataclass, loadable from YAML, overridable by CLI flags.

Every field has a default, so ``BiEncoderTrainingConfig(base_model=..., triplets=..., out=...)`` is a
complete config. Named presets live in ``bi_encoder/presets/<name>.yaml`` and fill in fields the user did
not set; explicit values (YAML file or CLI flag) always win over the preset.

Example:
    >>> cfg = BiEncoderTrainingConfig.from_preset("medembed", base_model="m", triplets="t", out="o")
    >>> cfg.epochs, cfg.batch_size, cfg.learning_rate, cfg.temperature, cfg.scale
    (3, 32, 2e-05, 0.02, 50.0)
    >>> cfg.query_max_length, cfg.passage_max_length
    (128, 256)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from colmed.core.errors import InputError

PRESETS_DIR = Path(__file__).parent / "presets"

LOSSES = ("mnrl", "cached_mnrl")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


@dataclass
class BiEncoderTrainingConfig:
    """Everything that decides a bi-encoder fine-tuning run.

    ``temperature`` is the InfoNCE temperature; sentence-transformers' losses take ``scale = 1/temperature``.
    ``num_negatives`` mined hard negatives per triplet become columns ``negative_1..n`` (records with fewer
    are skipped and counted). ``dev`` is ``"triplets"`` (the ``split == "dev"`` records) or a local BEIR
    folder/hub name evaluated on ``dev_split``. ``eval_steps``/``save_steps`` of 0 mean once per epoch.
    """

    base_model: str = "sentence-transformers/all-MiniLM-L6-v2"
    triplets: str = ""
    out: str = ""
    preset: str | None = None
    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 32
    learning_rate: float = 2e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    temperature: float = 0.05
    loss: str = "mnrl"
    mini_batch_size: int = 32
    num_negatives: int = 1
    matryoshka_dims: list[int] | None = None
    query_max_length: int = 128
    passage_max_length: int = 256
    query_prompt: str | None = None
    document_prompt: str | None = None
    seed: int = 42
    precision: str = "auto"
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

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise InputError(f"unknown loss {self.loss!r}; choose from {', '.join(LOSSES)}", field="loss")
        if self.precision not in PRECISIONS:
            raise InputError(f"unknown precision {self.precision!r}; choose from {', '.join(PRECISIONS)}",
                             field="precision")
        if not self.temperature > 0:
            raise InputError(f"must be > 0, got {self.temperature}", field="temperature")
        for name in ("batch_size", "mini_batch_size", "query_max_length", "passage_max_length"):
            if getattr(self, name) < 1:
                raise InputError(f"must be >= 1, got {getattr(self, name)}", field=name)
        if self.num_negatives < 0:
            raise InputError(f"must be >= 0, got {self.num_negatives}", field="num_negatives")
        if self.matryoshka_dims is not None:
            self.matryoshka_dims = sorted({int(d) for d in self.matryoshka_dims}, reverse=True)

    @property
    def scale(self) -> float:
        """The similarity scale sentence-transformers' ranking losses multiply cosine scores by."""
        return round(1.0 / self.temperature, 6)

    @property
    def checkpoints_path(self) -> Path:
        """Where resumable trainer checkpoints live: beside ``out``, so ``out`` only ever holds a finished model."""
        if self.checkpoint_dir:
            return Path(self.checkpoint_dir)
        out = Path(self.out)
        return out.with_name(out.name + ".checkpoints")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    @classmethod
    def from_dict(cls, values: dict[str, Any], path: str | Path | None = None) -> "BiEncoderTrainingConfig":
        """Build a config from ``values``; a preset named in ``values["preset"]`` fills unset fields."""
        unknown = sorted(set(values) - cls.field_names())
        if unknown:
            raise InputError(f"unknown setting(s): {', '.join(unknown)}", path=path, field=unknown[0])
        merged: dict[str, Any] = {}
        if values.get("preset"):
            merged.update(load_preset(values["preset"]))
        merged.update(values)
        return cls(**merged)

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> "BiEncoderTrainingConfig":
        """Read a YAML mapping of fields; ``overrides`` (e.g. the CLI flags that were given) win."""
        values = _read_yaml_mapping(path)
        values.update(overrides)
        return cls.from_dict(values, path=path)

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> "BiEncoderTrainingConfig":
        return cls.from_dict({"preset": name, **overrides})


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def load_preset(name: str) -> dict[str, Any]:
    """The field values of a named preset (``bi_encoder/presets/<name>.yaml``)."""
    path = PRESETS_DIR / f"{name}.yaml"
    if not path.is_file():
        raise InputError(f"unknown preset {name!r}; available: {', '.join(available_presets()) or 'none'}",
                         field="preset")
    values = _read_yaml_mapping(path)
    unknown = sorted(set(values) - BiEncoderTrainingConfig.field_names())
    if unknown:
        raise InputError(f"unknown setting(s): {', '.join(unknown)}", path=path, field=unknown[0])
    return values


def _read_yaml_mapping(path: str | Path) -> dict[str, Any]:
    from colmed.core.io import read_yaml_mapping

    return read_yaml_mapping(path)
