"""Run several retrievers over a benchmark suite and report them with uncertainty and significance.

For every dataset of the suite (``colmed.data.registry.SUITES``), each retriever's index and run are built
once and cached under ``<out>/cache/`` by a key of (retriever identity, dataset fingerprint, settings),
so adding a retriever to an existing benchmark directory only computes the new one. A dataset that
cannot be loaded (offline hub, a folder with queries and qrels but no corpus) is skipped with one
line and listed as skipped in the report.

The report is the MedEmbed-style table (retrievers x datasets, nDCG@10 and the average) with 95%
paired-bootstrap intervals, a second table with Recall@100 and MRR@10, and per-dataset significance
against a baseline (paired test from ranx, Holm-corrected across the compared retrievers), written as
markdown, CSV, JSON and a PNG plot, next to a ``manifest.json`` (config, versions, git sha, data hashes).

Retrievers are given as ``[name=]kind[:target]``: ``bm25``, ``dense:<model>``, ``colbert:<checkpoint>``
or ``index:<index dir>`` (a prebuilt index; used on the dataset whose corpus it was built from).

Example:
    >>> import tempfile
    >>> from colmed.demo import sample_dataset_path
    >>> out = tempfile.mkdtemp()
    >>> cfg = BenchmarkConfig(retrievers=["bm25"], datasets=[str(sample_dataset_path())], out=out)
    >>> result = run_benchmark(cfg, log=lambda line: None)
    >>> round(result["scores"]["bm25"]["sample_medical"]["ndcg@10"], 4)
    0.8242
"""

from __future__ import annotations

import csv
import datetime as _dt
import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from colmed.core.errors import ColmedError, InputError

KINDS = ("bm25", "dense", "colbert", "index")
REPORT_METRICS = ("ndcg@10", "recall@100", "mrr@10")


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------
# Retriever specs and their cache identity
# --------------------------------------------------------------------------------------------------

@dataclass
class RetrieverSpec:
    """One retriever of a benchmark: a family (``kind``), its model or index, and build options."""

    name: str
    kind: str
    target: str | None = None  # model (dense/colbert: hub name or local path) or index dir (index)
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str | dict) -> "RetrieverSpec":
        """From ``[name=]kind[:target]`` or a config mapping ``{name, kind, target|model, options}``."""
        if isinstance(text, dict):
            d = dict(text)
            target = d.pop("target", None) or d.pop("model", None) or d.pop("index", None)
            kind = d.pop("kind", None)
            spec = cls.parse(f"{kind}:{target}" if target else str(kind))
            spec.name = d.pop("name", None) or spec.name
            spec.options = dict(d.pop("options", {}) or {}, **d)
            return spec
        raw = text.strip()
        name = ""
        head, sep, rest = raw.partition("=")
        if sep and ":" not in head and "/" not in head:
            name, raw = head.strip(), rest.strip()
        kind, _, target = raw.partition(":")
        kind = kind.strip().lower()
        if kind not in KINDS:
            raise InputError(f"unknown retriever {text!r}: expected bm25, dense:<model>, colbert:<checkpoint> or "
                             f"index:<dir>", field="retriever")
        if kind != "bm25" and not target:
            raise InputError(f"retriever {text!r} needs a target after ':' (a model, checkpoint or index dir)",
                             field="retriever")
        if not name:
            stem = Path(target.rstrip("/")).name if target else ""
            name = kind if kind == "bm25" else f"{kind}:{stem}"
        return cls(name, kind, target or None)

    def index_manifest(self):
        """The manifest of a prebuilt index (``index:`` retrievers)."""
        from colmed.indexes.base import IndexManifest

        return IndexManifest.read(self.target)

    def identity(self) -> dict:
        """What decides this retriever's results: kind, model (with a content hash when local), options."""
        ident: dict[str, Any] = {"kind": self.kind, "options": self.options}
        if self.kind == "index":
            m = self.index_manifest()
            ident.update(index=str(Path(self.target).resolve()), index_kind=m.kind, model=m.model,
                         index_settings=m.settings, index_created=m.created,
                         query_prompt=m.query_prompt, document_prompt=m.document_prompt)
        elif self.target:
            ident.update(model=self.target, model_hash=content_hash(self.target))
        return ident


