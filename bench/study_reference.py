"""The CPU reference study (issue 7) and its LLM-free ablation, summarised in one results file.

Everything goes through the public CLI, so the numbers are what a user gets:

1. with ``--run``: ``colmed study --config bench/study_reference.yaml`` (MTSamples notes -> queries from
   Qwen2.5-Coder-0.5B-Instruct -> BM25 negatives -> all-MiniLM-L6-v2 trained as a bi-encoder and as ColBERT
   -> the medical suite), then the same study with ``data.generator=inverse_cloze`` (LLM-free) on the
   same notes. Both are resumable: a finished stage is skipped.
2. ``colmed benchmark`` over the retrievers of both studies, three times with different baselines
   (BM25; each family's base; the LLM-free model), from the shared content-keyed cache: nothing is
   recomputed, every comparison is a paired test with Holm correction from the benchmark itself.
3. ``bench/results/study_reference.md`` (+ ``.json``) with data statistics, generation throughput, stage
   wall times, training summaries and the tables; each study's own report is copied beside it.

Example (the run reported in bench/results/study_reference.md):

    bash ../shared/models/get-qwen-0.5b-gguf.sh runs/models/qwen
    python bench/study_reference.py --run

Qwen's generation is the study's longest stage (about 1.2 h on 2 cores) and is deterministic here (seed 13:
the 2026-12-02 rerun reproduced the 2026-11-25 queries and counts exactly). Its output is published in
``bench/results/study_reference_generated``; ``--generated bench/results/study_reference_generated`` puts
it in place before ``--run`` (only when it was made by the very stage the config plans), so the rest of
the study reruns without the LLM.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import shutil
import sys
from pathlib import Path

from studies import REPO, fmt, load, sh  # noqa: E402  (bench/ is the script's folder)

DATASETS_ORDER = ["nfcorpus", "trec-covid", "arguana", "medicalqa", "publichealthqa", "scifact"]
RETRIEVERS = ("bm25", "dense-base", "dense-llm", "dense-ict", "colbert-base", "colbert-llm", "colbert-ict")


def ndcg_table(res: dict, rows: list[str]) -> list[str]:
    """nDCG@10 per dataset and the average; ▲/▼ = significantly better/worse than the benchmark's baseline."""
    ds = res["datasets"]
    lines = ["| retriever | " + " | ".join(ds) + " | average |", "|---" * (len(ds) + 2) + "|"]
    for name in rows:
        cells, vals = [], []
        for d in ds:
            v = res["scores"].get(name, {}).get(d, {}).get("ndcg@10")
            t = res["vs_baseline"].get(d, {}).get(name, {}).get("ndcg@10", {})
            mark = ("▲" if t.get("direction") == "better" else "▼") if t.get("significant") else ""
            cells.append(f"{fmt(v)}{mark}")
            vals.append(v)
        avg = sum(vals) / len(vals) if vals and None not in vals else None
        base = " (baseline)" if name == res["baseline"] else ""
        lines.append(f"| {name}{base} | " + " | ".join(cells) + f" | {fmt(avg)} |")
    return lines


