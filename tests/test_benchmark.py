"""``colmed benchmark``: hand-checked tables, skipped datasets, caching, significance, published check."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

os.environ["HF_HUB_OFFLINE"] = "1"

from colmed.cli import main  # noqa: E402
from colmed.core.errors import InputError  # noqa: E402
from colmed.core.provenance import git_sha  # noqa: E402
from colmed.benchmark import BenchmarkConfig, RetrieverSpec, run_benchmark  # noqa: E402
from colmed.eval.published import check_published  # noqa: E402
from colmed.data.runs import read_trec  # noqa: E402


def _quiet(_line: str) -> None:
    pass


@pytest.fixture()
def data_dir(tmp_path, sample_dataset_dir) -> Path:
    """A --data-dir holding the bundled sample as 'nfcorpus' and a corpus-less 'trec-covid' folder."""
    root = tmp_path / "beir"
    shutil.copytree(sample_dataset_dir, root / "nfcorpus")
    (root / "trec-covid" / "qrels").mkdir(parents=True)
    shutil.copy(sample_dataset_dir / "queries.jsonl", root / "trec-covid" / "queries.jsonl")
    shutil.copy(sample_dataset_dir / "qrels" / "test.tsv", root / "trec-covid" / "qrels" / "test.tsv")
    return root


def _hand_metrics(run: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]]) -> dict[str, float]:
    """nDCG@10 (linear gains), Recall@100 and MRR@10 written out from their definitions."""
    ndcg, recall, mrr = [], [], []
    for q, rels in qrels.items():
        ranked = [d for d, _ in sorted(run.get(q, {}).items(), key=lambda kv: (-kv[1], kv[0]))]
        dcg = sum(rels.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:10]))
        ideal = sorted(rels.values(), reverse=True)
        idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal[:10]))
        ndcg.append(dcg / idcg)
        relevant = {d for d, g in rels.items() if g > 0}
        recall.append(len(relevant & set(ranked[:100])) / len(relevant))
        mrr.append(next((1 / (i + 1) for i, d in enumerate(ranked[:10]) if d in relevant), 0.0))
    n = len(qrels)
    return {"ndcg@10": sum(ndcg) / n, "recall@100": sum(recall) / n, "mrr@10": sum(mrr) / n}


def test_table_values_match_metrics_computed_by_hand(tmp_path, data_dir, tiny_st_model_dir):
    from colmed.data.datasets import load_beir_folder

    out = tmp_path / "bench"
    cfg = BenchmarkConfig(retrievers=["bm25", f"tiny=dense:{tiny_st_model_dir}"], datasets=["nfcorpus"],
                          data_dir=str(data_dir), out=str(out), bootstrap_resamples=500,
                          comparisons=["tiny:bm25", "bm25:tiny"])
    results = run_benchmark(cfg, log=_quiet)
    ds = load_beir_folder(data_dir / "nfcorpus", name="nfcorpus")
    table = {row["retriever"]: row for row in csv.DictReader(open(out / "ndcg@10.csv"))}
    long = list(csv.DictReader(open(out / "metrics.csv")))
    for name in ("bm25", "tiny"):
        run_path = results.cell(name, "nfcorpus").run_path
        expected = _hand_metrics(read_trec(run_path), ds.qrels)
        assert float(table[name]["nfcorpus"]) == pytest.approx(expected["ndcg@10"], abs=1e-6)
        assert float(table[name]["average"]) == pytest.approx(expected["ndcg@10"], abs=1e-6)
        for metric, value in expected.items():
            row = next(r for r in long if r["retriever"] == name and r["metric"] == metric)
            assert float(row["value"]) == pytest.approx(value, abs=1e-6)
            assert float(row["ci_low"]) <= float(row["value"]) <= float(row["ci_high"])
    # the markdown report carries the same numbers, the baseline test and the protocol
    report = (out / "report.md").read_text()
    assert f"{float(table['bm25']['nfcorpus']):.4f} [" in report and "bm25 (baseline)" in report
    assert "Holm" in report and "paired Student's t-test" in report and "self-hits" in report.lower()
    t = results.cell("tiny", "nfcorpus").vs_baseline["ndcg@10"]
    assert t.p_holm >= t.p_value and t.delta_ci[0] <= t.delta <= t.delta_ci[1]
    assert "ndcg@10" not in results.cell("bm25", "nfcorpus").vs_baseline  # the baseline is not tested against itself
    assert t.delta == pytest.approx(float(table["tiny"]["nfcorpus"]) - float(table["bm25"]["nfcorpus"]), abs=1e-6)
    # A configured pair is the same paired test (Holm-corrected over the pairs: two here) and its mirror negates it.
    pair, mirror = (results.datasets["nfcorpus"].comparisons[k]["ndcg@10"] for k in ("tiny:bm25", "bm25:tiny"))
    assert (pair.delta, pair.p_value) == (pytest.approx(t.delta), pytest.approx(t.p_value))
    assert pair.p_holm == pytest.approx(min(1.0, 2 * t.p_value)) and mirror.delta == pytest.approx(-t.delta)
    assert json.loads((out / "results.json").read_text())["comparisons"]["nfcorpus"]["tiny:bm25"]["ndcg@10"]["delta"] \
        == pytest.approx(t.delta)
    assert "## Paired comparisons" in report and f"tiny − bm25 | ndcg@10 | {t.delta:+.4f}" in report
    for name in ("report.md", "ndcg@10.csv", "metrics.csv", "results.json", "benchmark.png", "manifest.json"):
        assert (out / name).is_file(), name
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["inputs"]["datasets"]["nfcorpus"]["dataset_fingerprint"] == ds.fingerprint
    assert manifest["inputs"]["retrievers"]["tiny"]["model_hash"]  # local model identified by content


def test_rrf_retriever_fuses_the_runs_of_its_components_as_written_by_hand(tmp_path, data_dir, tiny_st_model_dir):
    """hybrid=rrf:bm25+tiny is the reciprocal-rank fusion (k=60) of the two runs of the same benchmark: each
    document scores the sum of 1/(60 + its rank) over the runs; a component missing from the benchmark is
    refused before anything runs."""
    from colmed.api import evaluate
    from colmed.benchmark.runner import fused_run
    from colmed.data.datasets import load_beir_folder

    out = tmp_path / "bench"
    cfg = BenchmarkConfig(retrievers=["bm25", f"tiny=dense:{tiny_st_model_dir}", "hybrid=rrf:bm25+tiny"],
                          datasets=["nfcorpus"], data_dir=str(data_dir), out=str(out), bootstrap_resamples=200,
                          comparisons=["hybrid:tiny"])
    results = run_benchmark(cfg, log=_quiet)
    ds = load_beir_folder(data_dir / "nfcorpus", name="nfcorpus")
    parts = {n: read_trec(results.cell(n, "nfcorpus").run_path) for n in ("bm25", "tiny")}
    by_hand: dict[str, dict[str, float]] = {}
    for run in parts.values():
        for q, docs in run.items():
            for rank, d in enumerate(docs, start=1):  # a TREC run file lists each query's documents best first
                by_hand.setdefault(q, {})[d] = by_hand.get(q, {}).get(d, 0.0) + 1 / (60 + rank)
    cell, fused = fused_run(cfg.retriever_specs()[2], parts, k=100)
    assert fused.keys() == by_hand.keys()
    assert all(fused[q] == pytest.approx(by_hand[q], abs=1e-12) for q in by_hand)
    reported = results.cell("hybrid", "nfcorpus")
    assert reported.status == cell.status == "fused (rrf of bm25 + tiny)"
    assert reported.scores["ndcg@10"] == pytest.approx(evaluate(ds, fused)["ndcg@10"], abs=1e-9)
    assert "hybrid:tiny" in results.datasets["nfcorpus"].comparisons
    assert "| hybrid |" in (out / "report.md").read_text()
    with pytest.raises(InputError, match="fuses bm25\\+nope"):
        BenchmarkConfig(retrievers=["bm25", "h=rrf:bm25+nope"]).retriever_specs()


def test_identical_runs_compare_with_p_one_not_nan(tmp_path, data_dir):
    """Two retrievers with the same per-query scores: the paired t statistic is undefined (scipy gives nan); the
    test reports p = 1 (no evidence of a difference), so it neither shows 'nan' nor skews Holm for the others."""
    cfg = BenchmarkConfig(retrievers=["bm25", "lex=bm25"], datasets=["nfcorpus"], data_dir=str(data_dir),
                          out=str(tmp_path / "bench"), bootstrap_resamples=100, comparisons=["lex:bm25"])
    results = run_benchmark(cfg, log=_quiet)
    for t in (results.cell("lex", "nfcorpus").vs_baseline["ndcg@10"],
              results.datasets["nfcorpus"].comparisons["lex:bm25"]["ndcg@10"]):
        assert (t.delta, t.p_value, t.p_holm, t.significant) == (0.0, 1.0, 1.0, False)


def test_missing_and_incomplete_datasets_are_skipped_with_one_line(tmp_path, data_dir):
    result = CliRunner().invoke(main, ["benchmark", "--retriever", "bm25", "--dataset", "nfcorpus",
                                       "--dataset", "trec-covid", "--dataset", "publichealthqa", "--data-dir",
                                       str(data_dir), "--out", str(tmp_path / "b")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    skip_lines = [line for line in result.output.splitlines() if line.startswith("skipped ")]
    assert len([s for s in skip_lines if s.startswith("skipped trec-covid: ")]) == 1
    assert len([s for s in skip_lines if s.startswith("skipped publichealthqa: ")]) == 1
    trec = next(s for s in skip_lines if s.startswith("skipped trec-covid"))
    assert "no corpus.jsonl" in trec and "BeIR/trec-covid" in trec  # local folder tried, then the hub
    report = (tmp_path / "b" / "report.md").read_text()
    assert "## Skipped datasets" in report and "- trec-covid:" in report and "- publichealthqa:" in report
    results = json.loads((tmp_path / "b" / "results.json").read_text())
    assert results["datasets"] == ["nfcorpus"] and [s["dataset"] for s in results["skipped"]] == [
        "trec-covid", "publichealthqa"]


def test_adding_a_retriever_reuses_the_cached_ones(tmp_path, data_dir, tiny_st_model_dir, monkeypatch):
    import colmed.indexes.base as index_base

    built = []
    real_build = index_base.build_index

    def counting_build(kind, *args, **kwargs):
        built.append(kind)
        return real_build(kind, *args, **kwargs)

    monkeypatch.setattr(index_base, "build_index", counting_build)
    out = tmp_path / "bench"
    base = dict(datasets=["nfcorpus"], data_dir=str(data_dir), out=str(out), bootstrap_resamples=200)
    first = run_benchmark(BenchmarkConfig(retrievers=["bm25"], **base), log=_quiet)
    assert built == ["bm25"]
    run_path = Path(first.cell("bm25", "nfcorpus").run_path)
    mtime = run_path.stat().st_mtime_ns

    second = run_benchmark(BenchmarkConfig(retrievers=["bm25", f"tiny=dense:{tiny_st_model_dir}"], **base),
                           log=_quiet)
    assert built == ["bm25", "dense"]  # only the new retriever was built
    assert second.cell("bm25", "nfcorpus").status == "cached"
    assert second.cell("tiny", "nfcorpus").status == "built index + searched"
    assert run_path.stat().st_mtime_ns == mtime
    assert second.cell("bm25", "nfcorpus").scores == first.cell("bm25", "nfcorpus").scores

    # a different setting is a different cache key: k changes the run, not the index
    third = run_benchmark(BenchmarkConfig(retrievers=["bm25"], k=10, **base), log=_quiet)
    assert built == ["bm25", "dense"] and third.cell("bm25", "nfcorpus").status == "searched (index reused)"



def test_benchmarks_sharing_a_cache_dir_compute_a_retriever_once(tmp_path, data_dir):
    cache = tmp_path / "shared-cache"
    base = dict(datasets=["nfcorpus"], data_dir=str(data_dir), cache_dir=str(cache), bootstrap_resamples=200)
    first = run_benchmark(BenchmarkConfig(retrievers=["bm25"], out=str(tmp_path / "a"), **base), log=_quiet)
    second = run_benchmark(BenchmarkConfig(retrievers=["bm25"], out=str(tmp_path / "b"), **base), log=_quiet)
    assert first.cell("bm25", "nfcorpus").status != "cached"
    assert second.cell("bm25", "nfcorpus").status == "cached"
    assert second.cell("bm25", "nfcorpus").scores == first.cell("bm25", "nfcorpus").scores
    assert Path(second.cell("bm25", "nfcorpus").run_path).is_relative_to(cache)
    assert not (tmp_path / "a" / "cache").exists() and (tmp_path / "b" / "report.md").is_file()
    # the cache is keyed by content: the same retriever under another name is not recomputed
    renamed = run_benchmark(BenchmarkConfig(retrievers=["lexical=bm25"], out=str(tmp_path / "c"), **base), log=_quiet)
    assert renamed.cell("lexical", "nfcorpus").status == "cached"
    assert renamed.cell("lexical", "nfcorpus").scores == first.cell("bm25", "nfcorpus").scores

def test_benchmarks_reaching_one_uncached_index_together_build_it_once(tmp_path, data_dir, monkeypatch):
    """Two benchmarks sharing a cache that need the same index at the same moment: the second (another
    process, from the CLI) waits for the first's index and run and reads them from the cache, instead of failing
    on the index's writer lock."""
    import subprocess
    import sys
    import threading

    import colmed.indexes.base as index_base

    cache = tmp_path / "shared-cache"
    # under another retriever name: the cache is keyed by content, and so is the wait
    second_cmd = [sys.executable, "-m", "colmed.cli", "benchmark", "--retriever", "lexical=bm25",
                  "--dataset", "nfcorpus",
                  "--data-dir", str(data_dir), "--cache-dir", str(cache), "--out", str(tmp_path / "b"),
                  "--bootstrap-resamples", "200"]
    second, waiting, stderr = None, threading.Event(), []
    real_build = index_base.build_index

    def read_stderr(stream) -> None:
        for line in stream:
            stderr.append(line)
            if "waiting for another colmed process building or searching lexical" in line:
                waiting.set()

    def build_while_the_second_arrives(kind, *args, **kwargs):  # the real build, once the second is waiting
        nonlocal second
        if second is None:
            second = subprocess.Popen(second_cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                                      env={**os.environ, "HF_HUB_OFFLINE": "1"})
            threading.Thread(target=read_stderr, args=(second.stderr,), daemon=True).start()
            for _ in range(3000):  # until it waits, or ends (which fails below)
                if waiting.wait(0.1) or second.poll() is not None:
                    break
        return real_build(kind, *args, **kwargs)

    monkeypatch.setattr(index_base, "build_index", build_while_the_second_arrives)
    first = run_benchmark(BenchmarkConfig(retrievers=["bm25"], datasets=["nfcorpus"], data_dir=str(data_dir),
                                          cache_dir=str(cache), out=str(tmp_path / "a"), bootstrap_resamples=200),
                          log=_quiet)
    assert second.wait(300) == 0, "".join(stderr)
    assert waiting.is_set()
    later = json.loads((tmp_path / "b" / "results.json").read_text())
    assert first.cell("bm25", "nfcorpus").status == "built index + searched"
    assert later["cells"]["nfcorpus"]["lexical"]["status"] == "cached"
    assert later["scores"]["lexical"]["nfcorpus"] == pytest.approx(first.cell("bm25", "nfcorpus").scores)


