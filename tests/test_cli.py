"""The CLI as a user runs it: index -> search -> compare, errors, lazy imports, the offline demo."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from colmed.cli import main


def run_cli(*args, expect=0):
    result = CliRunner().invoke(main, list(map(str, args)), catch_exceptions=False)
    assert result.exit_code == expect, result.output
    return result


def test_help_does_not_import_torch_faiss_or_colbert():
    code = ("import sys; from click.testing import CliRunner; from colmed.cli import main; "
            "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0 and 'index' in r.output; "
            "print(sorted(m for m in ('torch', 'faiss', 'colbert', 'transformers', 'ranx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_index_search_compare_end_to_end(tmp_path, sample_dataset_dir):
    idx, run = tmp_path / "idx", tmp_path / "bm25.trec"
    run_cli("index", "--retriever", "bm25", "--dataset", sample_dataset_dir, "--out", idx)
    r = run_cli("index", "--retriever", "bm25", "--dataset", sample_dataset_dir, "--out", idx, expect=2)
    assert "already exists; pass --overwrite" in r.output
    run_cli("index", "--retriever", "bm25", "--dataset", sample_dataset_dir, "--out", idx, "--overwrite")
    run_cli("search", "--index", idx, "--queries", sample_dataset_dir, "--out", run)
    lines = run.read_text().splitlines()
    assert lines[0].split()[1] == "Q0" and len({ln.split()[0] for ln in lines}) == 18
    sidecar = json.loads((tmp_path / "bm25.trec.json").read_text())
    assert sidecar["split"] == "test" and sidecar["index"]["kind"] == "bm25" and sidecar["k"] == 100
    r = run_cli("search", "--index", idx, "--query", "dry cough lisinopril", "--k", "3")
    assert "htn-02" in r.stdout.splitlines()[0] and "ACE inhibitor cough" in r.stdout
    # A deliberately worse run: BM25's ranking of each query turned upside down. Same documents, so
    # recall@100 cannot separate the two; nDCG@10 must, significantly, in BM25's favour only.
    by_query: dict[str, list[str]] = {}
    for ln in lines:
        by_query.setdefault(ln.split()[0], []).append(ln.split()[2])
    worse = tmp_path / "worse.trec"
    worse.write_text("".join(f"{q} Q0 {d} {i + 1} {len(docs) - i} worse\n"
                             for q, docs in by_query.items() for i, d in enumerate(reversed(docs))))
    out = tmp_path / "report"
    r = run_cli("compare", "--dataset", sample_dataset_dir, "--run", run, "--run", worse,
                "--fuse", "rrf", "--test", "fisher", "--out", out)
    assert "ndcg@10" in r.output and "fused-rrf" in r.output
    data = json.loads((out / "comparison.json").read_text())
    assert data["scores"]["bm25"]["ndcg@10"] > 0.5 > data["scores"]["worse"]["ndcg@10"]
    assert data["p_values"]["bm25"]["worse"]["ndcg@10"] < 0.05
    assert "worse" in data["significant"]["bm25"]["ndcg@10"] and data["significant"]["worse"]["ndcg@10"] == []
    assert data["scores"]["bm25"]["recall@100"] == data["scores"]["worse"]["recall@100"]
    assert data["significant"]["bm25"]["recall@100"] == [] and data["significant"]["worse"]["recall@100"] == []
    report = (out / "report.md").read_text()
    bm25_row = next(row for row in report.splitlines() if row.startswith("| a | bm25 |"))
    assert f"{data['scores']['bm25']['ndcg@10']:.4f}ᵇ" in bm25_row and "Fisher's randomization test" in report
    assert (out / "comparison.png").read_bytes()[:4] == b"\x89PNG"


def test_bad_inputs_exit_2_with_one_line(tmp_path, sample_dataset_dir):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "corpus.jsonl").write_text('{"_id": "1", "text": "ok"}\n{"_id": "2", "text": oops}\n')
    (bad / "queries.jsonl").write_text('{"_id": "q", "text": "x"}\n')
    r = run_cli("index", "--retriever", "bm25", "--dataset", bad, "--out", tmp_path / "idx", expect=2)
    assert r.output.strip().splitlines()[-1].startswith("error: ") and "corpus.jsonl:2: malformed JSON" in r.output
    assert not (tmp_path / "idx").exists()
    r = run_cli("index", "--retriever", "dense", "--dataset", sample_dataset_dir, "--out", tmp_path / "i2", expect=2)
    assert "needs --model" in r.output
    trec = tmp_path / "x.trec"
    trec.write_text("Q1 Q0 htn-01 1 1.0 x\n")
    r = run_cli("compare", "--dataset", sample_dataset_dir, "--run", trec, "--out", tmp_path / "r", expect=2)
    assert "run has results for 0 of 18 judged queries" in r.output


def test_demo_runs_offline_with_packaged_minilm(tmp_path, minilm_path):
    r = run_cli("demo", "--out", tmp_path / "demo")
    assert "minilm" in r.output and "bm25" in r.output
    data = json.loads((tmp_path / "demo" / "comparison.json").read_text())
    # On the smoke sample a real semantic model must beat chance by far; BM25 must find most answers.
    assert data["scores"]["minilm"]["ndcg@10"] > 0.7 and data["scores"]["bm25"]["ndcg@10"] > 0.6
    assert (tmp_path / "demo" / "report.md").is_file()
