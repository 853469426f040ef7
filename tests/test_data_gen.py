"""data_gen: notes loading, LLM-free generators, BM25/dense mining with the false-negative guard,
exports, the resumable pipeline (kill -9 and resume), sharding + merge, and the CLI."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from colmed.core.errors import IndexExistsError, InputError
from colmed.data_gen.config import GenerateConfig, parse_shard
from colmed.data_gen.export import to_colbert, to_sentence_transformers
from colmed.data_gen.generators.cropping import IndependentCroppingGenerator
from colmed.data_gen.generators.inverse_cloze import InverseClozeGenerator
from colmed.data_gen.mining import HardNegativeMiner
from colmed.data_gen.notes import Note, Passage, chunk_note, in_shard, load_notes, note_split
from colmed.data_gen.pipeline import TripletPipeline, merge_shards
from colmed.data.triplets import TripletRecord, read_triplets

os.environ["HF_HUB_OFFLINE"] = "1"
ROOT = Path(__file__).resolve().parents[1]
SAMPLE_NOTES = str(ROOT / "colmed" / "data" / "sample_medical")

TOPICS = [
    ("Metformin", "type 2 diabetes", "HbA1c of 8.2 percent", "lactic acidosis"),
    ("Lisinopril", "hypertension", "blood pressure of 162/95", "angioedema"),
    ("Warfarin", "atrial fibrillation", "INR of 3.4", "intracranial bleeding"),
    ("Albuterol", "asthma exacerbation", "peak flow of 180 L/min", "tachycardia"),
    ("Levothyroxine", "hypothyroidism", "TSH of 11 mIU/L", "palpitations"),
    ("Amoxicillin", "otitis media", "temperature of 39.1 C", "rash"),
    ("Sertraline", "major depression", "PHQ-9 score of 19", "serotonin syndrome"),
    ("Furosemide", "heart failure", "BNP of 1200 pg/mL", "hypokalemia"),
    ("Prednisone", "rheumatoid arthritis", "CRP of 45 mg/L", "hyperglycemia"),
    ("Omeprazole", "gastric ulcer", "hemoglobin of 9.8 g/dL", "C. difficile infection"),
    ("Gabapentin", "diabetic neuropathy", "monofilament loss in both feet", "dizziness"),
    ("Allopurinol", "gout", "uric acid of 9.6 mg/dL", "hypersensitivity reaction"),
]


def note_text(drug: str, disease: str, finding: str, risk: str, i: int) -> str:
    return (f"HISTORY OF PRESENT ILLNESS: The patient is a {40 + i}-year-old with {disease} seen in clinic today. "
            f"Laboratory results showed {finding} at the last visit. "
            f"The patient reports adherence to diet and exercise but symptoms of {disease} persist. "
            f"PLAN: {drug} was started and the dose will be titrated over four weeks. "
            f"The patient was counseled about the risk of {risk} while taking {drug}. "
            f"Follow-up visit is scheduled in six weeks with repeat laboratory tests.")


@pytest.fixture
def notes_file(tmp_path) -> Path:
    path = tmp_path / "notes.jsonl"
    with open(path, "w", encoding="utf-8") as f:
        for i, topic in enumerate(TOPICS):
            f.write(json.dumps({"id": f"note{i}", "title": f"{topic[1].title()} visit",
                                "text": note_text(*topic, i)}) + "\n")
    return path


def small_config(notes_file: Path, out: Path, **kw) -> GenerateConfig:
    base = dict(notes=str(notes_file), out=str(out), chunk_words=60, min_chunk_words=10, num_negatives=3,
                range_max=10, dev_fraction=0.25, batch_notes=3, progress=False)
    base.update(kw)
    return GenerateConfig(**base)


# ------------------------------------------------------------------ notes

def test_bad_note_records_are_counted_not_fatal(tmp_path):
    path = tmp_path / "notes.jsonl"
    good = note_text(*TOPICS[0], 0)
    with open(path, "wb") as f:
        f.write(json.dumps({"id": "a", "text": good}).encode() + b"\n")
        f.write(b'{"id": "b", "text": "caf\xe9 broken utf8"}\n')          # not UTF-8
        f.write(b'{"id": "c", "text": ""}\n')                              # empty
        f.write(b'{"id": "d", "body": "no text field"}\n')                 # missing field
        f.write(b'{"id": "e", "text": \n')                                 # malformed JSON
        f.write(json.dumps({"id": "a", "text": good}).encode() + b"\n")   # duplicate id
        f.write(json.dumps({"text": good + " again"}).encode() + b"\n")   # no id: positional id
    notes, issues = load_notes(path)
    assert [n.note_id for n in notes] == ["a", "notes-7"]
    assert issues.counts == {"not_utf8": 1, "empty_text": 1, "missing_text": 1, "malformed_json": 1,
                             "duplicate_id": 1}
    missing = [i for i in issues.items if i["problem"] == "missing_text"][0]
    assert (missing["line"], missing["field"]) == (4, "text")


def test_unusable_source_is_a_clear_input_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_notes(tmp_path / "absent.jsonl")
    path = tmp_path / "empty.jsonl"
    path.write_text('{"id": "x", "body": "y"}\n')
    with pytest.raises(InputError, match="field 'text': no usable notes.*missing_text"):
        load_notes(path)


def test_beir_folder_reads_only_the_corpus(tmp_path):
    folder = tmp_path / "beir"
    folder.mkdir()
    (folder / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "title": "T", "text": "Aspirin lowers fever."}) + "\n")
    (folder / "queries.jsonl").write_text("this file must never be read: not JSON\n")
    notes, _ = load_notes(folder)
    assert notes == [Note("d1", "Aspirin lowers fever.", "T")]


def test_folder_of_notes_files_reads_every_jsonl_in_name_order(tmp_path):
    """../shared/notes holds MTSamples and ACI-BENCH side by side: one --notes folder reads both; an id met
    again in another file is a counted duplicate (file, line), not a second note."""
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "b_second.jsonl").write_text(json.dumps({"id": "b1", "text": "Metformin was started."}) + "\n"
                                           + json.dumps({"id": "a1", "text": "Same id as a note of a_first."}) + "\n")
    (folder / "a_first.jsonl").write_text(json.dumps({"id": "a1", "title": "T", "text": "Aspirin lowers fever."}) + "\n")
    (folder / "README.md").write_text("not notes\n")
    notes, issues = load_notes(folder)
    assert notes == [Note("a1", "Aspirin lowers fever.", "T"), Note("b1", "Metformin was started.")]
    assert issues.counts == {"duplicate_id": 1}
    assert (issues.items[0]["path"], issues.items[0]["line"]) == (str(folder / "b_second.jsonl"), 2)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match="corpus.jsonl.*jsonl notes files"):
        load_notes(empty)


def test_chunking_respects_max_words_and_keeps_all_text():
    note = Note("n", " ".join(f"Sentence number {i} has some words in it." for i in range(40)))
    chunks = chunk_note(note, max_words=50, min_words=10)
    assert len(chunks) > 1 and all(len(c.text.split()) <= 50 + 10 for c in chunks)
    assert " ".join(c.text for c in chunks).split() == note.text.split()
    assert chunk_note(Note("s", "too short"), max_words=50, min_words=10) == []


def test_shards_partition_notes_and_split_is_by_note():
    ids = [f"n{i}" for i in range(300)]
    owners = [[i for i in range(3) if in_shard(n, (i, 3))] for n in ids]
    assert all(len(o) == 1 for o in owners)
    assert len({o[0] for o in owners}) == 3
    dev = [n for n in ids if note_split(n, 0.2, seed=1) == "dev"]
    assert 30 < len(dev) < 90
    assert parse_shard("2/5") == (2, 5)
    with pytest.raises(InputError):
        parse_shard("5/5")


# ------------------------------------------------------------------ generators

def test_inverse_cloze_removes_the_query_sentence_and_is_deterministic():
    passage = Passage("n1#0", "n1", note_text(*TOPICS[1], 1))
    gen = InverseClozeGenerator(queries_per_passage=2, keep_sentence_prob=0.0, seed=5)
    a, b = gen.generate([passage]), gen.generate([passage])
    assert [q.query for q in a.queries] == [q.query for q in b.queries]
    assert len(a.queries) == 2 and len({q.query for q in a.queries}) == 2
    for q in a.queries:
        assert q.query in passage.text and q.query not in q.positive
        assert not q.query.startswith(("PLAN:", "HISTORY"))  # section labels are stripped
        assert q.positive_id != q.source_passage_id == "n1#0"


def test_cropping_spans_come_from_the_passage():
    passage = Passage("n1#0", "n1", note_text(*TOPICS[2], 2))
    res = IndependentCroppingGenerator(queries_per_passage=3, seed=1, max_query_words=20).generate([passage])
    assert len(res.queries) == 3
    for q in res.queries:
        assert q.query in passage.text and q.positive in passage.text
        assert 1 <= len(q.query.split()) <= 20


# ------------------------------------------------------------------ mining

def _bm25(ids, texts):
    from colmed.indexes.bm25 import BM25Index

    return BM25Index.build(ids, texts, show_progress=False)


def test_miner_guard_drops_near_duplicates_of_the_positive_and_same_note_passages():
    ids = ["p#0", "p#1", "dup#0", "x#0", "y#0", "z#0"]
    texts = ["warfarin dosing with INR of 3.4 in atrial fibrillation",
             "warfarin INR monitoring follow-up",                                # same note as positive
             "warfarin dosing with INR of 3.4 in atrial fibrillation",           # boilerplate copy, other note
             "warfarin bleeding risk counselling",
             "atrial fibrillation rate control with metoprolol",
             "insulin for type 1 diabetes"]
    miner = HardNegativeMiner(_bm25(ids, texts), {i: i.split("#")[0] for i in ids}, num_negatives=3,
                              range_max=5, relative_margin=0.05)
    mined = miner.mine({"q": "warfarin INR 3.4 atrial fibrillation"}, {"q": "p#0"})["q"]
    assert "p#0" not in mined.negative_ids and "p#1" not in mined.negative_ids
    assert "dup#0" not in mined.negative_ids, "a near-duplicate of the positive is a false negative"
    # Ranked by score: y#0 shares "atrial fibrillation" (two query terms), x#0 only "warfarin".
    assert mined.negative_ids == ["y#0", "x#0"] and mined.negative_ranks == [3, 5]
    assert mined.negative_scores == sorted(mined.negative_scores, reverse=True)
    assert all(s <= mined.positive_score * 0.95 for s in mined.negative_scores)
    assert mined.positive_rank in (1, 2)
    assert miner.counts["same_note"] == 1 and miner.counts["relative_margin"] >= 1

    # Without the guard the near-duplicate is mined: the guard is what removes it.
    unguarded = HardNegativeMiner(_bm25(ids, texts), {i: i.split("#")[0] for i in ids}, num_negatives=3,
                                  range_max=5, relative_margin=None)
    assert "dup#0" in unguarded.mine({"q": "warfarin INR 3.4 atrial fibrillation"}, {"q": "p#0"})["q"].negative_ids


def test_miner_range_min_and_random_sampling():
    ids = [f"d{i}#0" for i in range(12)]
    texts = [" ".join(["fever"] * (12 - i) + ["word"] * i) for i in range(12)]
    retriever = _bm25(ids, texts)
    top = HardNegativeMiner(retriever, num_negatives=3, range_max=10, relative_margin=None, exclude_same_note=False)
    got = top.mine({"q": "fever"}, {"q": "d0#0"})["q"]
    skip = HardNegativeMiner(retriever, num_negatives=3, range_min=2, range_max=10, relative_margin=None,
                             exclude_same_note=False).mine({"q": "fever"}, {"q": "d0#0"})["q"]
    assert got.negative_scores == sorted(got.negative_scores, reverse=True)
    assert skip.negative_ids[0] == got.negative_ids[2]
    rnd = HardNegativeMiner(retriever, num_negatives=3, range_max=10, relative_margin=None, sampling="random",
                            exclude_same_note=False, seed=3)
    a = rnd.mine({"q": "fever"}, {"q": "d0#0"})["q"]
    assert a.negative_ids == rnd.mine({"q": "fever"}, {"q": "d0#0"})["q"].negative_ids
    assert a.negative_scores == sorted(a.negative_scores, reverse=True)


class _PlainRetriever:
    """A Retriever with only ``search`` (no get_scores): the guard cannot score an unretrieved positive."""

    def __init__(self, hits):
        self.hits = hits

    def search(self, queries, k=100):
        return {q: dict(list(self.hits.items())[:k]) for q in queries}


def test_miner_with_a_plain_retriever():
    hits = {"a#0": 9.0, "b#0": 5.0, "c#0": 4.0, "d#0": 1.0}
    found = HardNegativeMiner(_PlainRetriever(hits), num_negatives=2, range_max=3).mine({"q": "x"}, {"q": "b#0"})["q"]
    # positive 5.0 -> threshold 4.75: a#0 (9.0) is a likely false negative; c#0 and d#0 stay
    assert found.negative_ids == ["c#0", "d#0"] and found.positive_rank == 2
    missing = HardNegativeMiner(_PlainRetriever(hits), num_negatives=2, range_max=3)
    assert missing.mine({"q": "x"}, {"q": "zzz#0"})["q"].negative_ids == []
    assert missing.counts["queries_positive_unscored"] == 1


def test_dense_miner_with_minilm(minilm_path):
    import numpy as np

    from colmed.data_gen.mining import dense_retriever
    from colmed.indexes.dense import DenseIndex

    ids = ["a#0", "b#0", "c#0", "d#0"]
    texts = ["Warfarin anticoagulation for atrial fibrillation", "Insulin therapy in type 1 diabetes",
             "Metformin for type 2 diabetes", "Inhaled albuterol for asthma"]
    retriever = dense_retriever(minilm_path, ids, texts, device="cpu")
    assert isinstance(retriever, DenseIndex)  # the index layer's exact (flat) search, held in memory
    query = "metformin tablets for type 2 diabetes"
    scores = retriever.get_scores(query)  # exact scores agree with the index's search
    hits = retriever.search({"q": query}, k=4)["q"]
    assert np.allclose([hits[d] for d in ids], scores, atol=1e-5)
    mined = HardNegativeMiner(retriever, num_negatives=2, range_max=3, relative_margin=0.05).mine(
        {"q": query}, {"q": "c#0"})["q"]
    assert mined.positive_rank == 1 and mined.negative_ids
    threshold = mined.positive_score - abs(mined.positive_score) * 0.05
    assert all(s <= threshold for s in mined.negative_scores)


HAS_OPENVINO = all(importlib.util.find_spec(m) is not None for m in ("openvino", "nncf"))


@pytest.mark.skipif(not HAS_OPENVINO, reason="colmed[openvino] (openvino, nncf) is not installed")
def test_dense_miner_on_openvino_fp32_mines_the_negatives_of_torch(minilm_path, tmp_path, monkeypatch):
    """``colmed generate --miner dense --dense-backend openvino`` on the bundled notes: the same negatives, in
    the same order, as the torch encoder (fp32 embeddings agree to 1e-7), and the manifest says which ran."""
    from click.testing import CliRunner

    from colmed.cli import main

    monkeypatch.setenv("COLMED_CACHE_DIR", str(tmp_path / "cache"))  # the export is this test's own
    runs = {}
    for backend in ("torch", "openvino"):
        out = tmp_path / backend
        result = CliRunner().invoke(main, ["generate", "--notes", SAMPLE_NOTES, "--out", str(out), "--miner", "dense",
                                           "--dense-model", minilm_path, "--dense-backend", backend,
                                           "--generator", "cropping", "--queries-per-note", "3", "--negatives", "3",
                                           "--range-max", "10", "--device", "cpu", "--no-progress"])
        assert result.exit_code == 0, result.output
        runs[backend] = (list(read_triplets(out)), json.loads((out / "manifest.json").read_text()))
    (torch_records, torch_manifest), (ov_records, ov_manifest) = runs["torch"], runs["openvino"]
    assert len(torch_records) > 60 and sum(len(r.negative_ids) for r in torch_records) > 150
    assert [(r.query_id, r.negative_ids) for r in ov_records] == [(r.query_id, r.negative_ids) for r in torch_records]
    for ours, theirs in zip(ov_records, torch_records):
        assert ours.negative_scores == pytest.approx(theirs.negative_scores, abs=1e-5)
        assert ours.positive_score == pytest.approx(theirs.positive_score, abs=1e-5)
    assert (ov_manifest["config"]["dense_backend"], ov_manifest["config"]["dense_quantize"]) == ("openvino", None)
    assert torch_manifest["config"]["dense_backend"] == "torch"
    assert len([p for p in (tmp_path / "cache" / "encoders").iterdir() if p.is_dir()]) == 1  # exported once


def test_dense_backend_settings_are_checked_at_load(notes_file, tmp_path, monkeypatch):
    """A bad or misplaced --dense-backend/--dense-quantize fails before anything is read or written: one line
    naming the field, exit code 2; a missing openvino extra is named the same way."""
    from click.testing import CliRunner

    from colmed.cli import main

    out = tmp_path / "out"
    base = ["generate", "--notes", str(notes_file), "--out", str(out), "--no-progress"]
    cases = [(["--miner", "dense", "--dense-model", "m", "--dense-quantize", "int8"],
              "field 'dense_quantize': int8 runs on the openvino backend; add --dense-backend openvino"),
             (["--dense-backend", "openvino"], "field 'dense_backend': applies to the dense miner; add --miner dense")]
    for flags, message in cases:
        result = CliRunner().invoke(main, base + flags)
        assert result.exit_code == 2 and message in result.output, result.output
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    result = CliRunner().invoke(main, base + ["--miner", "dense", "--dense-model", "m", "--dense-backend", "openvino"])
    assert result.exit_code == 2 and "pip install 'colmed[openvino]'" in result.output, result.output
    assert not out.exists() and not Path(f"{out}.partial").exists()
    # "none" is fp32 however it is spelled, so a resume with the flag given agrees with one without it
    cfg = small_config(notes_file, out, miner="dense", dense_model="m")
    assert cfg.replace(dense_quantize="none").fingerprint() == cfg.fingerprint()
    # another engine mines other negatives (int8) but reuses the generated queries: a late setting
    openvino = cfg.replace(dense_backend="openvino")
    assert openvino.fingerprint() != cfg.fingerprint()
    assert openvino.generation_fingerprint() == cfg.generation_fingerprint()


def test_teacher_scores_from_a_cross_encoder(tmp_path, minilm_path):
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from colmed.data_gen.mining import add_teacher_scores

    tok = AutoTokenizer.from_pretrained(minilm_path)
    torch.manual_seed(0)
    BertForSequenceClassification(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=64, num_labels=1)
                                  ).save_pretrained(tmp_path / "ce")
    tok.save_pretrained(tmp_path / "ce")
    recs = [TripletRecord("q1", "aspirin dose", "a", "Aspirin 650 mg", ["b", "c"], ["Insulin", "Warfarin"]),
            TripletRecord("q2", "inr", "c", "Warfarin", [], [])]
    add_teacher_scores(recs, str(tmp_path / "ce"), device="cpu")
    assert len(recs[0].teacher_scores) == 3 and len(recs[1].teacher_scores) == 1
    assert len(set(recs[0].teacher_scores)) == 3  # a real model scored each pair


# ------------------------------------------------------------------ exports

def test_exporters_write_trainer_formats(tmp_path):
    recs = [TripletRecord("q1", "aspirin dose", "n1#0", "Aspirin 650 mg", ["n2#0", "n3#0"], ["Insulin", "Warfarin"],
                          positive_score=9.0, negative_scores=[5.0, 4.0], split="train"),
            TripletRecord("q2", "inr target", "n3#0", "Warfarin", ["n1#0"], ["Aspirin 650 mg"], split="dev"),
            TripletRecord("q3", "no negatives", "n4#0", "Gout", [], [], split="train")]
    counts = to_colbert(recs, tmp_path / "colbert")
    assert counts == {"triples": 1, "dev_triples": 1, "collection": 3, "queries": 2, "skipped": 1}
    collection = (tmp_path / "colbert" / "collection.tsv").read_text().splitlines()
    assert collection == ["0\tAspirin 650 mg", "1\tInsulin", "2\tWarfarin"]  # pid = line number
    assert json.loads((tmp_path / "colbert" / "triples.jsonl").read_text()) == [0, 0, 1, 2]
    assert json.loads((tmp_path / "colbert" / "dev_triples.jsonl").read_text()) == [1, 2, 0]
    id_map = json.loads((tmp_path / "colbert" / "id_map.json").read_text())
    assert id_map["pids"]["n3#0"] == 2 and id_map["qids"]["q2"] == 1
    to_colbert(recs, tmp_path / "scored", with_scores="miner")
    assert json.loads((tmp_path / "scored" / "triples.jsonl").read_text()) == [0, [0, 9.0], [1, 5.0], [2, 4.0]]
    st = to_sentence_transformers(recs, tmp_path / "st")
    assert st == {"train": 2, "dev": 1, "skipped_no_negatives": 1}
    row = json.loads((tmp_path / "st" / "train.jsonl").read_text().splitlines()[1])
    assert row == {"anchor": "aspirin dose", "positive": "Aspirin 650 mg", "negative": "Warfarin"}


# ------------------------------------------------------------------ pipeline

def test_pipeline_end_to_end(notes_file, tmp_path):
    out = tmp_path / "out"
    manifest = TripletPipeline(small_config(notes_file, out)).run()
    records = list(read_triplets(out))
    assert records and len(records) == manifest["counts"]["records"]["total"]
    assert len({r.query_id for r in records}) == len(records)
    assert sum(bool(r.negatives) for r in records) >= 0.8 * len(records)
    for r in records:
        assert len(r.negatives) <= 3 and r.miner == "bm25"
        if r.query.startswith("Follow-up visit is scheduled"):
            # boilerplate found in every note: every candidate scores like the positive -> guard keeps none
            assert r.negatives == []
        assert r.note_id not in {n.split("#")[0] for n in r.negative_ids}, "same-note negatives are excluded"
        if r.positive_id != r.query_id.rsplit(":", 1)[0]:  # ICT removed the sentence (90% of the time)
            assert r.query not in r.positive
    train_notes = {r.note_id for r in records if r.split == "train"}
    dev_notes = {r.note_id for r in records if r.split == "dev"}
    assert train_notes and dev_notes and not train_notes & dev_notes
    assert len(list(read_triplets(out / "dev"))) == len([r for r in records if r.split == "dev"])
    import datasets

    table = datasets.Dataset.from_parquet(str(out / "triplets.parquet"))
    assert table.num_rows == len(records) and table[0]["query_id"] == records[0].query_id
    assert (out / "export" / "colbert" / "triples.jsonl").is_file()
    assert (out / "export" / "sentence_transformers" / "train.jsonl").is_file()
    m = json.loads((out / "manifest.json").read_text())
    assert m["config"]["generator"] == "inverse_cloze" and m["input"]["sha256"]
    assert "bm25s" in m["versions"] and m["counts"]["notes"]["read"] == len(TOPICS)
    assert not (out / "_work").exists() and not Path(str(out) + ".partial").exists()

    from colmed.core.provenance import git_sha

    assert m["git_sha"] == git_sha() and m["kind"] == "colmed-triplets" and m["created"]

    with pytest.raises(IndexExistsError):
        TripletPipeline(small_config(notes_file, out)).run()
    again = TripletPipeline(small_config(notes_file, out, overwrite=True)).run()
    assert again["counts"]["records"] == manifest["counts"]["records"]
    # The overwrite swapped one finished folder for another: no partial, temp or old folder is left beside it.
    leftovers = [p.name for p in out.parent.iterdir() if any(x in p.name for x in (".partial", ".building", ".old"))]
    assert leftovers == []
    assert json.loads((out / "manifest.json").read_text())["created"] == again["created"]


def test_round_trip_filter_and_length_filter_are_counted(notes_file, tmp_path):
    m = TripletPipeline(small_config(notes_file, tmp_path / "rt", generator="cropping", round_trip_k=1,
                                     min_query_words=6, queries_per_note=3)).run()
    f = m["counts"]["filters"]
    assert f["round_trip"] > 0 and f["length"] > 0
    assert m["counts"]["records"]["total"] == m["counts"]["generation"]["generated"] - sum(f.values())


class _DiesAfter:
    """A generator that produces ``ok`` batches, then fails as a crash would (parts before it are done)."""

    def __init__(self, cfg, ok: int):
        from colmed.data_gen.generators import make_generator

        self.inner, self.left = make_generator(cfg, None), ok

    def generate(self, passages):
        if self.left == 0:
            raise RuntimeError("simulated crash")
        self.left -= 1
        return self.inner.generate(passages)


def _interrupted(cfg, ok: int) -> None:
    with pytest.raises(RuntimeError, match="simulated crash"):
        TripletPipeline(cfg, generator=_DiesAfter(cfg, ok)).run()


def test_resume_refuses_different_settings_naming_the_setting(notes_file, tmp_path):
    out = tmp_path / "out"
    _interrupted(small_config(notes_file, out), ok=2)
    # Parts are numbered by batch: another --batch-notes would lose or repeat notes, so it is refused by name.
    with pytest.raises(InputError, match=r"field 'batch_notes'.*batch_notes: 3 -> 4"):
        TripletPipeline(small_config(notes_file, out, batch_notes=4)).run()
    with pytest.raises(InputError, match="field 'seed'"):
        TripletPipeline(small_config(notes_file, out, seed=5)).run()
    fresh = TripletPipeline(small_config(notes_file, out, batch_notes=4, overwrite=True)).run()
    reference = TripletPipeline(small_config(notes_file, tmp_path / "ref", batch_notes=4)).run()
    assert fresh["counts"]["records"] == reference["counts"]["records"]
    assert [r.to_dict() for r in read_triplets(out)] == [r.to_dict() for r in read_triplets(tmp_path / "ref")]


def test_resume_with_changed_late_settings_reuses_generation_parts(notes_file, tmp_path):
    """Negatives, filters and splits are read after generation: the finished parts are kept, the rest redone,
    and the result equals an uninterrupted run with the new settings."""
    out = tmp_path / "out"
    _interrupted(small_config(notes_file, out), ok=2)
    work = Path(str(out) + ".partial") / "_work" / "generate"
    done_before = {p.name: p.stat().st_mtime_ns for p in work.glob("*.done.json")}
    assert len(done_before) == 2
    late = dict(num_negatives=2, dedup=False, dev_fraction=0.5)

    class Counting:
        def __init__(self, cfg):
            from colmed.data_gen.generators import make_generator

            self.inner, self.calls = make_generator(cfg, None), 0

        def generate(self, passages):
            self.calls += 1
            return self.inner.generate(passages)

    cfg = small_config(notes_file, out, **late)
    counting = Counting(cfg)
    TripletPipeline(cfg, generator=counting).run()
    assert counting.calls == 2  # 12 notes in batches of 3: only the two unfinished batches were generated
    TripletPipeline(small_config(notes_file, tmp_path / "ref", **late)).run()
    assert [r.to_dict() for r in read_triplets(out)] == [r.to_dict() for r in read_triplets(tmp_path / "ref")]


def test_a_run_that_failed_before_any_part_does_not_block_the_corrected_command(notes_file, tmp_path):
    out = tmp_path / "out"
    _interrupted(small_config(notes_file, out, seed=99), ok=0)  # e.g. a typo'd setting that fails at once
    assert Path(str(out) + ".partial").exists()
    m = TripletPipeline(small_config(notes_file, out)).run()
    assert m["counts"]["records"]["total"] > 0 and not Path(str(out) + ".partial").exists()


def test_bad_numbers_and_population_are_refused(notes_file, tmp_path):
    for kw, name in ((dict(batch_notes=0), "batch_notes"), (dict(num_negatives=-3), "num_negatives"),
                     (dict(num_notes=0), "num_notes")):
        with pytest.raises(InputError, match=f"field '{name}'"):
            TripletPipeline(small_config(notes_file, tmp_path / "x", **kw))
    with pytest.raises(InputError, match="field 'num_notes': asks for 50 notes but .* holds 12"):
        TripletPipeline(small_config(notes_file, tmp_path / "x", num_notes=50)).run()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.jsonl"]


def test_a_second_writer_to_the_same_out_is_refused(notes_file, tmp_path):
    from colmed.core.errors import OutputBusyError
    from colmed.core.io import output_lock

    out = tmp_path / "out"
    with output_lock(out):
        with pytest.raises(OutputBusyError, match="another colmed process"):
            TripletPipeline(small_config(notes_file, out)).run()
    assert not Path(str(out) + ".partial").exists()


def test_shards_then_merge_equal_one_run(notes_file, tmp_path):
    single = {r.query_id: r for r in read_triplets(_run(notes_file, tmp_path / "single"))}
    for i in range(3):
        TripletPipeline(small_config(notes_file, tmp_path / "sharded", shard=f"{i}/3")).run()
    merge_shards(tmp_path / "sharded")
    merged = {r.query_id: r for r in read_triplets(tmp_path / "sharded")}
    assert merged.keys() == single.keys()
    assert all(merged[q].negative_ids == single[q].negative_ids for q in merged)
    with pytest.raises(IndexExistsError):
        merge_shards(tmp_path / "sharded")


def _run(notes_file, out):
    TripletPipeline(small_config(notes_file, out)).run()
    return out


# ------------------------------------------------------------------ CLI

def _cli(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-c", "from colmed.cli import main; main()", *args],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
                          **kw)


def test_cli_generate_and_bad_input(notes_file, tmp_path):
    cfg = tmp_path / "gen.yaml"
    cfg.write_text("chunk-words: 60\nmin_chunk_words: 10\nnum_negatives: 2\nrange_max: 8\n")
    out = tmp_path / "cli"
    ok = _cli("generate", "--config", str(cfg), "--notes", str(notes_file), "--out", str(out),
              "--generator", "cropping", "--negatives", "3", "--no-progress")
    assert ok.returncode == 0, ok.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert m["config"]["num_negatives"] == 3 and m["config"]["chunk_words"] == 60  # flag beats YAML
    again = _cli("generate", "--config", str(cfg), "--notes", str(notes_file), "--out", str(out), "--no-progress")
    assert again.returncode == 2 and "already exists" in again.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("negatives_typo: 3\n")
    err = _cli("generate", "--config", str(bad), "--notes", str(notes_file), "--out", str(tmp_path / "x"))
    assert err.returncode == 2 and "negatives_typo" in err.stderr and len(err.stderr.strip().splitlines()) == 1
    # A value of the wrong type fails at load, naming the file and the field, before anything is written.
    bad.write_text("num_negatives: five\n")
    err = _cli("generate", "--config", str(bad), "--notes", str(notes_file), "--out", str(tmp_path / "x"))
    assert err.returncode == 2 and len(err.stderr.strip().splitlines()) == 1
    assert f"{bad}: field 'num_negatives': expected an integer, got 'five'" in err.stderr
    assert not (tmp_path / "x").exists() and not (tmp_path / "x.partial").exists()


@pytest.mark.timeout(120)
def test_kill_minus_9_and_resume_loses_and_duplicates_nothing(notes_file, tmp_path, scripted_server):
    """kill -9 the CLI at several moments; re-running the same command ends with the same records as
    an uninterrupted run, each exactly once."""
    with scripted_server(delay=0.15) as url:
        common = ["generate", "--notes", str(notes_file), "--generator", "llm", "--backend", "openai",
                  "--base-url", url, "--model", "m", "--chunk-words", "60", "--batch-notes", "1", "--concurrency", "1",
                  "--negatives", "2", "--range-max", "8", "--dev-fraction", "0.25", "--no-progress"]
        reference = tmp_path / "reference"
        assert _cli(*common, "--out", str(reference)).returncode == 0
        out = tmp_path / "resumed"
        work = Path(str(out) + ".partial") / "_work" / "generate"
        kills = 0
        for wait_parts in (2, 5, 9):
            proc = subprocess.Popen([sys.executable, "-c", "from colmed.cli import main; main()", *common,
                                     "--out", str(out)], cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.time() + 60
            while time.time() < deadline and proc.poll() is None:
                if len(list(work.glob("*.done.json"))) >= wait_parts:
                    break
                time.sleep(0.02)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                kills += 1
            proc.wait()
        assert kills >= 2, "the run finished before it could be killed"
        assert not (out / "manifest.json").exists()
        done = _cli(*common, "--out", str(out))
        assert done.returncode == 0, done.stderr
    ref = [r.to_dict() for r in read_triplets(reference)]
    got = [r.to_dict() for r in read_triplets(out)]
    assert len({r["query_id"] for r in got}) == len(got)
    assert got == ref


def _beir_folder(path: Path, queries: dict[str, str], relevant: dict[str, str]) -> Path:
    """A BEIR test split: ``queries``, each judging the one document of ``relevant`` under the same key."""
    (path / "qrels").mkdir(parents=True)
    with open(path / "corpus.jsonl", "w", encoding="utf-8") as f:
        for key, text in relevant.items():
            f.write(json.dumps({"_id": f"d-{key}", "title": "", "text": text}) + "\n")
    with open(path / "queries.jsonl", "w", encoding="utf-8") as f:
        for key, text in queries.items():
            f.write(json.dumps({"_id": key, "text": text}) + "\n")
    (path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n"
                                             + "".join(f"{k}\td-{k}\t1\n" for k in queries), encoding="utf-8")
    return path


def test_generate_checks_and_decontaminates_against_a_benchmark_test_split(notes_file, tmp_path):
    """`colmed generate --contamination-check B --decontaminate` drops exactly the records whose query copies
    (or rewords) one of B's test queries, logs each with its reason, and writes B's report beside the
    triplets; without --decontaminate every record is kept and the report says CONTAMINATED."""
    common = ["generate", "--notes", str(notes_file), "--chunk-words", "60", "--negatives", "2", "--range-max", "8",
              "--no-progress"]
    clean = tmp_path / "clean"
    assert _cli(*common, "--out", str(clean)).returncode == 0
    records = [json.loads(line) for line in (clean / "triplets.jsonl").read_text().splitlines()]
    leaked = {"t1": records[0]["query"], "t2": records[3]["query"].upper().rstrip(".") + "?"}  # a copy, a reword
    bench = _beir_folder(tmp_path / "bench", {**leaked, "t3": "unrelated question about dental implants"},
                         {"t1": "x y z", "t2": "a b c", "t3": "implants"})

    out = tmp_path / "decontaminated"
    run = _cli(*common, "--out", str(out), "--contamination-check", str(bench), "--decontaminate")
    assert run.returncode == 0, run.stderr
    kept = [json.loads(line) for line in (out / "triplets.jsonl").read_text().splitlines()]
    removed = [json.loads(line) for line in (out / "decontamination_removed.jsonl").read_text().splitlines()]
    assert sorted(r["record_id"] for r in removed) == sorted([records[0]["query_id"], records[3]["query_id"]])
    assert all("train_query~eval_query" in reason for r in removed for reason in r["reasons"])
    assert [r["query_id"] for r in kept] == [r["query_id"] for r in records
                                             if r["query_id"] not in {x["record_id"] for x in removed}]
    manifest = json.loads((out / "manifest.json").read_text())
    summary = manifest["counts"]["contamination"]
    assert summary["removed"] == 2 and manifest["counts"]["records"]["total"] == len(records) - 2
    assert summary["check"]["datasets"]["bench"]["fingerprint"]
    assert "CONTAMINATED" in (out / "contamination.md").read_text()
    assert "removed 2 records" in run.stdout

    report_only = tmp_path / "report-only"
    run = _cli(*common, "--out", str(report_only), "--contamination-check", str(bench))
    assert run.returncode == 0, run.stderr
    assert len((report_only / "triplets.jsonl").read_text().splitlines()) == len(records)
    assert not (report_only / "decontamination_removed.jsonl").exists()
    assert "CONTAMINATED: 2 of" in run.stdout

    # A mistyped benchmark fails before any generation: one line, exit 2, nothing written.
    bad = _cli(*common, "--out", str(tmp_path / "bad"), "--contamination-check", str(tmp_path / "no-such-bench"),
               "--decontaminate")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "no-such-bench" in bad.stderr
    assert not (tmp_path / "bad").exists() and not (tmp_path / "bad.partial").exists()