def test_prebuilt_index_retriever_applies_only_to_its_own_corpus(tmp_path, data_dir, sample_dataset_dir):
    from colmed.data.datasets import load_beir_folder
    from colmed.indexes.base import build_index

    ds = load_beir_folder(data_dir / "nfcorpus", name="nfcorpus")
    build_index("bm25", ds, tmp_path / "idx", k1=0.9, b=0.4)
    other = tmp_path / "other"
    shutil.copytree(sample_dataset_dir, other / "publichealthqa")
    with open(other / "publichealthqa" / "corpus.jsonl", "a") as f:
        f.write('{"_id": "extra", "title": "", "text": "an extra document"}\n')
    shutil.copytree(data_dir / "nfcorpus", other / "nfcorpus")
    cfg = BenchmarkConfig(retrievers=["bm25", f"tuned=index:{tmp_path / 'idx'}"],
                          datasets=["nfcorpus", "publichealthqa"], data_dir=str(other), out=str(tmp_path / "b"),
                          bootstrap_resamples=200)
    res = run_benchmark(cfg, log=_quiet)
    assert "nfcorpus" in res.scores()["tuned"] and "publichealthqa" not in res.scores()["tuned"]
    assert res.cell("tuned", "publichealthqa").status == "not applicable"
    assert res.score("tuned", "publichealthqa") is None and res.score("bm25", "publichealthqa") > 0
    assert "n/a" in (tmp_path / "b" / "report.md").read_text()


