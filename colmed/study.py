"""``colmed study``: clinical notes (or a labelled split) -> triplets -> both families trained ->
significance-tested benchmark -> one report.

The study is a list of content-addressed :class:`~colmed.stages.Stage` s, each a colmed command in its
own process, so a crash or ``kill -9`` loses nothing finished and changing a late setting re-runs only
what depends on it. The configuration is a dataclass tree loaded from YAML by
:func:`colmed.core.config.from_yaml` (unknown keys and wrong types fail at load, naming file and field);
every key can be overridden with ``--set section.key=value``. Each stage's settings are a typed
dataclass (:class:`GenerateStageConfig`, :class:`TrainStageConfig`, :class:`BenchmarkStageConfig`) built
from the study config, written beside the stage's output as ``<stage>.stage_config.json``, and turned
into the stage's command by its ``argv()``, the only place a command line is assembled.

Example:
    >>> cfg = StudyConfig.from_dict({"data": {"num_notes": 20}, "colbert": {"enabled": False}})
    >>> cfg = apply_overrides(cfg, ["bi_encoder.args.epochs=2", "benchmark.suite=medical"])
    >>> cfg.data.num_notes, cfg.bi_encoder.args["epochs"], cfg.colbert.enabled
    (20, 2, False)
    >>> [s.name for s in build_stages(cfg)]
    ['generate', 'train-bi-encoder', 'benchmark']
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from colmed.core import config as typed
from colmed.core.errors import InputError
from colmed.stages import Stage, StageRunner, colmed_command

PACKAGED_MINILM = "packaged:all-MiniLM-L6-v2"
STAGE_CONFIG_SUFFIX = ".stage_config.json"


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
    # Benchmarks whose test splits the triplets are checked against (names under benchmark.data_dir, or
    # paths); None: every benchmark dataset of the study found there; []: no check.
    contamination_check: list[str] | None = None
    decontaminate: bool = False  # drop records copying/paraphrasing a test query or leaking a test pair
    contamination_encoder: str | None = None  # adds the semantic (embedding) level, e.g. packaged:all-MiniLM-L6-v2
    args: dict[str, Any] = field(default_factory=dict)  # any other `colmed generate` flags


@dataclass
class TrainerConfig:
    enabled: bool = True
    base: str = PACKAGED_MINILM
    args: dict[str, Any] = field(default_factory=dict)  # flags of `colmed train ...`


@dataclass
class StudyBenchmarkConfig:
    """The study's benchmark stage (``colmed benchmark``'s own settings are ``colmed.benchmark.BenchmarkConfig``)."""

    suite: str = "medical"
    datasets: list[str] = field(default_factory=list)  # empty = the whole suite
    data_dir: str | None = "../shared/beir"
    baseline: str = "bm25"
    include_bases: bool = True
    # paired tests beside those against the baseline: each trained model against its base, and ColBERT
    # trained against dense trained (Holm-corrected across these pairs)
    compare_families: bool = True
    hybrid: bool = True  # also score RRF of BM25 with each trained model (rrf:bm25+<family>-trained)
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class StudyConfig:
    out: str = "runs/study"
    seed: int = 13
    data: DataConfig = field(default_factory=DataConfig)
    bi_encoder: TrainerConfig = field(default_factory=lambda: TrainerConfig(args={"epochs": 1}))
    colbert: TrainerConfig = field(default_factory=lambda: TrainerConfig(args={"max-steps": 300}))
    benchmark: StudyBenchmarkConfig = field(default_factory=StudyBenchmarkConfig)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, path: str | Path | None = None) -> "StudyConfig":
        """Build from nested mappings; sections a mapping leaves out keep their defaults."""
        return typed.from_dict(cls, d or {}, path=path)

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: typed.Overrides = ()) -> "StudyConfig":
        """Read the study YAML with ``overrides`` (``"section.key=value"`` strings) applied, types checked."""
        return typed.from_yaml(cls, path, overrides)

    def to_dict(self) -> dict[str, Any]:
        return typed.to_dict(self)


def apply_overrides(cfg: StudyConfig, overrides: Iterable[str]) -> StudyConfig:
    """A copy of ``cfg`` with ``section.key=value`` overrides (values read as YAML scalars), types checked."""
    return StudyConfig.from_dict(typed.apply_overrides(cfg.to_dict(), list(overrides)), path="--set")


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


def _opt(flag: str, value: Any) -> list[Any]:
    return [flag, value] if value else []


@dataclass
class GenerateStageConfig:
    """The ``generate`` stage: ``colmed generate`` from notes or from a labelled split."""

    source: str
    out: str
    miner: str
    negatives: int
    dev_fraction: float
    seed: int
    notes: str | None = None
    num_notes: int | None = None
    generator: str | None = None
    backend: str | None = None
    model: str | None = None
    gguf_file: str | None = None
    labelled_dataset: str | None = None
    labelled_split: str | None = None
    contamination_check: list[str] = field(default_factory=list)
    decontaminate: bool = False
    contamination_encoder: str | None = None
    args: dict[str, Any] = field(default_factory=dict)

    def argv(self) -> list[str]:
        common = ["--miner", self.miner, "--negatives", self.negatives, "--dev-fraction", self.dev_fraction,
                  "--seed", self.seed, *sum((["--contamination-check", d] for d in self.contamination_check), []),
                  *(["--decontaminate"] if self.decontaminate else []),
                  *_opt("--contamination-encoder", self.contamination_encoder)]
        # --overwrite: the stage owns its output; a changed generation setting then starts over, a changed late
        # setting (negatives, filters, splits) reuses the generation parts of an interrupted run or of the
        # finished output it replaces (so the stage keeps its output across key changes: clean_on_change=False).
        if self.source == "notes":
            cmd = ["generate", "--notes", self.notes, "--out", self.out, "--generator", self.generator, *common,
                   "--no-progress", "--overwrite", *_opt("--num-notes", self.num_notes)]
            if self.generator == "llm":
                cmd += ["--backend", self.backend or "transformers", *_opt("--model", self.model),
                        *_opt("--gguf-file", self.gguf_file)]
        else:
            cmd = ["generate", "--labelled", self.labelled_dataset, "--labelled-split", self.labelled_split,
                   "--out", self.out, *common, "--no-progress", "--overwrite"]
        return colmed_command(*cmd, *flags(self.args))


@dataclass
class TrainStageConfig:
    """A training stage: ``colmed train bi-encoder`` or ``colmed train colbert`` on the study's triplets."""

    family: str  # "bi-encoder" or "colbert"
    triplets: str
    base: str
    out: str
    seed: int
    args: dict[str, Any] = field(default_factory=dict)

    def argv(self) -> list[str]:
        quiet = ["--quiet"] if self.family == "colbert" else []
        # --resume: a study killed mid-training continues from the stage's newest checkpoint (same key, so same
        # settings; a changed key has removed the stage folder, checkpoints included).
        return colmed_command("train", self.family, "--triplets", self.triplets, "--base", self.base,
                              "--out", self.out, "--seed", self.seed, "--overwrite", "--resume", *quiet,
                              *flags(self.args))


