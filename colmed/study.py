"""``colmed study``: clinical notes (or a labelled split) -> triplets -> both families trained ->
significance-tested benchmark -> one report.

The study is a list of content-addressed :class:`~colmed.stages.Stage` s, each a colmed command in its
own process, so a crash or ``kill -9`` loses nothing finished and changing a late setting re-runs only
what depends on it. The configuration is a dataclass tree loadable from YAML; every key can be
overridden from the command line with ``--set section.key=value``.

Example:
    >>> cfg = StudyConfig.from_dict({"data": {"num_notes": 20}, "colbert": {"enabled": False}})
    >>> cfg = apply_overrides(cfg, ["colmed.bi_encoder.args.epochs=2", "benchmark.suite=medical"])
    >>> cfg.data.num_notes, cfg.bi_encoder.args["epochs"], cfg.colbert.enabled
    (20, 2, False)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from colmed.core.errors import InputError
from colmed.stages import Stage, StageRunner, colmed_command

PACKAGED_MINILM = "packaged:all-MiniLM-L6-v2"


@dataclass
class DataConfig:
    """Where training triplets come from: ``notes`` (any generator) or ``labelled`` (a train split)."""

    source: str = "notes"
    notes: str = "../shared/notes/mtsamples.jsonl"
    num_notes: int | None = 200
    generator: str = "inverse_cloze"
    backend: str | None = None
    model: str | None = None
    gguf_file: str | None = None
    labelled_dataset: str = "../shared/beir/nfcorpus"
    labelled_split: str = "train"
    miner: str = "bm25"
    negatives: int = 5
    dev_fraction: float = 0.1
    args: dict[str, Any] = field(default_factory=dict)  # any other `colmed generate` flags


@dataclass
class TrainerConfig:
    enabled: bool = True
    base: str = PACKAGED_MINILM
    args: dict[str, Any] = field(default_factory=dict)  # flags of `colmed train ...`


@dataclass
class BenchmarkConfig:
    suite: str = "medical"
    datasets: list[str] = field(default_factory=list)  # empty = the whole suite
    data_dir: str | None = "../shared/beir"
    baseline: str = "bm25"
    include_bases: bool = True
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class StudyConfig:
    out: str = "runs/study"
    seed: int = 13
    data: DataConfig = field(default_factory=DataConfig)
    bi_encoder: TrainerConfig = field(default_factory=lambda: TrainerConfig(args={"epochs": 1}))
    colbert: TrainerConfig = field(default_factory=lambda: TrainerConfig(args={"maxsteps": 300}))
    benchmark: BenchmarkConfig = field(default_factory=BenchmarkConfig)

    @classmethod
    def from_dict(cls, d: dict[str, Any], path: str | None = None) -> "StudyConfig":
        return _build(cls, d or {}, path, "")

    @classmethod
    def from_yaml(cls, path: str | Path) -> "StudyConfig":
        from colmed.core.io import read_yaml_mapping

        p = Path(path)
        data = read_yaml_mapping(p)
        return cls.from_dict(data, str(p))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build(cls, d: dict, path: str | None, prefix: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in d.items():
        if key not in fields:
            raise InputError(f"unknown setting (known: {', '.join(fields)})", path=path, field=prefix + key)
        ftype = fields[key].type
        sub = {"DataConfig": DataConfig, "TrainerConfig": TrainerConfig, "BenchmarkConfig": BenchmarkConfig}.get(
            ftype if isinstance(ftype, str) else getattr(ftype, "__name__", ""))
        if sub is not None:
            if not isinstance(value, dict):
                raise InputError("expected a mapping", path=path, field=prefix + key)
            base = dataclasses.asdict(getattr(cls(), key))
            base.update(value)
            kwargs[key] = _build(sub, base, path, f"{prefix}{key}.")
        else:
            kwargs[key] = value
    return cls(**kwargs)


def apply_overrides(cfg: StudyConfig, overrides: list[str]) -> StudyConfig:
    """Apply ``section.key=value`` overrides (values parsed as YAML scalars) to a copy of ``cfg``."""
    data = cfg.to_dict()
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise InputError(f"override {item!r} is not key=value", field="--set")
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise InputError(f"unknown setting {key!r}", field="--set")
            node = node[part]
        if parts[-1] not in node and not (len(parts) >= 2 and parts[-2] == "args"):
            raise InputError(f"unknown setting {key!r}", field="--set")
        node[parts[-1]] = _parse_scalar(raw)
    return StudyConfig.from_dict(data)


def _parse_scalar(raw: str) -> Any:
    """YAML scalar, plus the floats YAML 1.1 leaves as strings (``1e-4``)."""
    if not raw:
        return None
    value = yaml.safe_load(raw)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def resolve_model(name: str) -> str:
    """``packaged:all-MiniLM-L6-v2`` -> the local folder of the PyPI package; anything else unchanged."""
    if name == PACKAGED_MINILM:
        from colmed.demo import default_dense_model

        return default_dense_model()
    return name


def flags(args: dict[str, Any]) -> list[str]:
    """``{"batch-size": 32, "quiet": True, "lr": 2e-5}`` -> ``["--batch-size", "32", "--quiet", "--lr", "2e-05"]``."""
    out: list[str] = []
    for key, value in args.items():
        opt = "--" + str(key).replace("_", "-")
        if value is True:
            out.append(opt)
        elif value is False or value is None:
            continue
        elif isinstance(value, (list, tuple)):
            for v in value:
                out += [opt, str(v)]
        else:
            out += [opt, str(value)]
    return out


def build_stages(cfg: StudyConfig) -> list[Stage]:
    """The study's stages, in order, from its config."""
    out = Path(cfg.out)
    st = out / "stages"
    d = cfg.data
    common = ["--miner", d.miner, "--negatives", d.negatives, "--dev-fraction", d.dev_fraction, "--seed", cfg.seed]
    if d.source == "notes":
        gen = ["generate", "--notes", d.notes, "--out", st / "triplets", "--generator", d.generator, *common,
               "--no-progress"]
        if d.num_notes:
            gen += ["--num-notes", d.num_notes]
        if d.generator == "llm":
            gen += ["--backend", d.backend or "transformers"]
            gen += ["--model", resolve_model(d.model)] if d.model else []
            gen += ["--gguf-file", d.gguf_file] if d.gguf_file else []
        inputs = [Path(d.notes)] if Path(d.notes).exists() else []
    elif d.source == "labelled":
        gen = ["generate", "--labelled", d.labelled_dataset, "--labelled-split", d.labelled_split,
               "--out", st / "triplets", *common, "--no-progress"]
        inputs = [Path(d.labelled_dataset)] if Path(d.labelled_dataset).exists() else []
    else:
        raise InputError(f"unknown data source {d.source!r}; choose notes or labelled", field="data.source")
    stages = [Stage("generate", colmed_command(*gen, *flags(d.args)), st / "triplets", inputs=inputs,
                    clean_on_change=True)]
    trained: dict[str, str] = {}
    if cfg.bi_encoder.enabled:
        path = st / "bi-encoder" / "model"
        stages.append(Stage("train-bi-encoder", colmed_command(
            "train", "bi-encoder", "--triplets", st / "triplets", "--base", resolve_model(cfg.bi_encoder.base),
            "--out", path, "--seed", cfg.seed, "--overwrite", *flags(cfg.bi_encoder.args)),
            st / "bi-encoder", after=["generate"]))
        trained["dense"] = str(path)
    if cfg.colbert.enabled:
        path = st / "colbert" / "model"
        stages.append(Stage("train-colbert", colmed_command(
            "train", "colbert", "--triplets", st / "triplets", "--base", resolve_model(cfg.colbert.base),
            "--out", path, "--seed", cfg.seed, "--overwrite", "--quiet", *flags(cfg.colbert.args)),
            st / "colbert", after=["generate"]))
        trained["colbert"] = str(path)
    b = cfg.benchmark
    retrievers = ["bm25=bm25"]
    if cfg.bi_encoder.enabled:
        if b.include_bases:
            retrievers.append(f"dense-base=dense:{resolve_model(cfg.bi_encoder.base)}")
        retrievers.append(f"dense-trained=dense:{trained['dense']}")
    if cfg.colbert.enabled:
        if b.include_bases:
            retrievers.append(f"colbert-base=colbert:{resolve_model(cfg.colbert.base)}")
        retrievers.append(f"colbert-trained=colbert:{trained['colbert']}")
    bench = ["benchmark", *sum((["--retriever", r] for r in retrievers), []), "--suite", b.suite,
             "--baseline", b.baseline, "--out", out / "benchmark"]
    bench += sum((["--dataset", x] for x in b.datasets), [])
    bench += ["--data-dir", b.data_dir] if b.data_dir else []
    # The benchmark keeps its own index/run cache under its --out: never wipe it on a key change.
    stages.append(Stage("benchmark", colmed_command(*bench, *flags(b.args)), out / "benchmark",
                        after=[s.name for s in stages], clean_on_change=False))
    return stages


def run_study(cfg: StudyConfig, dry_run: bool = False, echo=print) -> dict[str, Any]:
    """Run (or with ``dry_run`` only plan) the study; returns the stage summary."""
    from colmed.core.io import write_json

    runner = StageRunner(build_stages(cfg))
    if dry_run:
        for stage, status in runner.plan():
            echo(f"{stage.name:18s} {status:7s} key={runner.key(stage)}  {' '.join(map(str, stage.command[2:]))}")
        return {s.name: {"status": status} for s, status in runner.plan()}
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "study_config.json", cfg.to_dict())
    summary = runner.run(echo=echo)
    from colmed.study_report import write_study_report

    report = write_study_report(cfg, runner, summary)
    echo(f"report: {report}")
    return summary
