"""Several finished ``colmed study`` runs, on one footing, in one results file.

Each study is one training source (inverse cloze, a labelled split, LLM queries ...) trained into both families
from the same bases with the same budget rules. This script puts them side by side through the public CLI and
the studies' shared content-keyed cache (what a study's benchmark computed is not computed again; a dataset a
study's benchmark left out, e.g. ArguAna for time, is computed here once for every model):

1. one ``colmed benchmark`` over BM25, the two bases, every study's trained models and their RRF hybrids with
   BM25, baseline BM25, with paired tests (``--compare``) of each trained model against its base, ColBERT
   against dense within each study, and the sources against each other per family: one family of tests per
   dataset, Holm-corrected together (more conservative than a study's own report, which corrects its three);
2. ``<results>.md`` / ``.json``: per study its data (counts, filter and acceptance rates, generation throughput,
   contamination verdicts), stage wall times, training budget and throughput (steps x batch, seconds,
   triplets/s); then the tables with 95% intervals and the tests; each study's report and the combined
   benchmark are copied beside it.

Example (issue #18's bench, two sources)::

    python bench/studies.py --study ict=runs/one-trainer-ict --study nftrain=runs/one-trainer-nftrain \\
        --results bench/results/one_trainer --title "Both families on one trainer" --reading notes.md
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FAMILIES = (("dense", "bi-encoder"), ("colbert", "colbert"))


def sh(cmd: list[str], log: list[dict]) -> float:
    """Run one CLI command, echo it, record it with its wall time in ``log``; fail loudly."""
    cmd = [str(c) for c in cmd]
    printable = " ".join(shlex.quote(c) for c in cmd)
    print(f"$ {printable}", flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=REPO, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    seconds = time.perf_counter() - t0
    log.append({"command": printable, "seconds": round(seconds, 1)})
    return seconds


def load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def fmt(x, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}" if isinstance(x, float) else str(x)


def study_facts(out: Path) -> dict:
    """Data, throughput, contamination, stage times and training budgets of one finished study."""
    trip = load(out / "stages" / "triplets" / "manifest.json")
    man = load(out / "manifest.json")
    c = trip.get("counts", {})
    gen = c.get("generation", {})
    contamination = c.get("contamination") or {}
    facts = {
        "source": trip.get("config", {}).get("source") or ("labelled" if "dataset" in trip.get("config", {})
                                                            else "notes"),
        "generator": trip.get("config", {}).get("generator"),
        "notes": c.get("notes", {}).get("sampled"), "passages": gen.get("passages"), "generated": gen.get("generated"),
        "rejected_outputs": gen.get("rejected_outputs"), "filters": c.get("filters"), "records": c.get("records"),
        "throughput": trip.get("throughput", {}),
        "contamination": {"verdicts": {n: d.get("verdict") for n, d in contamination.get("per_dataset", {}).items()},
                          "removed": contamination.get("removed"), "kept": contamination.get("kept")},
        "stages": {k: {"status": v.get("status"), "seconds": v.get("seconds")}
                   for k, v in man.get("stages", {}).items()},
    }
    for family, folder in FAMILIES:
        m = load(out / "stages" / folder / "model" / "manifest.json")
        steps, seconds, batch = m.get("global_steps"), m.get("train_seconds"), m.get("config", {}).get("batch_size")
        met = m.get("metrics", {})
        facts[family] = {
            "steps": steps, "batch_size": batch, "seconds": seconds,
            "triplets_per_s": round(steps * batch * (m.get("world_size") or 1) / seconds, 2)
            if steps and batch and seconds else None,
            "examples": (m.get("data") or {}).get("examples") or (m.get("data") or {}).get("train_examples"),
            "dev_base": (met.get("base_dev") or {}).get("dev_ndcg@10"), "dev_best": met.get("best_dev"),
        }
    return facts


def copy_tree(src: Path, dest: Path) -> None:
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("cache", "stages"))


def ndcg_table(res: dict, rows: list[str], metric: str = "ndcg@10") -> list[str]:
    """``metric`` with its 95% interval per dataset; ▲/▼ = significantly better/worse than the baseline."""
    ds = res["datasets"]
    lines = ["| retriever | " + " | ".join(ds) + " |", "|---" * (len(ds) + 1) + "|"]
    for name in rows:
        cells = []
        for d in ds:
            v = res["scores"].get(name, {}).get(d, {}).get(metric)
            ci = res["ci"].get(d, {}).get(name, {}).get(metric)
            t = res["vs_baseline"].get(d, {}).get(name, {}).get(metric, {})
            mark = ("▲" if t.get("direction") == "better" else "▼") if t.get("significant") else ""
            cells.append("n/a" if v is None else f"{v:.4f}{mark} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{v:.4f}{mark}")
        lines.append(f"| {name}{' (baseline)' if name == res['baseline'] else ''} | " + " | ".join(cells) + " |")
    return lines


def pairs_table(res: dict, metrics=("ndcg@10", "recall@100")) -> list[str]:
    lines = ["| dataset | A − B | metric | Δ [95% CI] | p | p (Holm) | significant |", "|---|---|---|---|---|---|---|"]
    for d, pairs in res.get("comparisons", {}).items():
        for pair, tests in pairs.items():
            for m in metrics:
                t = tests.get(m)
                if t:
                    a, _, b = pair.partition(":")
                    lines.append(f"| {d} | {a} − {b} | {m} | {t['delta']:+.4f} [{t['delta_ci'][0]:+.4f}, "
                                 f"{t['delta_ci'][1]:+.4f}] | {t['p_value']:.3g} | {t['p_holm']:.3g} | "
                                 f"{'yes' if t['significant'] else 'no'} |")
    return lines


def main() -> None:
    from colmed.core.provenance import git_sha
    from colmed.study import StudyConfig, resolve_model

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--study", action="append", required=True, metavar="TAG=FOLDER",
                    help="A finished study's out folder, named by its source (repeat).")
    ap.add_argument("--results", required=True, help="Results path without extension (bench/results/NAME).")
    ap.add_argument("--title", default="Training sources compared")
    ap.add_argument("--dataset", action="append", default=[], help="Datasets [the first study's benchmark sets].")
    ap.add_argument("--cache-dir", default=None, help="Benchmark cache [the first study's benchmark cache-dir].")
    ap.add_argument("--out", default=None, help="Combined benchmark folder [runs/<results name>-combined].")
    ap.add_argument("--reading", default=None, help="Markdown file with the reading of the results, appended.")
    ap.add_argument("--machine", default="2-core shared CPU (no GPU), 24 GiB RAM")
    args = ap.parse_args()

    studies: dict[str, tuple[Path, StudyConfig]] = {}
    for item in args.study:
        tag, sep, folder = item.partition("=")
        if not sep or not (Path(folder) / "study_config.json").is_file():
            ap.error(f"--study {item!r}: expected TAG=FOLDER of a study that has run (study_config.json)")
        studies[tag] = (Path(folder), StudyConfig.from_dict(load(Path(folder) / "study_config.json")))
    first = next(iter(studies.values()))[1]
    bases = {(resolve_model(c.bi_encoder.base), resolve_model(c.colbert.base)) for _, c in studies.values()}
    if len(bases) != 1:
        ap.error(f"the studies start from different bases ({bases}): not one footing")
    dense_base, colbert_base = bases.pop()
    retrievers = {"bm25": "bm25", "dense-base": f"dense:{dense_base}", "colbert-base": f"colbert:{colbert_base}"}
    compare: list[str] = []
    for family, folder in FAMILIES:
        trained = []
        for tag, (out, _) in studies.items():
            model = out / "stages" / folder / "model"
            if (model / "manifest.json").is_file():
                retrievers[f"{family}-{tag}"] = f"{family}:{model}"
                trained.append(f"{family}-{tag}")
                compare.append(f"{family}-{tag}:{family}-base")
        compare += [f"{a}:{b}" for i, a in enumerate(trained) for b in trained[i + 1:]]
    compare += [f"colbert-{tag}:dense-{tag}" for tag in studies
                if f"colbert-{tag}" in retrievers and f"dense-{tag}" in retrievers]
    for name in [n for n in retrievers if n.startswith(("dense-", "colbert-")) and not n.endswith("-base")]:
        retrievers[f"hybrid-{name}"] = f"rrf:bm25+{name}"
    datasets = args.dataset or first.benchmark.datasets
    cache = args.cache_dir or first.benchmark.args.get("cache-dir")
    combined = Path(args.out or f"runs/{Path(args.results).name}-combined")
    log: list[dict] = []
    sh([sys.executable, "-m", "colmed.cli", "benchmark", *sum((["--retriever", f"{n}={t}"] for n, t in
                                                               retrievers.items()), []),
        *(sum((["--dataset", d] for d in datasets), []) or ["--suite", first.benchmark.suite]),
        *(["--data-dir", first.benchmark.data_dir] if first.benchmark.data_dir else []), "--baseline", "bm25",
        *sum((["--compare", c] for c in compare), []), *(["--cache-dir", cache] if cache else []),
        *(["--check-published"] if first.benchmark.args.get("check-published") else []),
        "--out", combined], log)
    res = load(combined / "results.json")

    res_dir = Path(args.results)
    res_dir.mkdir(parents=True, exist_ok=True)
    facts = {tag: study_facts(out) for tag, (out, _) in studies.items()}
    for tag, (out, _) in studies.items():
        copy_tree(out, res_dir / tag)
    copy_tree(combined, res_dir / "combined")

    git = git_sha(REPO) or "unknown"
    date = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    tags = list(studies)
    lines = [f"# {args.title}", "",
             f"- Date: {date}; git `{git[:12]}`; machine: {args.machine}; {platform.platform()}, {os.cpu_count()} CPUs.",
             "- Studies (`colmed study` runs; each one's full config is `<tag>/study_config.json` beside this file,"
             " and the YAML it came from names its one command):",
             *[f"  - `{tag}`: `{out}`" for tag, (out, _) in studies.items()],
             f"- This file: `python {' '.join(shlex.quote(a) for a in sys.argv)}`; what it ran:", ""]
    lines += [f"    {c['command']}   # {c['seconds']} s" for c in log] + [""]
    lines += ["## Training data", "", "| | " + " | ".join(tags) + " |", "|---" * (len(tags) + 1) + "|"]
    rows = [("source", lambda f: f["source"]), ("generator", lambda f: f["generator"]),
            ("notes", lambda f: f["notes"]), ("passages", lambda f: f["passages"]),
            ("queries generated", lambda f: f["generated"]), ("LLM outputs rejected", lambda f: f["rejected_outputs"]),
            ("dropped by filters", lambda f: f["filters"]), ("triplets (train/dev)", lambda f: f["records"]),
            ("generation seconds", lambda f: f["throughput"].get("generate_seconds")),
            ("completion tokens/s", lambda f: f["throughput"].get("completion_tokens_per_second")),
            ("contamination", lambda f: f["contamination"]["verdicts"]),
            ("decontamination removed", lambda f: f["contamination"]["removed"])]
    for label, get in rows:
        lines.append(f"| {label} | " + " | ".join(_short(get(facts[t])) for t in tags) + " |")
    lines += ["", "## Stage wall times (seconds)", "", "| stage | " + " | ".join(tags) + " |",
              "|---" * (len(tags) + 1) + "|"]
    for stage in dict.fromkeys(s for t in tags for s in facts[t]["stages"]):
        cells = []
        for t in tags:
            record = facts[t]["stages"].get(stage, {})
            cells.append("not run (this file's combined benchmark covers it)" if record.get("seconds") is None
                         else f"{record['seconds']} ({record.get('status')})")
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    lines += ["", "## Training budget (identical for both families within a study)", "",
              "| study | family | steps x batch | seconds | triplets/s | dev nDCG@10 base → best |", "|---|---|---|---|---|---|"]
    for t in tags:
        for family, _ in FAMILIES:
            f = facts[t][family]
            lines.append(f"| {t} | {family} | {f['steps']} x {f['batch_size']} | {fmt(f['seconds'], 1)} | "
                         f"{fmt(f['triplets_per_s'], 2)} | {fmt(f['dev_base'])} → {fmt(f['dev_best'])} |")
    names = list(retrievers)
    lines += ["", "## nDCG@10 [95% CI] (▲/▼: significantly better/worse than BM25, paired t-test, Holm)", ""]
    lines += ndcg_table(res, names) + ["", "## Recall@100 [95% CI]", ""] + ndcg_table(res, names, "recall@100")
    skipped = res.get("skipped", [])
    if skipped:
        lines += ["", "Skipped: " + "; ".join(f"{s['dataset']} ({s['reason'][:90]})" for s in skipped)]
    lines += ["", "![nDCG@10](" + f"{res_dir.name}/combined/benchmark.png)", ""]
    if compare:
        lines += ["## Paired tests: each trained model vs its base, ColBERT vs dense, sources against each other",
                  "", "Paired t-test per dataset; Holm across all the pairs below on a dataset.", ""]
        lines += pairs_table(res) + [""]
    lines += ["Each study's report (sample queries, filters, contamination, loss and dev curves, manifest): "
              + ", ".join(f"[{t}]({res_dir.name}/{t}/report.md)" for t in tags)
              + f"; the combined benchmark: [combined/report.md]({res_dir.name}/combined/report.md).", ""]
    if args.reading:
        lines += [Path(args.reading).read_text(encoding="utf-8").strip(), ""]
    md = Path(str(res_dir) + ".md")
    md.write_text("\n".join(lines), encoding="utf-8")
    Path(str(res_dir) + ".json").write_text(json.dumps(
        {"date": date, "git": git, "machine": args.machine, "commands": log, "facts": facts,
         "scores": res.get("scores"), "ci": res.get("ci"), "vs_bm25": res.get("vs_baseline"),
         "pairs": res.get("comparisons"),
         "skipped": skipped}, indent=2, default=str), encoding="utf-8")
    print(f"wrote {md}")


def _short(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k}={_short(v)}" for k, v in value.items()) or "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return "n/a" if value is None else str(value)


if __name__ == "__main__":
    main()