@dataclass
class BenchmarkStageConfig:
    """The ``benchmark`` stage: every retriever of the study, one significance-tested benchmark."""

    retrievers: list[str]
    suite: str
    baseline: str
    out: str
    datasets: list[str] = field(default_factory=list)
    data_dir: str | None = None
    comparisons: list[str] = field(default_factory=list)
    args: dict[str, Any] = field(default_factory=dict)

    def argv(self) -> list[str]:
        cmd = ["benchmark", *sum((["--retriever", r] for r in self.retrievers), []), "--suite", self.suite,
               "--baseline", self.baseline, "--out", self.out, *sum((["--dataset", x] for x in self.datasets), []),
               *sum((["--compare", c] for c in self.comparisons), []),
               *_opt("--data-dir", self.data_dir)]
        return colmed_command(*cmd, *flags(self.args))


def contamination_datasets(cfg: StudyConfig) -> list[str]:
    """The benchmark folders the study's triplets are checked against (see ``DataConfig.contamination_check``)."""
    from colmed.data.registry import SUITES

    d, b = cfg.data, cfg.benchmark
    if d.decontaminate and d.contamination_check == []:
        raise InputError("decontaminate needs datasets to check against", field="data.contamination_check")
    names = d.contamination_check
    if names is None:
        names = [n for n in (b.datasets or SUITES.get(b.suite, ()))
                 if Path(n).is_dir() or (b.data_dir and (Path(b.data_dir) / n).is_dir())]
    return [n if Path(n).exists() or not b.data_dir else str(Path(b.data_dir) / n) for n in names]


