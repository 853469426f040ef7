"""Evaluation you can trust: locked protocol, contamination, confidence intervals, ANN recall."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

os.environ["HF_HUB_OFFLINE"] = "1"

from colmed.cli import main  # noqa: E402
from colmed.core.errors import ProtocolMismatchError  # noqa: E402
from colmed.eval.contamination import ContaminationSettings, contamination_report, decontaminate  # noqa: E402
from colmed.data.datasets import Document, RetrievalDataset, load_dataset  # noqa: E402
from colmed.eval.protocol import check_prompts, protocol_record, queries_hash  # noqa: E402
from colmed.eval.uncertainty import bootstrap_ci, holm, paired_bootstrap_ci  # noqa: E402


def _invoke(args: list[str]):
    return CliRunner().invoke(main, args, catch_exceptions=False)


# ----------------------------------------------------------------------------------------------- protocol

def test_run_with_mismatched_query_ids_fails_with_the_message(tmp_path, sample_dataset_dir):
    ds = load_dataset(sample_dataset_dir)
    # The classic slip: ids written as "Q<n>" or with a prefix; ranx would silently score them zero.
    run_path = tmp_path / "renamed.trec"
    lines = [f"query-{q} Q0 {d} 1 1.0 x" for q, rels in ds.qrels.items() for d in list(rels)[:1]]
    run_path.write_text("\n".join(lines) + "\n")
    result = _invoke(["compare", "--dataset", str(sample_dataset_dir), "--run", str(run_path),
                      "--out", str(tmp_path / "report")])
    assert result.exit_code == 2
    assert f"run has results for 0 of {len(ds.qrels)} judged queries" in result.output
    assert "0 of its" in result.output and "query-id format?" in result.output
    assert not (tmp_path / "report").exists()  # nothing half-written


def test_same_model_under_different_prompts_refuses_to_compare(tmp_path, sample_dataset_dir, tiny_st_model_dir):
    from colmed.indexes.search import search_to_trec
    from colmed.indexes.base import build_index, load_index

    ds = load_dataset(sample_dataset_dir)
    runs = {}
    for name, prompt in (("plain", ""), ("prompted", "query: ")):
        idx = tmp_path / f"idx-{name}"
        manifest = build_index("dense", ds, idx, model=tiny_st_model_dir, query_prompt=prompt, document_prompt="")
        runs[name] = tmp_path / f"{name}.trec"
        search_to_trec(load_index(idx), manifest, sample_dataset_dir, runs[name], k=10)
    args = ["compare", "--dataset", str(sample_dataset_dir), "--run", f"plain={runs['plain']}",
            "--run", f"prompted={runs['prompted']}", "--out", str(tmp_path / "cmp")]
    refused = _invoke(args)
    assert refused.exit_code == 2
    assert "same model" in refused.output and "field 'index.query_prompt'" in refused.output
    assert "''" in refused.output and "'query: '" in refused.output and "--allow-prompt-ablation" in refused.output
    allowed = _invoke(args + ["--allow-prompt-ablation"])
    assert allowed.exit_code == 0, allowed.output
    report = (tmp_path / "cmp" / "report.md").read_text()
    assert "prompt_ablation_allowed: True" in report and "query: " in report


def test_different_models_may_use_their_own_prompts():
    check_prompts({"a": {"index": {"model": "BAAI/bge-base-en-v1.5", "query_prompt": "Represent ...: "}},
                   "b": {"index": {"model": "intfloat/e5-base-v2", "query_prompt": "query: "}},
                   "c": {"index": {"model": "bm25s"}}, "d": None})
    with pytest.raises(ProtocolMismatchError, match="index.document_prompt"):
        check_prompts({"a": {"index": {"model": "m", "document_prompt": "passage: "}},
                       "b": {"index": {"model": "m", "document_prompt": ""}}})


def test_protocol_record_names_everything_a_reader_needs(sample_dataset_dir):
    ds = load_dataset(sample_dataset_dir)
    rec = protocol_record(ds, k=100, exclude_self_hits=True, metrics=["ndcg@10", "mrr@10"], stat_test="student",
                          correction="Holm")
    assert rec["dataset_fingerprint"] == ds.fingerprint and rec["qrels_hash"] == ds.qrels_hash
    assert rec["queries_hash"] == queries_hash(ds.queries) and rec["split"] == "test" and rec["k"] == 100
    assert rec["self_hits"].startswith("excluded") and set(rec["metrics"]) == {"ndcg@10", "mrr@10"}
    assert "paired" in rec["significance_test"] and rec["correction"] == "Holm"


# ---------------------------------------------------------------------------------------- contamination

TEST_QUERIES = {
    "q1": "What are the side effects of statins in older adults?",
    "q2": "Is it safe to take ibuprofen during pregnancy?",
    "q3": "Does green tea lower LDL cholesterol?",
    "q4": "How is Lyme disease treated in children?",
}
DOCS = {
    "d1": "Statin therapy in adults over 75 is associated with muscle pain and a small rise in diabetes risk.",
    "d2": "NSAIDs such as ibuprofen are best avoided after 20 weeks of pregnancy because of fetal kidney effects.",
    "d3": "Catechins in green tea modestly reduce LDL cholesterol in randomized trials.",
    "d4": "Children with early Lyme disease are treated with doxycycline or amoxicillin for 10 to 14 days.",
    "d5": "Vitamin K reverses the anticoagulant effect of warfarin.",
}
CLEAN_TRAINING = [
    {"query_id": "t1", "query": "warfarin reversal with vitamin K", "positive": DOCS["d5"], "positive_id": "d5"},
    {"query_id": "t2", "query": "first-line treatment of community-acquired pneumonia",
     "positive": "Amoxicillin is first-line for outpatient community-acquired pneumonia."},
    {"query_id": "t3", "query": "signs of diabetic ketoacidosis", "positive": "DKA presents with vomiting."},
]


@pytest.fixture()
def benchmark_like() -> RetrievalDataset:
    corpus = {d: Document(d, t) for d, t in DOCS.items()}
    qrels = {"q1": {"d1": 1}, "q2": {"d2": 1}, "q3": {"d3": 1}, "q4": {"d4": 2}}
    return RetrievalDataset("toybench", corpus, dict(TEST_QUERIES), qrels, fingerprint="fp", qrels_hash="qh")


def test_contamination_finds_planted_exact_and_near_duplicates(benchmark_like):
    planted = CLEAN_TRAINING + [
        # exact copy of a test query, only case and punctuation changed
        {"query_id": "leak-exact", "query": "what are the SIDE EFFECTS of statins in older adults",
         "positive": "Statins can cause myalgia.", "positive_id": "x1"},
        # a reworded test query (word order, inflection) paired with that query's judged document: a leaked pair
        {"query_id": "leak-near", "query": "green tea: does it lower cholesterol (LDL)?", "positive": DOCS["d3"],
         "positive_id": "d3"},
        # GPL-style corpus use: a synthetic query on a benchmark document, not on a test query -> allowed
        {"query_id": "gpl", "query": "doxycycline duration for pediatric erythema migrans", "positive": DOCS["d4"],
         "positive_id": "d4"},
    ]
    report = contamination_report(planted, benchmark_like)
    checks = report["checks"]
    assert checks["train_query~eval_query"]["by_level"] == {"exact": 1, "near": 1}
    assert {e["record_id"] for e in checks["train_query~eval_query"]["examples"]} == {"leak-exact", "leak-near"}
    assert checks["leaked_test_pair"]["records"] == 1 and checks["leaked_test_pair"]["examples"][0]["eval_id"] == "q3->d3"
    assert checks["train_positive~relevant_doc"]["records"] == 2  # leak-near and gpl reuse judged documents
    assert report["contaminated_record_ids"] == ["leak-exact", "leak-near"]
    assert report["corpus_use_records"] == 2 and report["verdict"].startswith("CONTAMINATED: 2 of 6")
    assert "allowed (corpus use" in checks["train_positive~relevant_doc"]["policy"]

    kept, removed = decontaminate(planted, [benchmark_like])
    assert [r["query_id"] for r in kept] == ["t1", "t2", "t3", "gpl"]  # corpus use is kept by default
    assert {r["record_id"]: r["reasons"][0].split(" (")[0] for r in removed} == {
        "leak-exact": "toybench: train_query~eval_query", "leak-near": "toybench: leaked_test_pair"}
    kept_strict, _ = decontaminate(planted, [benchmark_like], drop_corpus_use=True)
    # d5 (t1's positive) is judged for no test query, so only the judged-document reuse (gpl) is dropped
    assert [r["query_id"] for r in kept_strict] == ["t1", "t2", "t3"]


def test_contamination_clean_set_reports_nothing(benchmark_like):
    report = contamination_report(CLEAN_TRAINING, benchmark_like)
    assert report["verdict"].startswith("clean") and report["contaminated_records"] == 0
    assert all(c["matches"] == 0 for c in report["checks"].values())
    kept, removed = decontaminate(CLEAN_TRAINING, [benchmark_like])
    assert kept == CLEAN_TRAINING and removed == []


def test_contamination_semantic_paraphrase_needs_the_encoder(benchmark_like, minilm_path):
    from colmed.bi_encoder.encoder import DenseEncoder

    paraphrase = CLEAN_TRAINING + ["Can pregnant women safely use ibuprofen?"]  # few shared words with q2
    lexical = contamination_report(paraphrase, benchmark_like)
    assert lexical["contaminated_records"] == 0
    encoder = DenseEncoder(minilm_path)
    semantic = contamination_report(paraphrase, benchmark_like, ContaminationSettings(semantic_threshold=0.9),
                                    encoder=encoder)
    hit = semantic["checks"]["train_query~eval_query"]
    assert hit["by_level"] == {"semantic": 1} and hit["examples"][0]["eval_id"] == "q2"
    assert hit["examples"][0]["score"] > 0.9 and semantic["contaminated_record_ids"] == ["#3"]
    assert contamination_report(CLEAN_TRAINING, benchmark_like, encoder=encoder)["contaminated_records"] == 0


def test_training_set_check_encodes_each_training_query_once_across_benchmarks(benchmark_like, minilm_path, tmp_path):
    from dataclasses import replace

    from colmed.bi_encoder.encoder import DenseEncoder
    from colmed.eval.contamination import check_training_set

    class CountingEncoder:  # the real encoder, counting the texts it is asked to encode
        def __init__(self):
            self.inner, self.model_name, self.texts = DenseEncoder(minilm_path), "minilm", []

        def encode_queries(self, texts):
            self.texts += list(texts)
            return self.inner.encode_queries(texts)

    training = CLEAN_TRAINING + ["Can pregnant women safely use ibuprofen?"]
    second = replace(benchmark_like, name="toybench2")
    encoder = CountingEncoder()
    kept, summary = check_training_set(training, [benchmark_like, second], tmp_path, decontaminate_records=True,
                                       settings=ContaminationSettings(semantic_threshold=0.9), encoder=encoder)
    assert kept == CLEAN_TRAINING and summary["removed"] == 1  # the paraphrase found through the embeddings
    assert summary["per_dataset"]["toybench2"]["contaminated_records"] == 1
    train_texts = [r["query"] for r in CLEAN_TRAINING] + [training[-1]]
    assert sorted(t for t in encoder.texts if t in train_texts) == sorted(train_texts)  # once, not per benchmark


# --------------------------------------------------------------------------------------------- bootstrap

def test_bootstrap_interval_of_two_queries_matches_the_hand_computed_distribution():
    # Resampling two queries scored 0 and 1 gives means 0, 0.5, 1 with probability 1/4, 1/2, 1/4,
    # so the 2.5th and 97.5th percentiles are 0 and 1.
    assert bootstrap_ci([0.0, 1.0], n_resamples=4000, seed=1) == (0.0, 1.0)
    # 100 queries, half scored 1: the mean's standard error is sqrt(.25/100) = .05 -> about [0.40, 0.60].
    low, high = bootstrap_ci([0.0, 1.0] * 50, n_resamples=4000, seed=0)
    assert low == pytest.approx(0.40, abs=0.015) and high == pytest.approx(0.60, abs=0.015)


def test_small_sets_get_wide_intervals_and_pairing_tightens_differences():
    rng = np.random.default_rng(0)
    big = rng.uniform(size=2000)
    small = big[:20]
    w_small = np.diff(bootstrap_ci(small))[0]
    w_big = np.diff(bootstrap_ci(big))[0]
    assert w_small > 5 * w_big  # width shrinks like 1/sqrt(n): sqrt(2000/20) = 10
    # Two strongly correlated runs differing by ~0.03: unpaired intervals overlap, the paired one excludes 0.
    a = rng.uniform(size=150)
    b = np.clip(a - 0.03 + rng.normal(0, 0.01, size=150), 0, 1)
    lo_a, hi_a = bootstrap_ci(a)
    lo_b, hi_b = bootstrap_ci(b)
    assert lo_a < hi_b  # overlapping
    lo_d, hi_d = paired_bootstrap_ci(a, b)
    assert 0 < lo_d < 0.03 < hi_d < 0.05
    assert paired_bootstrap_ci(a, a) == (0.0, 0.0)


def test_holm_matches_hand_computation():
    # sorted p: .01*3 = .03; .03*2 = .06; .04*1 = .04 -> max(.06, .04) = .06 (step-down monotonicity)
    assert holm([0.01, 0.04, 0.03]) == [0.03, 0.06, 0.06]
    assert holm([0.2]) == [0.2] and holm([]) == []


# --------------------------------------------------------------------------------------------- ANN recall

def test_crippled_hnsw_index_reports_recall_below_one_in_manifest_and_search(tmp_path, tiny_st_model_dir):
    from colmed.indexes.base import build_index

    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(300)]
    corpus = {f"d{i}": Document(f"d{i}", " ".join(rng.choice(vocab, 12))) for i in range(500)}
    queries = {f"q{i}": " ".join(rng.choice(vocab, 4)) for i in range(60)}
    qrels = {q: {f"d{i}": 1} for i, q in enumerate(queries)}
    ds = RetrievalDataset("random", corpus, queries, qrels, fingerprint="fp")
    # A graph with two links per node searched greedily (efSearch=1) misses most of the exact top 10.
    manifest = build_index("dense", ds, tmp_path / "hnsw", model=tiny_st_model_dir, index_type="hnsw", hnsw_m=2,
                           ef_construction=8, ef_search=1)
    recall = manifest.stats["ann_recall@10"]
    assert 0 <= recall < 0.9 and manifest.stats["ann_recall_queries"] == 60
    stored = json.loads((tmp_path / "hnsw" / "manifest.json").read_text())
    assert stored["stats"]["ann_recall@10"] == recall
    result = _invoke(["search", "--index", str(tmp_path / "hnsw"), "--query", "w1 w2"])
    assert result.exit_code == 0
    assert f"hnsw index: approximate; recall@10={recall:.4f} against exact search on 60 queries" in result.output

    exact = build_index("dense", ds, tmp_path / "flat", model=tiny_st_model_dir)
    assert "ann_recall@10" not in exact.stats
    out = _invoke(["search", "--index", str(tmp_path / "flat"), "--query", "w1"]).output
    assert "flat index: exact search" in out


def test_training_set_stage_writes_reports_and_logs_every_removal(tmp_path, benchmark_like):
    from colmed.eval.contamination import check_training_set

    records = CLEAN_TRAINING + [{"query_id": "leak", "query": TEST_QUERIES["q4"].upper(), "positive": "x"}]
    kept, summary = check_training_set(records, [benchmark_like], tmp_path, decontaminate_records=True)
    assert [r["query_id"] for r in kept] == ["t1", "t2", "t3"] and summary["removed"] == 1
    removed = [json.loads(line) for line in (tmp_path / "decontamination_removed.jsonl").read_text().splitlines()]
    assert removed[0]["record_id"] == "leak" and "q4" in removed[0]["reasons"][0]
    assert removed[0]["record"]["query"] == TEST_QUERIES["q4"].upper()  # the removed record is kept in full
    saved = json.loads((tmp_path / "contamination.json").read_text())
    assert saved["reports"]["toybench"]["contaminated_record_ids"] == ["leak"]
    assert "removed 1 of 4" in (tmp_path / "contamination.md").read_text()