def test_retraining_into_the_same_folder_is_a_new_cache_key(tmp_path, data_dir, tiny_st_model_dir):
    from sentence_transformers import SentenceTransformer

    model = tmp_path / "model"
    shutil.copytree(tiny_st_model_dir, model)
    base = dict(retrievers=[f"tiny=dense:{model}"], datasets=["nfcorpus"], data_dir=str(data_dir),
                bootstrap_resamples=100)
    first = run_benchmark(BenchmarkConfig(out=str(tmp_path / "a"), **base), log=_quiet)
    again = run_benchmark(BenchmarkConfig(out=str(tmp_path / "a"), **base), log=_quiet)
    assert again.cell("tiny", "nfcorpus").status == "cached"
    # "retrain" in this process: new weights written over the old files, same folder, same file sizes
    import torch

    st = SentenceTransformer(str(model), device="cpu")
    torch.manual_seed(0)
    with torch.no_grad():
        for p in st.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    st.save(str(model))
    retrained = run_benchmark(BenchmarkConfig(out=str(tmp_path / "a"), **base), log=_quiet)
    cell = retrained.cell("tiny", "nfcorpus")
    assert cell.status == "built index + searched" and cell.run_path != first.cell("tiny", "nfcorpus").run_path
    assert retrained.retrievers[0].identity["model_hash"] != first.retrievers[0].identity["model_hash"]
    assert json.loads(Path(cell.run_path + ".json").read_text())["identity"]["model_hash"] == \
        retrained.retrievers[0].identity["model_hash"]