_HASH_CACHE: dict[str, str | None] = {}


def content_hash(path_or_name: str) -> str | None:
    """sha256 over a local model file or folder (relative paths and bytes); ``None`` for a hub name."""
    p = Path(path_or_name)
    if not p.exists():
        return None
    key = str(p.resolve())
    if key not in _HASH_CACHE:
        h = hashlib.sha256()
        files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file())
        for f in files:
            h.update(str(f.relative_to(p) if p.is_dir() else f.name).encode())
            with open(f, "rb") as fh:
                while block := fh.read(1 << 20):
                    h.update(block)
        _HASH_CACHE[key] = h.hexdigest()
    return _HASH_CACHE[key]


def _key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


# --------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------

@dataclass
class BenchmarkConfig:
    """Everything a benchmark run depends on; loadable from YAML, overridable by CLI flags."""

    retrievers: list[Any] = field(default_factory=list)  # "[name=]kind[:target]" strings or mappings
    suite: str = "medical"
    datasets: list[str] = field(default_factory=list)  # overrides the suite: registered names or folders
    data_dir: str | None = None
    split: str = "test"
    out: str = "benchmark"
    cache_dir: str | None = None  # default <out>/cache; content-keyed, so benchmarks and studies may share one
    baseline: str | None = None  # retriever name; default: the first retriever
    k: int = 100
    metrics: list[str] = field(default_factory=lambda: list(REPORT_METRICS))
    stat_test: str = "student"
    max_p: float = 0.05
    confidence: float = 0.95
    bootstrap_resamples: int = 2000
    check_published: bool = False
    tolerance: float | None = None  # default: the data file's stated tolerance
    index_type: str = "flat"
    batch_size: int = 32
    device: str | None = None

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides) -> "BenchmarkConfig":
        from colmed.core.io import read_yaml_mapping

        p = Path(path)
        data = read_yaml_mapping(p)
        known = set(cls.__dataclass_fields__)
        for k in data:
            if k not in known:
                raise InputError(f"unknown key; expected one of {', '.join(sorted(known))}", path=p, field=k)
        data.update({k: v for k, v in overrides.items() if v is not None and v != () and v != []})
        return cls(**data)

    def retriever_specs(self) -> list[RetrieverSpec]:
        specs = [RetrieverSpec.parse(r) for r in self.retrievers]
        if not specs:
            raise InputError("no retrievers: give at least one --retriever", field="retriever")
        names = [s.name for s in specs]
        dup = next((n for n in names if names.count(n) > 1), None)
        if dup:
            raise InputError(f"two retrievers are named {dup!r}; name them with NAME=kind:target", field="retriever")
        if self.baseline and self.baseline not in names:
            raise InputError(f"baseline {self.baseline!r} is not one of the retrievers ({', '.join(names)})",
                             field="baseline")
        return specs


# --------------------------------------------------------------------------------------------------
# Datasets
# --------------------------------------------------------------------------------------------------

def dataset_names(config: BenchmarkConfig) -> list[str]:
    from colmed.data.registry import SUITES

    if config.datasets:
        return list(config.datasets)
    if config.suite not in SUITES:
        raise InputError(f"unknown suite {config.suite!r}; choose from {', '.join(SUITES)}", field="suite")
    return list(SUITES[config.suite])


def load_benchmark_dataset(name: str, data_dir: str | None = None, split: str = "test"):
    """Load a suite member: ``<data_dir>/<name or alias>`` when present, else the hub (registry name).

    Raises :class:`InputError` with one line naming every place tried when the dataset cannot be used.
    """
    from colmed.data.datasets import load_beir_folder, load_dataset
    from colmed.data.registry import get_spec

    spec = get_spec(name)
    if spec is None or Path(name).exists():  # a folder given directly
        return load_dataset(name, split=split)
    reasons = []
    if data_dir:
        for folder in (spec.name, *spec.aliases):
            p = Path(data_dir) / folder
            if p.is_dir():
                try:
                    return load_beir_folder(p, split=spec.split if split == "test" else split, name=spec.name)
                except InputError as e:
                    reasons.append(str(e))
                break
        else:
            reasons.append(f"no folder {Path(data_dir) / spec.name}")
    try:
        return load_dataset(spec.name, split=split)
    except ColmedError as e:
        reasons.append(str(e))
    raise InputError("; ".join(reasons))


