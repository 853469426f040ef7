"""The study report: one markdown file (with PNG figures) that a reader can audit end to end.

Sections: the plan and stage timings; data statistics per stage with filter rates and ten sample
queries with their source notes; training curves (loss, dev nDCG@10); the benchmark tables (from
``colmed benchmark``); and the manifest (config, versions, git sha, data hashes). Whatever a stage
did not produce (a disabled trainer, a skipped dataset) is said, not hidden.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from colmed.core.io import atomic_write, write_json
from colmed.eval.report import save_png


def _load(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    except json.JSONDecodeError:
        return None


def _plot_curves(series: dict[str, list[tuple[float, float]]], path: Path, title: str, ylabel: str) -> bool:
    series = {k: v for k, v in series.items() if v}
    if not series:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.2))
    for name, pts in series.items():
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 30 else None, label=name)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    save_png(fig, path, dpi=110)
    return True


def _data_section(triplets_dir: Path, images: Path) -> list[str]:
    m = _load(triplets_dir / "manifest.json")
    if m is None:
        return ["_No triplet manifest found._", ""]
    lines = [f"Generator `{m.get('config', {}).get('generator')}`, miner `{m.get('config', {}).get('miner')}`; "
             f"input `{m.get('input', {}).get('path', m.get('input'))}`.", ""]
    counts = m.get("counts", {})
    lines += ["| stage | counts |", "|---|---|"]
    for stage, c in counts.items():
        if isinstance(c, dict):
            lines.append(f"| {stage} | " + ", ".join(f"{k}={v}" for k, v in c.items()) + " |")
        else:
            lines.append(f"| {stage} | {c} |")
    thr = m.get("throughput")
    if thr:
        lines += ["", "Throughput: " + ", ".join(f"{k}={v}" for k, v in thr.items()) + "."]
    lines.append("")
    trip = triplets_dir / "triplets.jsonl"
    if trip.is_file():
        from colmed.data.triplets import read_triplets

        recs = list(read_triplets(trip))
        sample = random.Random(0).sample(recs, min(10, len(recs)))
        lines += ["### Ten sample queries", "", "| note | query | positive passage (start) | negatives |", "|---|---|---|---|"]
        for r in sample:
            esc = lambda t: t.replace("|", "\\|").replace("\n", " ")
            lines.append(f"| {esc(r.note_id)} | {esc(r.query)[:160]} | {esc(r.positive)[:160]}… | {len(r.negatives)} |")
        lines.append("")
    return lines


def _budget(manifest: dict) -> str:
    """Steps, batch, wall time and training throughput, alike for both families."""
    steps, seconds = manifest.get("global_steps"), manifest.get("train_seconds")
    batch = (manifest.get("config") or {}).get("batch_size")
    rate = (f", {steps * batch * (manifest.get('world_size') or 1) / seconds:.2f} triplets/s"
            if steps and batch and seconds else "")
    return f"{steps} steps x batch {batch} in {seconds} s{rate}"


def _training_section(cfg, stages_dir: Path, images: Path) -> list[str]:
    lines: list[str] = []
    loss: dict[str, list] = {}
    dev: dict[str, list] = {}
    bi = _load(stages_dir / "bi-encoder" / "model" / "manifest.json")
    if cfg.bi_encoder.enabled and bi:
        hist = bi.get("metrics", {}).get("log_history") or bi.get("log_history") or []
        loss["bi-encoder"] = [(h["step"], h["loss"]) for h in hist if "loss" in h and "step" in h]
        dev["bi-encoder"] = [(h["step"], v) for h in bi.get("metrics", {}).get("dev_history", [])
                             for k, v in h.items() if k.endswith("ndcg@10") and "step" in h]
        met = bi.get("metrics", {})
        lines.append(f"- bi-encoder: base `{bi.get('base_model')}`, {_budget(bi)}; dev nDCG@10 base "
                     f"{(met.get('base_dev') or {}).get('dev_ndcg@10')} → best fine-tuned {met.get('best_dev')}.")
    elif cfg.bi_encoder.enabled:
        lines.append("- bi-encoder: no manifest found.")
    cb = _load(stages_dir / "colbert" / "model" / "manifest.json")
    if cfg.colbert.enabled and cb:
        loss["colbert"] = [tuple(p) for p in cb.get("loss_curve", [])]
        met = cb.get("metrics", {})
        lines.append(f"- ColBERT: base `{cb.get('base_model')}`, {_budget(cb)}; dev nDCG@10 untrained "
                     f"{(met.get('base_dev') or {}).get('dev_ndcg@10')} → best trained {met.get('best_dev')}; "
                     f"final loss {cb.get('final_loss')}.")
    elif cfg.colbert.enabled:
        lines.append("- ColBERT: no manifest found.")
    lines.append("")
    if _plot_curves(loss, images / "training_loss.png", "training loss", "loss"):
        lines += ["![training loss](report_images/training_loss.png)", ""]
    if _plot_curves(dev, images / "dev_ndcg.png", "dev nDCG@10", "nDCG@10"):
        lines += ["![dev nDCG@10](report_images/dev_ndcg.png)", ""]
    return lines


def _benchmark_section(bench_dir: Path) -> list[str]:
    for name in ("report.md", "benchmark.md"):
        p = bench_dir / name
        if p.is_file():
            text = p.read_text(encoding="utf-8")
            # Images of the benchmark report live in its own folder: make their links relative to ours.
            return [text.replace("](", f"]({bench_dir.name}/").replace(f"]({bench_dir.name}/http", "](http"), ""]
    return ["_The benchmark stage produced no report._", ""]


def write_study_report(cfg, runner, summary: dict[str, Any]) -> Path:
    """Write ``<out>/report.md`` (+ ``report_images/``, ``manifest.json``) and return its path."""
    from colmed.core.provenance import run_manifest

    out = Path(cfg.out)
    stages_dir = out / "stages"
    images = out / "report_images"
    images.mkdir(parents=True, exist_ok=True)
    lines = [f"# colmed study: `{out.name}`", "",
             "## Plan and timings", "", "| stage | status | seconds | key |", "|---|---|---|---|"]
    for stage in runner.stages:
        s = summary.get(stage.name, {})
        lines.append(f"| {stage.name} | {s.get('status', 'not run')} | {s.get('seconds', '')} | `{runner.key(stage)}` |")
    lines += ["", "## Training data", ""] + _data_section(stages_dir / "triplets", images)
    contamination = stages_dir / "triplets" / "contamination.md"
    if contamination.is_file():  # its own "## Train/test contamination" section, written by the generate stage
        lines += [contamination.read_text(encoding="utf-8"), ""]
    lines += ["## Training", ""] + _training_section(cfg, stages_dir, images)
    lines += ["## Benchmark", ""] + _benchmark_section(out / "benchmark")
    source = cfg.data.notes if cfg.data.source == "notes" else cfg.data.labelled_dataset
    manifest = run_manifest(cfg.to_dict(), inputs=[source], kind="colmed-study",
                            stages={s.name: {"key": runner.key(s), **summary.get(s.name, {})} for s in runner.stages})
    write_json(out / "manifest.json", manifest)
    lines += ["## Manifest", "", "```json", json.dumps(manifest, indent=2, default=str)[:6000], "```", ""]
    with atomic_write(out / "report.md") as f:
        f.write("\n".join(lines))
    return out / "report.md"