def test_result_to_dict_is_the_results_json(tmp_path, data_dir):
    result = run_benchmark(BenchmarkConfig(retrievers=["bm25", "again=bm25"], datasets=["nfcorpus"],
                                           data_dir=str(data_dir), out=str(tmp_path / "b"), bootstrap_resamples=100),
                           log=_quiet)
    written = json.loads((tmp_path / "b" / "results.json").read_text())
    assert written == json.loads(json.dumps(result.to_dict()))
    assert written["scores"]["again"]["nfcorpus"]["ndcg@10"] == result.score("again", "nfcorpus")
    t = written["vs_baseline"]["nfcorpus"]["again"]["ndcg@10"]
    assert (t["delta"], t["significant"]) == (0.0, False)  # the same retriever twice: no difference
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert manifest["kind"] == "colmed-benchmark" and manifest["git_sha"] == git_sha()
    assert set(manifest["inputs"]) == {"datasets", "retrievers"} and "bm25s" in manifest["versions"]


def test_retriever_specs_and_config_errors(tmp_path):
    assert RetrieverSpec.parse("bm25").name == "bm25"
    spec = RetrieverSpec.parse("minilm=dense:sentence-transformers/all-MiniLM-L6-v2")
    assert (spec.name, spec.kind, spec.target) == ("minilm", "dense", "sentence-transformers/all-MiniLM-L6-v2")
    assert RetrieverSpec.parse("colbert:ckpt/colbertv2.0").name == "colbert:colbertv2.0"
    with pytest.raises(InputError, match="unknown retriever"):
        RetrieverSpec.parse("splade:x")
    with pytest.raises(InputError, match="needs a target"):
        RetrieverSpec.parse("dense")
    with pytest.raises(InputError, match="baseline 'nope'"):
        BenchmarkConfig(retrievers=["bm25"], baseline="nope").retriever_specs()
    with pytest.raises(InputError, match="field 'comparisons'.*'bm25:nope' must be A:B"):
        BenchmarkConfig(retrievers=["bm25", "dense:m"], comparisons=["bm25:nope"]).retriever_specs()
    named = BenchmarkConfig(retrievers=["bm25", "colbert:ckpt/colbertv2.0"], comparisons=["colbert:colbertv2.0:bm25"])
    assert named.comparison_pairs(named.retriever_names()) == [("colbert:colbertv2.0", "bm25")]
    cfg_path = tmp_path / "bench.yaml"
    cfg_path.write_text("retrievers: [bm25]\nsuite: medical\nk: 50\n")
    cfg = BenchmarkConfig.from_yaml(cfg_path, k=20, out="x")
    assert (cfg.k, cfg.suite, cfg.out) == (20, "medical", "x")
    cfg_path.write_text("retrievers: [bm25]\nsuites: medical\n")
    with pytest.raises(InputError, match="field 'suites'"):
        BenchmarkConfig.from_yaml(cfg_path)


def test_published_check_flags_gaps_beyond_tolerance():
    rows = check_published({"bm25": {"nfcorpus": 0.29, "publichealthqa": 0.7}, "mine": {"nfcorpus": 0.4}},
                           {"bm25": "bm25", "mine": None}, tolerance=0.02)
    by_status = {(r["dataset"], r["status"]) for r in rows}
    assert ("nfcorpus", "GAP") in by_status and ("nfcorpus", "reference") in by_status
    gap = next(r for r in rows if r["status"] == "GAP")
    assert gap["diff"] == pytest.approx(0.29 - gap["published"]) and gap["source"] and gap["url"]
    # no published figure for a non-reference model: one row that says so
    assert all(r["retriever"] == "bm25" for r in rows if r["status"] != "no figure")
    assert sorted((r["retriever"], r["dataset"]) for r in rows if r["status"] == "no figure") == [
        ("bm25", "publichealthqa"), ("mine", "nfcorpus")]