# --------------------------------------------------------------------------------------------------
# Runs (cached)
# --------------------------------------------------------------------------------------------------

def _build_options(spec: RetrieverSpec, config: BenchmarkConfig) -> dict:
    if spec.kind == "bm25":
        return dict(spec.options)
    if spec.kind == "dense":
        return {"model": spec.target, "index_type": config.index_type, "batch_size": config.batch_size,
                "device": config.device, **spec.options}
    if spec.kind == "colbert":
        return {"model": spec.target, "batch_size": config.batch_size, "device": config.device, **spec.options}
    return {}


def _cached_path(folder: Path, name: str, key: str, suffix: str = "") -> Path:
    """``<folder>/<name>-<key><suffix>``, or an existing entry with the same key under another retriever
    name: the key is the content, the name only labels the file, so renaming a retriever recomputes nothing."""
    path = folder / f"{_safe(name)}-{key}{suffix}"
    if not path.exists() and folder.is_dir():
        same = sorted(p for p in folder.glob(f"*-{key}{suffix}") if not p.name.startswith("."))
        if same:
            return same[0]
    return path


def dataset_search_options(family: str, dataset_name: str) -> dict[str, Any]:
    """Search-time options the dataset's protocol sets for one retriever family (``{}`` when none).

    Example:
        >>> dataset_search_options("colbert", "arguana")
        {'query_maxlen': 300}
        >>> dataset_search_options("dense", "arguana")
        {}
    """
    from colmed.data.registry import get_spec

    ds_spec = get_spec(dataset_name)
    if family == "colbert" and ds_spec is not None and ds_spec.colbert_query_maxlen:
        return {"query_maxlen": ds_spec.colbert_query_maxlen}
    return {}


def get_run(spec: RetrieverSpec, dataset, config: BenchmarkConfig, cache_dir: Path,
            log: Callable[[str], None] = _stderr) -> tuple[dict | None, dict]:
    """The run of ``spec`` on ``dataset`` (cached), and a cell info dict (cache status, sidecar, index)."""
    import colmed.indexes.base as index_base
    from colmed.indexes.search import search_queries, write_run
    from colmed.eval.protocol import queries_hash, read_sidecar
    from colmed.data.runs import read_trec

    identity = spec.identity()
    family = spec.kind
    if spec.kind == "index":
        manifest = spec.index_manifest()
        family = manifest.kind
        if manifest.dataset.get("fingerprint") != dataset.fingerprint:
            reason = (f"index {spec.target} was built over {manifest.dataset.get('name') or 'another corpus'}, "
                      f"not this copy of {dataset.name}")
            return None, {"status": "not applicable", "reason": reason}
        index_dir = Path(spec.target)
        index_key = None  # the identity already names the index (resolved path, manifest)
    else:
        index_key = _key(identity, dataset.fingerprint, config.index_type if spec.kind == "dense" else None)
        index_dir = _cached_path(cache_dir / "indexes" / _safe(dataset.name), spec.name, index_key)
    search_options = dataset_search_options(family, dataset.name)
    # Keyed by content, not by where --out points, so a relative and an absolute --out share the cache.
    # Search options join the key only where a dataset sets any, so every other cached run stays valid.
    run_key = _key(identity, index_key, dataset.fingerprint, dataset.split, config.k, queries_hash(dataset.queries),
                   *([search_options] if search_options else []))
    run_path = _cached_path(cache_dir / "runs" / _safe(dataset.name), spec.name, run_key, ".trec")
    sidecar = read_sidecar(run_path) if run_path.is_file() else None
    if sidecar and sidecar.get("cache_key") == run_key:
        run = {} if sidecar.get("empty_run") else read_trec(run_path)
        return run, {"status": "cached", "run_path": str(run_path), "sidecar": sidecar, "index_dir": str(index_dir)}
    built = False
    if not index_dir.exists():
        log(f"{dataset.name}: building {spec.kind} index for {spec.name} ({len(dataset.corpus):,} docs)")
        index_base.build_index(spec.kind, dataset, index_dir, **_build_options(spec, config))
        built = True
    manifest = index_base.IndexManifest.read(index_dir)
    load_opts = {"device": config.device} if spec.kind in ("dense", "colbert") else {}
    retriever = index_base.load_index(index_dir, **load_opts, **search_options)
    log(f"{dataset.name}: searching {len(dataset.queries):,} queries with {spec.name}")
    t0 = time.perf_counter()
    run = search_queries(retriever, dataset.queries, k=config.k, progress=True)
    seconds = time.perf_counter() - t0
    del retriever  # free the model/index before the next retriever loads
    source_info = {"queries_source": dataset.source, "dataset": dataset.name,
                   "dataset_fingerprint": dataset.fingerprint, "split": dataset.split, "qrels_hash": dataset.qrels_hash}
    timing = {"queries": len(dataset.queries), "seconds": round(seconds, 3),
              "qps": round(len(dataset.queries) / max(seconds, 1e-9), 2)}
    empty = not any(run.values())
    write_run(run, manifest, dataset.queries, source_info, run_path, config.k, timing=timing, tag=spec.name,
              extra={"cache_key": run_key, "retriever": spec.name, "identity": identity, "empty_run": empty,
                     **({"search_options": search_options} if search_options else {})})
    # Evaluate what was stored (6-decimal scores), so a fresh and a cached run give identical numbers.
    run = {} if empty else read_trec(run_path)
    return run, {"status": "built index + searched" if built else "searched (index reused)", "run_path": str(run_path),
                 "sidecar": read_sidecar(run_path), "index_dir": str(index_dir)}