def stage_configs(cfg: StudyConfig) -> dict[str, Any]:
    """Stage name -> its typed settings, in run order, from the study config."""
    out = Path(cfg.out)
    st = out / "stages"
    d = cfg.data
    if d.source not in ("notes", "labelled"):
        raise InputError(f"unknown data source {d.source!r}; choose notes or labelled", field="data.source")
    notes = d.source == "notes"
    b = cfg.benchmark
    stages: dict[str, Any] = {"generate": GenerateStageConfig(
        source=d.source, out=str(st / "triplets"), miner=d.miner, negatives=d.negatives,
        dev_fraction=d.dev_fraction, seed=cfg.seed, notes=d.notes if notes else None,
        num_notes=d.num_notes if notes else None, generator=d.generator if notes else None,
        backend=d.backend if notes else None, model=resolve_model(d.model) if notes and d.model else None,
        gguf_file=d.gguf_file if notes else None, labelled_dataset=None if notes else d.labelled_dataset,
        labelled_split=None if notes else d.labelled_split, contamination_check=contamination_datasets(cfg),
        decontaminate=d.decontaminate,
        contamination_encoder=resolve_model(d.contamination_encoder) if d.contamination_encoder else None,
        args=dict(d.args))}
    retrievers = ["bm25=bm25"]
    for family, kind, trainer in (("bi-encoder", "dense", cfg.bi_encoder), ("colbert", "colbert", cfg.colbert)):
        if not trainer.enabled:
            continue
        model = st / family / "model"
        stages[f"train-{family}"] = TrainStageConfig(family=family, triplets=str(st / "triplets"),
                                                     base=resolve_model(trainer.base), out=str(model),
                                                     seed=cfg.seed, args=dict(trainer.args))
        if b.include_bases:
            retrievers.append(f"{kind}-base={kind}:{resolve_model(trainer.base)}")
        retrievers.append(f"{kind}-trained={kind}:{model}")
    names = [r.partition("=")[0] for r in retrievers]
    if b.hybrid:
        retrievers += [f"hybrid-{kind}=rrf:bm25+{kind}-trained" for kind in ("dense", "colbert")
                       if f"{kind}-trained" in names]
    comparisons = []
    if b.compare_families:
        comparisons = [f"{k}-trained:{k}-base" for k in ("dense", "colbert") if f"{k}-base" in names
                       and f"{k}-trained" in names]
        if "colbert-trained" in names and "dense-trained" in names:
            comparisons.append("colbert-trained:dense-trained")
    stages["benchmark"] = BenchmarkStageConfig(retrievers=retrievers, suite=b.suite, baseline=b.baseline,
                                               out=str(out / "benchmark"), datasets=list(b.datasets),
                                               data_dir=b.data_dir, comparisons=comparisons, args=dict(b.args))
    return stages


def build_stages(cfg: StudyConfig) -> list[Stage]:
    """The study's stages, in order, each running the command its typed settings build."""
    stages: list[Stage] = []
    for name, settings in stage_configs(cfg).items():
        if name == "generate":
            source = settings.notes if settings.source == "notes" else settings.labelled_dataset
            stage = Stage(name, settings.argv(), Path(settings.out), settings=settings,
                          inputs=[Path(source)] if Path(source).exists() else [],
                          clean_on_change=False, output=Path(settings.out), output_kind="triplets")
        elif name == "benchmark":
            # The benchmark keeps its own index/run cache under its --out: never wipe it on a key change.
            stage = Stage(name, settings.argv(), Path(settings.out), after=[s.name for s in stages],
                          clean_on_change=False, settings=settings)
        else:
            stage = Stage(name, settings.argv(), Path(settings.out).parent, after=["generate"], settings=settings,
                          output=Path(settings.out), output_kind="model")
        stages.append(stage)
    return stages


def stage_config_path(stage: Stage) -> Path:
    """Where a stage's settings are written: beside its output (the command owns the output folder)."""
    out = Path(stage.out_dir)
    return out.with_name(out.name + STAGE_CONFIG_SUFFIX)