def delta_table(res: dict, names: list[str], metric: str = "ndcg@10") -> list[str]:
    ds = res["datasets"]
    lines = [f"| {metric}: vs `{res['baseline']}` | " + " | ".join(ds) + " |", "|---" * (len(ds) + 1) + "|"]
    for name in names:
        cells = []
        for d in ds:
            t = res["vs_baseline"].get(d, {}).get(name, {}).get(metric)
            if not t:
                cells.append("n/a")
                continue
            star = " *" if t.get("significant") else ""
            cells.append(f"{t['delta']:+.4f} (p_Holm {t['p_holm']:.3g}){star}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def study_facts(out: Path) -> dict:
    """Counts, throughput, stage times and training summaries of one finished study."""
    trip = load(out / "stages" / "triplets" / "manifest.json")
    bi = load(out / "stages" / "bi-encoder" / "model" / "manifest.json")
    cb = load(out / "stages" / "colbert" / "model" / "manifest.json")
    man = load(out / "manifest.json")
    c = trip.get("counts", {})
    thr = trip.get("throughput", {})
    met = bi.get("metrics", {})
    hist = [h for h in (met.get("log_history") or bi.get("log_history") or []) if "loss" in h]
    return {
        "generator": trip.get("config", {}).get("generator"),
        "notes": c.get("notes", {}).get("sampled"), "passages": c.get("generation", {}).get("passages"),
        "generated": c.get("generation", {}).get("generated"), "kept": c.get("generation", {}).get("kept"),
        "rejected_outputs": c.get("generation", {}).get("rejected_outputs"), "filters": c.get("filters"),
        "records": c.get("records"), "mining": {k: v for k, v in c.get("mining", {}).items() if k != "removed"},
        "throughput": thr,
        "stages": {k: {"status": v.get("status"), "seconds": v.get("seconds")} for k, v in man.get("stages", {}).items()},
        "bi_encoder": {"steps": bi.get("global_steps"), "seconds": bi.get("train_seconds"),
                       "first_loss": hist[0]["loss"] if hist else None, "last_loss": hist[-1]["loss"] if hist else None,
                       "dev_base": (met.get("base_dev") or {}).get("dev_ndcg@10"), "dev_best": met.get("best_dev")},
        "colbert": {"steps": cb.get("global_steps", cb.get("steps")),  # studies before the names were shared
                    "seconds": cb.get("train_seconds", cb.get("training_seconds")),
                    "first_loss": (cb.get("loss_curve") or [[None, None]])[0][1], "final_loss": cb.get("final_loss")},
    }


def copy_report(study: Path, dest: Path) -> None:
    """The study's report, its images and its benchmark outputs (not the cache) under ``dest``."""
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in ("report.md", "manifest.json"):
        if (study / name).is_file():
            shutil.copy2(study / name, dest / name)
    if (study / "report_images").is_dir():
        shutil.copytree(study / "report_images", dest / "report_images")
    bench = study / "benchmark"
    if bench.is_dir():
        (dest / "benchmark").mkdir()
        for f in bench.iterdir():
            if f.is_file():
                shutil.copy2(f, dest / "benchmark" / f.name)


def main() -> None:
    from colmed.core.provenance import git_sha
    from colmed.study import StudyConfig, resolve_model, restore_generate_stage, save_generate_stage

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="bench/study_reference.yaml")
    ap.add_argument("--main", default="runs/study-reference", help="Out folder of the LLM study.")
    ap.add_argument("--ablation", default="runs/study-reference-ict", help="Out folder of the LLM-free study.")
    ap.add_argument("--ablation-generator", default="inverse_cloze")
    ap.add_argument("--cache-dir", default="runs/bench-cache-reference", help="The studies' shared benchmark cache.")
    ap.add_argument("--compare-out", default="runs/study-reference-compare")
    ap.add_argument("--run", action="store_true", help="Run (or resume) both studies first.")
    ap.add_argument("--generated", default=None,
                    help="Folder of the LLM study's published generate-stage output: restored before --run when "
                         "it matches the planned stage (skips the ~1.2 h LLM run), saved there after it when absent.")
    ap.add_argument("--study-set", action="append", default=[], metavar="KEY=VALUE",
                    help="`colmed study --set` for both studies (repeat), e.g. 'benchmark.datasets=[publichealthqa]' "
                         "when only the comparison benchmarks' --dataset are wanted.")
    ap.add_argument("--results", default="bench/results/study_reference")
    ap.add_argument("--reading", default=None, help="Markdown file with the reading of the results, appended.")
    ap.add_argument("--extra", default=None, help="Markdown file with more measured context (e.g. probes), appended.")
    ap.add_argument("--dataset", action="append", default=[],
                    help="Datasets of the comparison benchmarks (repeat) [the config's benchmark suite].")
    ap.add_argument("--only", action="append", default=[], metavar="RETRIEVER",
                    help="Compare only these of the seven retrievers (repeat; bm25 is required) [all]; a comparison "
                         "left without its baseline or a second retriever is skipped.")
    ap.add_argument("--machine", default="2-core shared CPU (no GPU), 24 GiB RAM")
    args = ap.parse_args()
    if args.only:  # checked before --run, which takes hours
        unknown = sorted(set(args.only) - set(RETRIEVERS))
        problem = (f"unknown {', '.join(unknown)}" if unknown else "no bm25" if "bm25" not in args.only
                   else "bm25 alone" if len(set(args.only)) < 2 else None)
        if problem:
            ap.error(f"--only takes bm25 and at least one of {', '.join(RETRIEVERS[1:])}; got {problem}")

    log: list[dict] = []
    colmed = [sys.executable, "-m", "colmed.cli"]
    if args.run:
        # The very config `colmed study` below runs: the published stage is restored only if it is this one's.
        main_cfg = StudyConfig.from_yaml(REPO / args.config, [*args.study_set, f"out={args.main}"])
        if args.generated and Path(args.generated).is_dir():
            print(restore_generate_stage(main_cfg, args.generated), flush=True)
        study_sets = sum((["--set", x] for x in args.study_set), [])
        sh([*colmed, "study", "--config", args.config, *study_sets, "--out", args.main], log)
        if args.generated and not Path(args.generated).is_dir():
            save_generate_stage(main_cfg, args.generated)
        sh([*colmed, "study", "--config", args.config, *study_sets, "--set",
            f"data.generator={args.ablation_generator}", "--out", args.ablation], log)

    # The same loader and model resolution as `colmed study`, so the retrievers match the studies' cache keys.
    cfg = StudyConfig.from_yaml(REPO / args.config)
    dense_base, colbert_base = resolve_model(cfg.bi_encoder.base), resolve_model(cfg.colbert.base)
    main_st, abl_st = Path(args.main) / "stages", Path(args.ablation) / "stages"
    retrievers = dict(zip(RETRIEVERS, [
        "bm25", f"dense:{dense_base}", f"dense:{main_st / 'bi-encoder' / 'model'}",
        f"dense:{abl_st / 'bi-encoder' / 'model'}", f"colbert:{colbert_base}",
        f"colbert:{main_st / 'colbert' / 'model'}", f"colbert:{abl_st / 'colbert' / 'model'}"], strict=True))
    comparisons = {  # out name -> (baseline, retrievers)
        "all-vs-bm25": ("bm25", list(retrievers)),
        "trained-vs-base-dense": ("dense-base", ["dense-base", "dense-llm", "dense-ict"]),
        "trained-vs-base-colbert": ("colbert-base", ["colbert-base", "colbert-llm", "colbert-ict"]),
        "llm-vs-ict-dense": ("dense-ict", ["dense-ict", "dense-llm"]),
        "llm-vs-ict-colbert": ("colbert-ict", ["colbert-ict", "colbert-llm"]),
    }
    if args.only:
        retrievers = {n: t for n, t in retrievers.items() if n in args.only}
        comparisons = {c: (b, [n for n in names if n in retrievers]) for c, (b, names) in comparisons.items()}
        comparisons = {c: (b, names) for c, (b, names) in comparisons.items() if b in names and len(names) > 1}
    results = {}
    for name, (baseline, names) in comparisons.items():
        out = Path(args.compare_out) / name
        sh([*colmed, "benchmark", *sum((["--retriever", f"{n}={retrievers[n]}"] for n in names), []),
            *(sum((["--dataset", d] for d in args.dataset), []) or ["--suite", cfg.benchmark.suite]),
            *(["--data-dir", cfg.benchmark.data_dir] if cfg.benchmark.data_dir else []), "--baseline", baseline,
            "--cache-dir", args.cache_dir, "--out", out], log)
        results[name] = load(out / "results.json")

    facts = {"llm": study_facts(Path(args.main)), "no-llm": study_facts(Path(args.ablation))}
    res_dir = Path(args.results)
    res_dir.mkdir(parents=True, exist_ok=True)
    copy_report(Path(args.main), res_dir / "llm")
    copy_report(Path(args.ablation), res_dir / "no-llm")
    shutil.rmtree(res_dir / "comparison", ignore_errors=True)
    shutil.copytree(Path(args.compare_out) / "all-vs-bm25", res_dir / "comparison",
                    ignore=shutil.ignore_patterns("cache"))
    shutil.rmtree(res_dir / "benchmarks", ignore_errors=True)
    for name in comparisons:  # each comparison's own report: protocol, hashes, per-retriever cells, plot
        shutil.copytree(Path(args.compare_out) / name, res_dir / "benchmarks" / name,
                        ignore=shutil.ignore_patterns("cache"))

    git = git_sha(REPO) or "unknown"
    date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# CPU reference study: clinical notes → LLM queries → both families → medical suite", "",
        f"- Date: {date}; git `{git[:12]}`; machine: {args.machine}; {platform.platform()}, "
        f"{os.cpu_count()} CPUs.",
        f"- Config: `{args.config}` (LLM study) and the same with `--set data.generator={args.ablation_generator}` "
        f"(LLM-free ablation, same notes, filters and training).",
        f"- Command: `python {' '.join(shlex.quote(a) for a in sys.argv)}`; what it ran:", ""]
    if args.only:
        lines[-2:-2] = [f"- Retrievers: {', '.join(retrievers)} only (`--only`); not compared here: "
                        f"{', '.join(n for n in RETRIEVERS if n not in retrievers) or 'none'}."]
    lines += [f"    {c['command']}   # {c['seconds']} s" for c in log] + [""]
    lines += ["## Training data", "", "| | LLM (Qwen2.5-Coder-0.5B) | LLM-free (" + args.ablation_generator + ") |",
              "|---|---|---|"]
    for key, label in [("notes", "notes sampled"), ("passages", "passages"), ("generated", "queries generated"),
                       ("rejected_outputs", "LLM outputs rejected after retries"), ("filters", "dropped by filters"),
                       ("records", "triplets (train/dev split by note)")]:
        lines.append(f"| {label} | {_short(facts['llm'].get(key))} | {_short(facts['no-llm'].get(key))} |")
    for key, label in [("generate_seconds", "generation seconds"), ("notes_per_second", "notes/s"),
                       ("completion_tokens_per_second", "completion tokens/s"), ("prompt_tokens", "prompt tokens"),
                       ("completion_tokens", "completion tokens")]:
        lines.append(f"| {label} | {_short(facts['llm']['throughput'].get(key))} | "
                     f"{_short(facts['no-llm']['throughput'].get(key))} |")
    lines += ["", "## Stage wall times (seconds)", "", "| stage | LLM study | LLM-free study |", "|---|---|---|"]
    for stage in facts["llm"]["stages"]:
        a, b = facts["llm"]["stages"].get(stage, {}), facts["no-llm"]["stages"].get(stage, {})
        lines.append(f"| {stage} | {a.get('seconds')} ({a.get('status')}) | {b.get('seconds')} ({b.get('status')}) |")
    lines += ["", "## Training", "", "| | LLM study | LLM-free study |", "|---|---|---|"]
    for fam in ("bi_encoder", "colbert"):
        for key, value in facts["llm"][fam].items():
            lines.append(f"| {fam} {key} | {_short(value)} | {_short(facts['no-llm'][fam].get(key))} |")
    all_res = results["all-vs-bm25"]
    lines += ["", f"## nDCG@10 on {', '.join(all_res['datasets']) or 'no dataset'} (▲/▼: significantly better/worse "
              "than BM25, paired t-test, Holm)", ""]
    lines += ndcg_table(all_res, list(retrievers))
    skipped = all_res.get("skipped", [])
    if skipped:
        lines += ["", "Skipped: " + "; ".join(f"{s['dataset']} ({s['reason'].split(':')[-1].strip()[:90]})"
                                             for s in skipped)]
    lines += ["", f"![nDCG@10]({res_dir.name}/comparison/benchmark.png)", ""]
    sections = [("Does training beat its base?", ("trained-vs-base-dense", "trained-vs-base-colbert"),
                 ("ndcg@10", "recall@100")),
                ("LLM queries vs LLM-free queries (same notes, same training)",
                 ("llm-vs-ict-dense", "llm-vs-ict-colbert"), ("ndcg@10",))]
    for heading, names, metrics in sections:
        present = [n for n in names if n in results]  # --only may leave a section without its comparisons
        if present:
            lines += [f"## {heading}", ""]
        for name in present:
            r = results[name]
            trained = [n for n in comparisons[name][1] if n != r["baseline"]]
            for metric in metrics:
                lines += delta_table(r, trained, metric) + [""]
    lines += ["Each study's full report (ten sample queries with their notes, filter rates, loss and dev curves, "
              f"the manifest): [llm/report.md]({res_dir.name}/llm/report.md), "
              f"[no-llm/report.md]({res_dir.name}/no-llm/report.md); every comparison's benchmark report: "
              + ", ".join(f"[{n}]({res_dir.name}/benchmarks/{n}/report.md)" for n in comparisons) + ".", ""]
    for extra in (args.extra, args.reading):
        if extra:
            lines += [Path(extra).read_text(encoding="utf-8").strip(), ""]
    md = Path(str(res_dir) + ".md")
    md.write_text("\n".join(lines), encoding="utf-8")
    Path(str(res_dir) + ".json").write_text(json.dumps(
        {"date": date, "git": git, "machine": args.machine, "commands": log, "facts": facts,
         "scores": all_res["scores"], "comparisons": {k: v.get("vs_baseline") for k, v in results.items()},
         "skipped": skipped}, indent=2, default=str), encoding="utf-8")
    print(f"wrote {md}")


def _short(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, float):
        return f"{value:.4g}"
    return "n/a" if value is None else str(value)


if __name__ == "__main__":
    main()