# --------------------------------------------------------------------------------------------------
# Evaluation of one dataset
# --------------------------------------------------------------------------------------------------

def evaluate_dataset(dataset, runs: dict[str, dict], baseline: str | None, config: BenchmarkConfig,
                     exclude_self: bool) -> dict:
    """Scores, intervals and baseline tests of every run on one dataset."""
    from colmed.eval.evaluation import compare_runs
    from colmed.eval.uncertainty import bootstrap_ci, holm, paired_bootstrap_ci

    metrics = list(config.metrics)
    # Runs come from the dataset's own queries (checked by hash); a query with no hit scores zero.
    comp = compare_runs(dataset, runs, metrics, stat_test=config.stat_test, max_p=config.max_p,
                        exclude_self=exclude_self, dataset_name=dataset.name, max_missing=1.0, confidence=None)
    names = list(runs)
    out: dict[str, Any] = {"scores": comp.scores, "coverage": comp.coverage, "ci": {}, "vs_baseline": {}}
    for n in names:
        out["ci"][n] = {m: bootstrap_ci(comp.per_query[n][m], config.confidence, config.bootstrap_resamples)
                        for m in metrics}
    if baseline in runs and len(names) > 1:
        others = [n for n in names if n != baseline]
        for m in metrics:
            raw = [comp.p_values[n][baseline][m] for n in others]
            adjusted = holm(raw, alpha=config.max_p)
            for n, p, p_adj in zip(others, raw, adjusted):
                delta = comp.scores[n][m] - comp.scores[baseline][m]
                low, high = paired_bootstrap_ci(comp.per_query[n][m], comp.per_query[baseline][m], config.confidence,
                                                config.bootstrap_resamples)
                out["vs_baseline"].setdefault(n, {})[m] = {
                    "delta": delta, "delta_ci": [low, high], "p_value": p, "p_holm": p_adj,
                    "significant": bool(p_adj < config.max_p), "direction": "better" if delta > 0 else "worse"}
    out["per_query_ids"] = sorted(q for q, r in dataset.qrels.items() if r)
    return out


# --------------------------------------------------------------------------------------------------
# The whole benchmark
# --------------------------------------------------------------------------------------------------