def write_stage_configs(stages: list[Stage]) -> None:
    """Write every stage's settings (kind, fields, the command they build) as ``<stage>.stage_config.json``."""
    from colmed.core.io import write_json

    for stage in stages:
        if stage.settings is not None:
            write_json(stage_config_path(stage), {"stage": stage.name, "kind": type(stage.settings).__name__,
                                                  "settings": typed.to_dict(stage.settings),
                                                  "command": [str(a) for a in stage.command]})


def generate_stage(cfg: StudyConfig) -> tuple[StageRunner, Stage]:
    """The runner of ``cfg``'s stages and its generate stage."""
    runner = StageRunner(build_stages(cfg))
    return runner, runner.by_name["generate"]


def save_generate_stage(cfg: StudyConfig, dest: str | Path) -> Path:
    """Publish ``cfg``'s finished generate stage (its output folder and marker) as the folder ``dest``."""
    runner, stage = generate_stage(cfg)
    if not runner.is_done(stage):
        raise InputError("the generate stage has not finished; nothing to save", path=runner.marker(stage))
    dest = Path(dest)
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(stage.out_dir, tmp / "triplets")
    shutil.copy2(runner.marker(stage), tmp / "triplets.stage.json")
    tmp.rename(dest)
    return dest


def restore_generate_stage(cfg: StudyConfig, saved: str | Path) -> str:
    """Put a published generate stage in place so the study finds it done; says what it did.

    Only when the saved stage ran this config's ``colmed generate`` command on the same inputs (its key,
    recomputed with the interpreter path it was run with, matches); the marker then gets this
    machine's key. Anything else is left to the study, which regenerates.
    """
    from colmed.core.io import write_json

    saved = Path(saved)
    runner, stage = generate_stage(cfg)
    if runner.is_done(stage):
        return f"generate stage already done in {stage.out_dir}"
    saved_marker = json.loads((saved / "triplets.stage.json").read_text(encoding="utf-8"))
    as_saved = Stage(stage.name, [saved_marker["command"][0], *stage.command[1:]], stage.out_dir,
                     inputs=stage.inputs)
    if StageRunner([as_saved]).key(as_saved) != saved_marker.get("key"):
        return f"{saved}: made by another command or other inputs than this config plans; not restored"
    dest = Path(stage.out_dir)
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(saved / "triplets", dest)
    write_json(runner.marker(stage), {**saved_marker, "key": runner.key(stage), "restored_from": str(saved)})
    return f"restored the generate stage from {saved} (generated {saved_marker.get('finished')})"


def run_study(cfg: StudyConfig, dry_run: bool = False, echo=print, until: str | None = None) -> dict[str, Any]:
    """Run (or with ``dry_run`` only plan) the study; returns the stage summary. ``until`` names the last stage
    to run (e.g. ``generate`` on a CPU machine, the rest later on a GPU one)."""
    from colmed.core.io import write_json

    runner = StageRunner(build_stages(cfg))
    runner.stages_until(until)  # an unknown stage is refused before anything is written
    if dry_run:
        for stage, status in runner.plan():
            echo(f"{stage.name:18s} {status:7s} key={runner.key(stage)}  {' '.join(map(str, stage.command[2:]))}")
        return {s.name: {"status": status} for s, status in runner.plan()}
    from colmed.core.io import check_output_path, output_kind, output_lock, remove_temp_files

    d = cfg.data
    sources = [d.notes if d.source == "notes" else d.labelled_dataset, cfg.benchmark.data_dir]
    out = check_output_path(cfg.out, inputs=[p for p in sources if p and Path(p).exists()])
    found = output_kind(out)
    if found not in (None, "study"):
        raise InputError(f"holds a colmed {found} output; a study writes its own folder", path=cfg.out, field="out")
    # One orchestrator per study: a second would run the same stages into the same folders.
    with output_lock(out):
        out.mkdir(parents=True, exist_ok=True)
        for folder in (out, out / "stages", *(Path(s.out_dir).parent for s in runner.stages)):
            remove_temp_files(folder)  # half-written markers/configs of a killed orchestrator
        write_json(out / "study_config.json", cfg.to_dict())
        write_stage_configs(runner.stages)
        summary = runner.run(echo=echo, until=until)
        from colmed.study_report import write_study_report

        report = write_study_report(cfg, runner, summary)
        echo(f"report: {report}")
    return summary
