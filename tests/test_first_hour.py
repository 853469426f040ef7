"""A new user's first hour: metrics equal to trec_eval on tied runs, readable logs, BM25 tunable from the CLI."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from statistics import mean

import pytest
from click.testing import CliRunner

from colmed.cli import main
from colmed.data.runs import read_trec, top_k, trec_eval_order, write_trec

pytrec_eval = pytest.importorskip("pytrec_eval")


@pytest.fixture(autouse=True)
def normal_verbosity(monkeypatch):
    """``--quiet``/``--verbose`` set COLMED_VERBOSITY for the whole process (stages run as subprocesses
    inherit it); each test starts at, and leaves, the default."""
    monkeypatch.setenv("COLMED_VERBOSITY", "normal")


TREC_EVAL_MEASURES = {"ndcg@10": "ndcg_cut_10", "recall@100": "recall_100", "map@100": "map_cut_100"}


def trec_eval_means(qrels, run) -> dict[str, float]:
    """pytrec_eval's means under colmed's metric names (MRR@10 = trec_eval's recip_rank over the top 10).

    Like ``trec_eval -c``, a judged query the run has no document for counts as zero.
    """
    run = {q: d for q, d in run.items() if d}
    judged = [q for q, rels in qrels.items() if rels]
    per_query = pytrec_eval.RelevanceEvaluator(qrels, set(TREC_EVAL_MEASURES.values())).evaluate(run)
    out = {ours: sum(q[theirs] for q in per_query.values()) / len(judged)
           for ours, theirs in TREC_EVAL_MEASURES.items()}
    rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top_k(run, 10))
    out["mrr@10"] = sum(q["recip_rank"] for q in rr.values()) / len(judged)
    return out


def tied_run(seed=0, queries=40):
    """Scores on a 0..5 integer scale: most documents of a query tie with others."""
    rng = random.Random(seed)
    qrels, run = {}, {}
    for q in range(queries):
        docs = {f"doc{rng.randint(0, 400)}" for _ in range(150)}
        qrels[f"q{q}"] = {d: rng.choice([0, 1, 1, 2]) for d in rng.sample(sorted(docs), 8)}
        run[f"q{q}"] = {d: float(rng.randint(0, 5)) for d in docs}
    return qrels, run


def test_trec_eval_order_breaks_ties_by_doc_id_descending_without_touching_strict_order():
    run = {"q": {"a": 1.0, "c": 1.0, "b": 1.0, "z": 0.5, "top": 7.0}}
    ordered = trec_eval_order(run)["q"]
    assert list(sorted(ordered, key=ordered.get, reverse=True)) == ["top", "c", "b", "a", "z"]
    assert run["q"]["a"] == 1.0  # the caller's run (fusion inputs) keeps its scores


def test_colmed_metrics_equal_pytrec_eval_on_tied_runs():
    from colmed.eval.evaluation import compare_runs, evaluate_run

    qrels, run = tied_run()
    expected = trec_eval_means(qrels, run)
    ours = evaluate_run(qrels, run, list(expected))
    for metric, value in expected.items():
        assert ours[metric] == pytest.approx(value, abs=1e-12), metric
    # compare_runs (the table `colmed compare` and `colmed benchmark` print) ranks ties the same way
    _, other = tied_run(seed=1)
    other = {q: {d: s for d, s in other.get(q, {}).items()} or run[q] for q in run}
    c = compare_runs(qrels, {"a": run, "b": other}, list(expected), confidence=None)
    for metric, value in expected.items():
        assert c.scores["a"][metric] == pytest.approx(value, abs=1e-4), metric  # ranx rounds to 4 digits
        assert mean(c.per_query["a"][metric]) == pytest.approx(value, abs=1e-12), metric


def test_trec_file_written_in_trec_eval_order_scores_identically(tmp_path):
    from colmed.eval.evaluation import evaluate_run

    qrels, run = tied_run(seed=2, queries=10)
    path = tmp_path / "tied.trec"
    write_trec(path, run)
    lines = [ln.split() for ln in path.read_text().splitlines() if ln.startswith("q0 ")]
    ranked = [(float(s), d) for _, _, d, _, s, _ in lines]
    assert [s for s, _ in ranked] == sorted((s for s, _ in ranked), reverse=True)
    for score in {s for s, _ in ranked}:  # trec_eval: a tie goes to the larger doc id (string order)
        tied = [d for s, d in ranked if s == score]
        assert tied == sorted(tied, reverse=True)
    assert [int(ln[3]) for ln in lines] == list(range(1, len(lines) + 1))
    back = read_trec(path)
    assert evaluate_run(qrels, back, ["ndcg@10"])["ndcg@10"] == pytest.approx(
        trec_eval_means(qrels, back)["ndcg@10"], abs=1e-12)


def test_nfcorpus_bm25_equals_pytrec_eval(shared_path):
    from colmed.data.datasets import load_dataset
    from colmed.eval.evaluation import evaluate_run
    from colmed.indexes.bm25 import build_bm25_in_memory

    ds = load_dataset(str(shared_path("beir", "nfcorpus")), split="test")
    index, _ = build_bm25_in_memory(ds)
    queries = {q: ds.queries[q] for q in ds.qrels if q in ds.queries}
    run = index.search({q: getattr(t, "text", t) for q, t in queries.items()}, k=100)
    assert sum(1 for q in ds.qrels if not run.get(q)) > 0  # BM25 finds nothing for some: scored zero
    expected = trec_eval_means(ds.qrels, run)
    ours = evaluate_run(ds.qrels, run, list(expected))
    for metric, value in expected.items():
        assert ours[metric] == pytest.approx(value, abs=1e-12), metric
    assert round(ours["ndcg@10"], 4) == 0.3210  # trec_eval's figure for bm25s' Lucene BM25 on NFCorpus


# --- CLI: BM25 options, search defaults -------------------------------------------------------------


def invoke(*args, expect=0):
    result = CliRunner().invoke(main, list(map(str, args)), catch_exceptions=False)
    assert result.exit_code == expect, result.output
    return result


def test_index_takes_bm25_settings_and_records_them(tmp_path, sample_dataset_dir):
    idx = tmp_path / "idx"
    invoke("index", "--retriever", "bm25", "--dataset", sample_dataset_dir, "--out", idx, "--k1", "0.9",
           "--b", "0.4", "--method", "robertson", "--stopwords", "none", "--stemmer", "porter")
    settings = json.loads((idx / "manifest.json").read_text())["settings"]
    assert settings == {"k1": 0.9, "b": 0.4, "method": "robertson", "stopwords": None, "stemmer": "porter"}
    default = tmp_path / "default"
    invoke("index", "--retriever", "bm25", "--dataset", sample_dataset_dir, "--out", default)
    assert json.loads((default / "manifest.json").read_text())["settings"]["method"] == "lucene"
    # the settings change the ranking, so they really reach bm25s
    a = invoke("search", "--index", idx, "--query", "the cough of a patient on lisinopril").output
    b = invoke("search", "--index", default, "--query", "the cough of a patient on lisinopril").output
    assert a != b


def test_bm25_methods_offered_are_bm25s_methods():
    from colmed.commands.index import BM25_METHODS as cli_methods
    from colmed.indexes.bm25 import BM25_METHODS

    assert cli_methods == BM25_METHODS


@pytest.mark.parametrize("args, message", [
    (["--retriever", "dense", "--model", "m", "--k1", "1.2"], "--k1 applies to --retriever bm25, not dense"),
    (["--retriever", "bm25", "--nbits", "4"], "--nbits applies to --retriever colbert, not bm25"),
    (["--retriever", "bm25", "--model", "m"], "--model applies to --retriever dense or colbert, not bm25"),
    (["--retriever", "bm25", "--stemmer", "klingon"], "unknown stemmer 'klingon'"),
    (["--retriever", "bm25", "--stopwords", "klingon"], "unknown stopword list 'klingon'"),
    (["--retriever", "bm25", "--b", "1.5"], "0 <= b <= 1"),
])
def test_index_refuses_options_that_do_not_apply(tmp_path, sample_dataset_dir, args, message):
    out = tmp_path / "idx"
    r = invoke("index", "--dataset", sample_dataset_dir, "--out", out, *args, expect=2)
    errors = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], r.output
    assert not out.exists()


def test_search_query_prints_ten_hits_by_default(tmp_path, sample_dataset_dir):
    idx = tmp_path / "idx"
    invoke("index", "--retriever", "bm25", "--dataset", sample_dataset_dir, "--out", idx)
    hits = lambda out: [ln for ln in out.splitlines() if ln.strip()[:1].isdigit()]  # noqa: E731
    assert len(hits(invoke("search", "--index", idx, "--query", "blood pressure medication").output)) == 10
    assert len(hits(invoke("search", "--index", idx, "--query", "blood pressure medication",
                           "--k", "3").output)) == 3


# --- logs a person can read -------------------------------------------------------------------------


def colmed_to_file(tmp_path, *args, name="log.txt"):
    """Run the installed CLI with stdout and stderr going to one file, as `colmed ... > log 2>&1` does."""
    log = tmp_path / name
    env = {k: v for k, v in os.environ.items() if k not in ("COLMED_VERBOSITY", "COLUMNS", "TQDM_DISABLE",
                                                           "HF_HUB_DISABLE_PROGRESS_BARS")}
    with open(log, "w") as f:
        proc = subprocess.run([sys.executable, "-m", "colmed.cli", *map(str, args)], stdout=f,
                              stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    text = log.read_text()
    assert proc.returncode == 0, text
    return text


def test_bm25_build_log_has_no_progress_bars_or_debug_lines(tmp_path, sample_dataset_dir):
    log = colmed_to_file(tmp_path, "index", "--retriever", "bm25", "--dataset", sample_dataset_dir,
                         "--out", tmp_path / "idx")
    assert "\r" not in log and "DEBUG" not in log and "Split strings" not in log, log
    assert log.splitlines() == [f"indexing 40 documents of {sample_dataset_dir.name} with bm25 ...",
                                log.splitlines()[-1]] and log.splitlines()[-1].startswith("wrote ")
    quiet = colmed_to_file(tmp_path, "--quiet", "index", "--retriever", "bm25", "--dataset",
                           sample_dataset_dir, "--out", tmp_path / "idx2")
    assert quiet.splitlines() == [quiet.splitlines()[0]] and quiet.startswith("wrote ")
    verbose = colmed_to_file(tmp_path, "--verbose", "index", "--retriever", "bm25", "--dataset",
                             sample_dataset_dir, "--out", tmp_path / "idx3")
    assert "Split strings" in verbose  # asked for: bars even in a log


def test_quiet_and_verbose_exclude_each_other():
    r = CliRunner().invoke(main, ["--quiet", "--verbose", "index", "--help"])
    assert r.exit_code == 2 and "exclude each other" in r.output


def test_compare_table_does_not_wrap_in_a_log(tmp_path, sample_dataset_dir):
    for method in ("lucene", "robertson"):
        colmed_to_file(tmp_path, "--quiet", "index", "--retriever", "bm25", "--method", method, "--dataset",
                       sample_dataset_dir, "--out", tmp_path / method)
        colmed_to_file(tmp_path, "--quiet", "search", "--index", tmp_path / method, "--queries",
                       sample_dataset_dir, "--out", tmp_path / f"bm25-{method}-with-a-long-run-name.trec")
    log = colmed_to_file(tmp_path, "compare", "--dataset", sample_dataset_dir, "--run",
                         tmp_path / "bm25-lucene-with-a-long-run-name.trec", "--run",
                         tmp_path / "bm25-robertson-with-a-long-run-name.trec", "--fuse", "rrf",
                         "--out", tmp_path / "report")
    rows = [ln for ln in log.splitlines() if "bm25-robertson-with-a-long-run-name" in ln]
    assert rows and all(ln.count("0.") >= 4 for ln in rows), log  # a run's name and its 4 metrics on one line
    assert "\r" not in log


# --- library calls stay quiet; --quiet silences every command's status lines -------------------------


def test_bm25_built_from_python_prints_no_bars_and_no_bm25s_debug_lines(tmp_path, sample_dataset_dir):
    # A subprocess: CLI tests in this process switch tqdm off globally, which would hide the bars asked for.
    script = ("import logging, sys, colmed\n"
              "logging.basicConfig(level=logging.INFO)  # an application that configures logging\n"
              f"ds = colmed.load_dataset({str(sample_dataset_dir)!r})\n"
              "colmed.build_index('bm25', ds)\n"
              "print('---', file=sys.stderr)\n"
              "colmed.build_index('bm25', ds, progress=True)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    silent, asked = proc.stderr.split("---\n")
    assert "DEBUG" not in proc.stderr and "Building index" not in proc.stderr, proc.stderr
    assert "Split strings" not in silent and "\r" not in silent, silent
    assert "Split strings" in asked and "BM25S Compute Scores" in asked  # progress=True: bm25s' own bars


def test_quiet_silences_benchmark_status_lines(tmp_path, sample_dataset_dir):
    args = ["benchmark", "--retriever", "bm25", "--dataset", sample_dataset_dir, "--out", tmp_path / "b"]
    loud = invoke(*args).output
    assert "sample_medical: searching 18 queries with bm25" in loud
    quiet = invoke("--quiet", *args).output
    assert "searching" not in quiet and "building" not in quiet and "0.8242" in quiet, quiet


# --- caches reused: a prebuilt index is benchmarked as index:DIR, only on the data it was built over ---


def test_benchmark_reuses_an_index_built_by_colmed_index(tmp_path, sample_dataset_dir):
    idx = tmp_path / "idx"
    invoke("index", "--retriever", "bm25", "--dataset", sample_dataset_dir, "--out", idx)
    before = {p: p.stat().st_mtime_ns for p in idx.rglob("*")}
    out = invoke("benchmark", "--retriever", f"lex=index:{idx}", "--dataset", sample_dataset_dir,
                 "--check-published", "--out", tmp_path / "b").output
    assert "building" not in out and "sample_medical: searching 18 queries with lex" in out, out
    cell = json.loads((tmp_path / "b" / "results.json").read_text())["cells"]["sample_medical"]["lex"]
    assert cell["status"] == "searched (index reused)"
    assert {p: p.stat().st_mtime_ns for p in idx.rglob("*")} == before  # used as it is, never rebuilt
    # --check-published: a pair without a verified figure gets a row that says so
    assert ("published lex / sample_medical: colmed 0.8242; no verified published figure: none for bm25 on "
            "sample_medical in published.yaml") in out, out

    # another copy of the same dataset (one judgement fewer): refused in one line, nothing evaluated
    other = tmp_path / "sample_medical"
    shutil.copytree(sample_dataset_dir, other)
    qrels = other / "qrels" / "test.tsv"
    qrels.write_text("".join(qrels.read_text().splitlines(keepends=True)[:-1]))
    r = invoke("benchmark", "--retriever", f"lex=index:{idx}", "--dataset", other, "--out", tmp_path / "b2",
               expect=2)
    errors = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "built over another copy or split of sample_medical" in errors[0], r.output
    assert not (tmp_path / "b2" / "results.json").exists()


def test_benchmark_refuses_an_index_of_none_of_its_datasets(tmp_path, sample_dataset_dir, shared_path):
    idx = tmp_path / "idx"
    invoke("--quiet", "index", "--retriever", "bm25", "--dataset", sample_dataset_dir, "--out", idx)
    r = invoke("--quiet", "benchmark", "--retriever", f"index:{idx}", "--dataset",
               shared_path("beir", "publichealthqa"), "--out", tmp_path / "b", expect=2)
    errors = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "built over sample_medical, which is none of the datasets evaluated " \
                                "(publichealthqa)" in errors[0], r.output


# --- small messages -------------------------------------------------------------------------------


def test_a_mistyped_local_path_says_no_such_folder_not_hub(tmp_path, sample_dataset_dir):
    r = invoke("index", "--retriever", "bm25", "--dataset", "../shared/beir/nfcorpsu", "--out", tmp_path / "i",
               expect=2)
    assert r.output.strip() == "error: ../shared/beir/nfcorpsu: no such file or folder", r.output
    # a benchmark skips it in one line that names it once
    out = invoke("benchmark", "--retriever", "bm25", "--dataset", "./no/such/set", "--dataset", sample_dataset_dir,
                 "--out", tmp_path / "b").output
    assert "skipped ./no/such/set: no such file or folder\n" in out, out


def test_check_published_says_when_there_is_no_verified_figure():
    from colmed.eval.published import check_published, published_to_markdown

    rows = check_published({"bm25": {"nfcorpus": 0.3213, "sample_medical": 0.8}, "ft": {"nfcorpus": 0.35}},
                           {"bm25": "bm25", "ft": None})
    missing = {(r["retriever"], r["dataset"]): r for r in rows if r["status"] == "no figure"}
    assert set(missing) == {("bm25", "sample_medical"), ("ft", "nfcorpus")}
    assert missing["ft", "nfcorpus"]["note"].startswith("no verified published figure: not a reference retriever")
    assert all(r["published"] is not None for r in rows if r["status"] != "no figure")
    table = published_to_markdown(rows)
    assert "| ft | nfcorpus | 0.3500 | – | – | no figure |" in table


def test_training_pins_memory_only_with_a_gpu(tmp_path):
    import torch

    from colmed.bi_encoder.config import BiEncoderTrainingConfig
    from colmed.bi_encoder.train import training_arguments

    args = training_arguments(BiEncoderTrainingConfig(batch_size=8), tmp_path / "unused", num_rows=16)
    assert args.dataloader_pin_memory == torch.cuda.is_available()  # torch warns on CPU for every dataloader


def test_a_tuned_bm25_is_not_checked_against_figures_of_the_default_bm25(tmp_path, sample_dataset_dir):
    idx = tmp_path / "idx"
    invoke("--quiet", "index", "--retriever", "bm25", "--k1", "0.9", "--b", "0.4", "--dataset", sample_dataset_dir,
           "--out", idx)
    out = invoke("--quiet", "benchmark", "--retriever", f"tuned=index:{idx}", "--dataset", sample_dataset_dir,
                 "--check-published", "--out", tmp_path / "b").output
    row = next(ln for ln in out.splitlines() if ln.startswith("published tuned / sample_medical"))
    assert "no verified published figure: not a reference retriever" in row, out