def git_sha() -> str | None:
    """The colmed checkout's commit, when it is a git checkout."""
    try:
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, text=True,
                             capture_output=True, timeout=10)
        return res.stdout.strip() or None if res.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def run_benchmark(config: BenchmarkConfig, log: Callable[[str], None] = _stderr) -> dict:
    """Run every retriever on every loadable dataset, write the reports into ``config.out``, return results."""
    from colmed.eval.protocol import protocol_record
    from colmed.data.registry import get_spec
    from colmed.eval.uncertainty import CORRECTION

    specs = config.retriever_specs()
    baseline = config.baseline or specs[0].name
    out = Path(config.out)
    cache_dir = Path(config.cache_dir) if config.cache_dir else out / "cache"
    started = time.perf_counter()
    results: dict[str, Any] = {"datasets": [], "skipped": [], "scores": {s.name: {} for s in specs}, "ci": {},
                               "vs_baseline": {}, "protocol": {}, "cells": {}, "coverage": {}}
    for name in dataset_names(config):
        try:
            ds = load_benchmark_dataset(name, config.data_dir, config.split)
        except ColmedError as e:
            line = f"skipped {name}: {e}"
            log(line)
            results["skipped"].append({"dataset": name, "reason": str(e)})
            continue
        if not ds.corpus or not ds.qrels:
            reason = "no corpus" if not ds.corpus else f"no qrels for split {config.split!r}"
            log(f"skipped {name}: {reason}")
            results["skipped"].append({"dataset": name, "reason": reason})
            continue
        spec = get_spec(ds.name)
        exclude = bool(spec and spec.exclude_self_hits)
        runs, cells = {}, {}
        for s in specs:
            run, info = get_run(s, ds, config, cache_dir, log)
            cells[s.name] = {k: v for k, v in info.items() if k != "sidecar"}
            sc = info.get("sidecar") or {}
            cells[s.name].update(index=sc.get("index"), ann=sc.get("ann"), timing=sc.get("timing"))
            if run is None:
                log(f"{ds.name}: {s.name} not applicable ({info['reason']})")
                continue
            runs[s.name] = run
        if not runs:
            results["skipped"].append({"dataset": ds.name, "reason": "no retriever applies"})
            continue
        evaluation = evaluate_dataset(ds, runs, baseline, config, exclude)
        results["datasets"].append(ds.name)
        results["cells"][ds.name] = cells
        results["coverage"][ds.name] = evaluation["coverage"]
        results["ci"][ds.name] = evaluation["ci"]
        results["vs_baseline"][ds.name] = evaluation["vs_baseline"]
        for n, sc in evaluation["scores"].items():
            results["scores"][n][ds.name] = sc
        results["protocol"][ds.name] = protocol_record(
            ds, k=config.k, exclude_self_hits=exclude, metrics=config.metrics, stat_test=config.stat_test,
            correction=CORRECTION)
        results["protocol"][ds.name]["warnings"] = ds.warnings
        results["protocol"][ds.name]["colbert_query_maxlen"] = dataset_search_options("colbert", ds.name).get(
            "query_maxlen")
    results["baseline"] = baseline
    results["retrievers"] = [{"name": s.name, "kind": s.kind, "target": s.target, "options": s.options,
                              "identity": s.identity()} for s in specs]
    results["published"] = _published_rows(specs, results, config) if config.check_published else None
    results["config"] = asdict(config)
    results["seconds"] = round(time.perf_counter() - started, 2)
    write_reports(results, config)
    return results


def _published_rows(specs: list[RetrieverSpec], results: dict, config: BenchmarkConfig) -> list[dict]:
    from colmed.eval.published import check_published, reference_key

    keys = {}
    for s in specs:
        if s.kind == "index":
            m = s.index_manifest()
            keys[s.name] = reference_key(m.kind, m.model)
        else:
            keys[s.name] = reference_key(s.kind, s.target)
    measured = {n: {d: v["ndcg@10"] for d, v in per.items() if "ndcg@10" in v} for n, per in results["scores"].items()}
    return check_published(measured, keys, tolerance=config.tolerance)


# --------------------------------------------------------------------------------------------------
# Reports
# --------------------------------------------------------------------------------------------------

_METRIC_LABELS = {"ndcg@10": "nDCG@10", "recall@100": "Recall@100", "mrr@10": "MRR@10", "map@100": "MAP@100"}


def _average(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _marker(results: dict, dataset: str, name: str, metric: str) -> str:
    t = results["vs_baseline"].get(dataset, {}).get(name, {}).get(metric)
    if not t or not t["significant"]:
        return ""
    return "▲" if t["direction"] == "better" else "▼"


def ndcg_table_rows(results: dict, metric: str = "ndcg@10") -> list[dict]:
    """One row per retriever: dataset -> value, ``average`` (over the datasets it has), ``partial``."""
    rows = []
    for r in results["retrievers"]:
        n = r["name"]
        vals = {d: results["scores"][n][d][metric] for d in results["datasets"] if d in results["scores"][n]}
        rows.append({"retriever": n, **vals, "average": _average(list(vals.values())),
                     "partial": len(vals) < len(results["datasets"])})
    return rows


def ndcg_cells(results: dict, sep: str = " ") -> list[tuple[dict, list[str]]]:
    """Each nDCG@10 row with its per-dataset cells: score, significance marker, CI (``sep`` before it)."""
    out = []
    for row in ndcg_table_rows(results):
        n = row["retriever"]
        cells = []
        for d in results["datasets"]:
            if d not in row:
                cells.append("n/a")
                continue
            low, high = results["ci"][d][n]["ndcg@10"]
            cells.append(f"{row[d]:.4f}{_marker(results, d, n, 'ndcg@10')}{sep}[{low:.3f}, {high:.3f}]")
        out.append((row, cells))
    return out


def to_markdown(results: dict, config: BenchmarkConfig) -> str:
    datasets = results["datasets"]
    baseline = results["baseline"]
    conf = round(config.confidence * 100)
    lines = [f"# colmed benchmark: {config.suite if not config.datasets else ', '.join(config.datasets)}", "",
             f"Date: {_dt.datetime.now(_dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}. Machine: "
             f"{platform.platform()}, {os.cpu_count()} CPU cores. Wall time: {results['seconds']} s.", "",
             f"Command: `{' '.join(sys.argv) if sys.argv and 'colmed' in sys.argv[0] else 'run_benchmark(...)'}`", ""]
    if not datasets:
        lines += ["No dataset could be evaluated.", ""]
    else:
        lines += [f"## nDCG@10 (test split) with {conf}% bootstrap CI over queries", "",
                  "| retriever | " + " | ".join(datasets) + " | average |",
                  "|---|" + "---|" * (len(datasets) + 1)]
        for row, cells in ndcg_cells(results):
            n = row["retriever"]
            avg = "n/a" if row["average"] is None else f"{row['average']:.4f}{'*' if row['partial'] else ''}"
            label = f"{n} (baseline)" if n == baseline else n
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {avg} |")
        compared = len(results["retrievers"]) - 1
        sig = (f"▲/▼: significantly better/worse than the baseline `{baseline}` on that dataset "
               f"({_test_name(config)}, Holm-corrected across the {compared} compared retriever"
               f"{'s' if compared != 1 else ''}, p < {config.max_p}). " if compared else "")
        lines += ["", sig + f"Intervals: {conf}% percentile bootstrap over queries "
                            f"({config.bootstrap_resamples} resamples)."
                  + (" *: average over the datasets this retriever could be run on." if any(
                      r["partial"] for r in ndcg_table_rows(results)) else ""), ""]
        others = [m for m in config.metrics if m != "ndcg@10"]
        if others:
            label = " / ".join(_METRIC_LABELS.get(m, m) for m in others)
            lines += [f"## {label}", "", "| retriever | " + " | ".join(datasets) + " | average |",
                      "|---|" + "---|" * (len(datasets) + 1)]
            for r in results["retrievers"]:
                n = r["name"]
                cells = []
                for d in datasets:
                    sc = results["scores"][n].get(d)
                    cells.append("n/a" if sc is None else " / ".join(
                        f"{sc[m]:.4f}{_marker(results, d, n, m)}" for m in others))
                avgs = [_average([results["scores"][n][d][m] for d in datasets if d in results["scores"][n]])
                        for m in others]
                lines.append(f"| {n} | " + " | ".join(cells) + " | " +
                             " / ".join("n/a" if a is None else f"{a:.4f}" for a in avgs) + " |")
            lines.append("")
        lines += _significance_section(results, config)
    if results["skipped"]:
        lines += ["## Skipped datasets", ""] + [f"- {s['dataset']}: {s['reason']}" for s in results["skipped"]] + [""]
    lines += _retrievers_section(results)
    lines += _protocol_section(results, config)
    if results.get("published") is not None:
        from colmed.eval.published import published_to_markdown

        lines += ["## Reproduction of published figures (--check-published)", "", published_to_markdown(
            results["published"])]
    return "\n".join(lines) + "\n"


def _test_name(config: BenchmarkConfig) -> str:
    from colmed.eval.protocol import SIGNIFICANCE_TESTS

    return SIGNIFICANCE_TESTS.get(config.stat_test, config.stat_test)


def _significance_section(results: dict, config: BenchmarkConfig) -> list[str]:
    rows = []
    for d in results["datasets"]:
        for n, per_metric in results["vs_baseline"].get(d, {}).items():
            t = per_metric.get("ndcg@10")
            if t:
                rows.append(f"| {d} | {n} | {t['delta']:+.4f} | [{t['delta_ci'][0]:+.4f}, {t['delta_ci'][1]:+.4f}] | "
                            f"{t['p_value']:.4g} | {t['p_holm']:.4g} | {'yes' if t['significant'] else 'no'} |")
    if not rows:
        return []
    return [f"## nDCG@10 against the baseline `{results['baseline']}`", "",
            f"| dataset | retriever | Δ nDCG@10 | {round(config.confidence * 100)}% paired CI of Δ | p | p (Holm) | "
            f"significant |", "|---|---|---|---|---|---|---|", *rows, ""]


def _retrievers_section(results: dict) -> list[str]:
    lines = ["## Retrievers", "", "| retriever | kind | model / index | prompts (query / document) | "
             "index exactness | cache |", "|---|---|---|---|---|---|"]
    for r in results["retrievers"]:
        n = r["name"]
        ident = r["identity"]
        anns, statuses, prompts = set(), set(), set()
        for d in results["datasets"]:
            cell = results["cells"][d].get(n) or {}
            statuses.add(cell.get("status", "?"))
            if cell.get("ann"):
                anns.add(cell["ann"])
            idx = cell.get("index") or {}
            if idx.get("kind") in ("dense", "colbert"):
                prompts.add(f"{idx.get('query_prompt')!r} / {idx.get('document_prompt')!r}")
        model = ident.get("model") or ident.get("index") or "bm25s"
        h = ident.get("model_hash")
        lines.append(f"| {n} | {r['kind']} | {model}{f' (sha256 {h[:12]})' if h else ''} | "
                     f"{'; '.join(sorted(prompts)) or '-'} | {'; '.join(sorted(anns)) or '-'} | "
                     f"{', '.join(sorted(statuses)) or '-'} |")
    return lines + [""]


def _protocol_section(results: dict, config: BenchmarkConfig) -> list[str]:
    from colmed.eval.protocol import METRIC_DEFINITIONS
    from colmed.eval.uncertainty import CORRECTION

    lines = ["## Protocol", "",
             "| dataset | split | judged queries | self-hits | k | dataset fingerprint | qrels sha256 | source |",
             "|---|---|---|---|---|---|---|---|"]
    for d in results["datasets"]:
        p = results["protocol"][d]
        lines.append(f"| {d} | {p['split']} | {p['judged_queries']} | {p['self_hits'].split(' ')[0]} | {p['k']} | "
                     f"{p['dataset_fingerprint'][:12]} | {p['qrels_hash'][:12]} | {p['dataset_source']} |")
    lines += ["", "Metrics: " + "; ".join(f"{_METRIC_LABELS.get(m, m)} = {METRIC_DEFINITIONS.get(m, m)}"
                                          for m in config.metrics) + ".",
              f"Significance: {_test_name(config)}; correction: {CORRECTION}.",
              "Self-hits: a query's own id is removed from its results where the dataset registry says so "
              "(ArguAna), as BEIR and MTEB do."]
    long_queries = [f"{d} {results['protocol'][d]['colbert_query_maxlen']}" for d in results["datasets"]
                    if results["protocol"][d].get("colbert_query_maxlen")]
    if long_queries:
        lines.append("ColBERT query tokens: " + ", ".join(long_queries) + " (ColBERTv2's BEIR setting for "
                     "argument-length queries); elsewhere the model's own query_maxlen.")
    lines.append("")
    warnings = [f"- {d}: {w}" for d in results["datasets"] for w in results["protocol"][d].get("warnings", [])]
    if warnings:
        lines += ["Data warnings:", *warnings, ""]
    return lines


def to_csv(results: dict) -> tuple[str, str]:
    """(nDCG@10 wide table, long table of every metric with intervals and tests)."""
    wide = io.StringIO()
    w = csv.writer(wide)
    w.writerow(["retriever", *results["datasets"], "average"])
    for row in ndcg_table_rows(results):
        w.writerow([row["retriever"], *(f"{row[d]:.6f}" if d in row else "" for d in results["datasets"]),
                    "" if row["average"] is None else f"{row['average']:.6f}"])
    long = io.StringIO()
    w = csv.writer(long)
    w.writerow(["dataset", "retriever", "metric", "value", "ci_low", "ci_high", "delta_vs_baseline",
                "delta_ci_low", "delta_ci_high", "p_value", "p_holm", "significant"])
    for d in results["datasets"]:
        for r in results["retrievers"]:
            n = r["name"]
            if d not in results["scores"][n]:
                continue
            for m, v in results["scores"][n][d].items():
                low, high = results["ci"][d][n][m]
                t = results["vs_baseline"].get(d, {}).get(n, {}).get(m)
                w.writerow([d, n, m, f"{v:.6f}", f"{low:.6f}", f"{high:.6f}",
                            *(["", "", "", "", "", ""] if not t else
                              [f"{t['delta']:.6f}", f"{t['delta_ci'][0]:.6f}", f"{t['delta_ci'][1]:.6f}",
                               f"{t['p_value']:.6g}", f"{t['p_holm']:.6g}", t["significant"]])])
    return wide.getvalue(), long.getvalue()


def write_reports(results: dict, config: BenchmarkConfig) -> None:
    """report.md, ndcg@10.csv, metrics.csv, results.json, benchmark.png and manifest.json, atomically."""
    from colmed.core.io import atomic_write, write_json
    from colmed.eval.report import plot_bars
    from colmed.core.provenance import package_versions

    out = Path(config.out)
    with atomic_write(out / "report.md") as f:
        f.write(to_markdown(results, config))
    wide, long = to_csv(results)
    with atomic_write(out / "ndcg@10.csv") as f:
        f.write(wide)
    with atomic_write(out / "metrics.csv") as f:
        f.write(long)
    write_json(out / "results.json", results)
    if results["datasets"]:
        scores = {r["name"]: {d: results["scores"][r["name"]][d]["ndcg@10"] for d in results["datasets"]
                              if d in results["scores"][r["name"]]} for r in results["retrievers"]}
        errors = {n: {d: results["ci"][d][n]["ndcg@10"] for d in per} for n, per in scores.items()}
        plot_bars(scores, results["datasets"], out / "benchmark.png",
                  title=f"nDCG@10 ({round(config.confidence * 100)}% bootstrap CI)", errors=errors)
    write_json(out / "manifest.json", {
        "kind": "colmed-benchmark", "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": sys.argv, "config": asdict(config), "git_sha": git_sha(),
        "versions": package_versions(("statsmodels", "scipy", "datasketch")),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "inputs": {"datasets": {d: {k: results["protocol"][d][k] for k in
                                    ("dataset_source", "dataset_fingerprint", "qrels_hash", "queries_hash")}
                                for d in results["datasets"]},
                   "retrievers": {r["name"]: r["identity"] for r in results["retrievers"]}},
        "skipped": results["skipped"], "outputs": ["report.md", "ndcg@10.csv", "metrics.csv", "results.json",
                                                   "benchmark.png"]})
