"""BEIR loading: the dataset type, and one-line errors for every kind of bad input."""

from __future__ import annotations

import json

import pytest

from colmed.core.errors import InputError
from colmed.data.datasets import load_beir_folder, load_dataset


def write_beir(root, corpus, queries, qrels, split="test"):
    root.mkdir(parents=True, exist_ok=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (root / "qrels").mkdir(exist_ok=True)
    (root / "qrels" / f"{split}.tsv").write_text(
        "query-id\tcorpus-id\tscore\r\n" + "".join(f"{q}\t{d}\t{s}\r\n" for q, d, s in qrels))
    return root


CORPUS = [{"_id": "1", "title": "Aspirin", "text": "aspirin lowers fever"},
          {"_id": "2", "title": "", "text": "insulin treats diabetes"}]
QUERIES = [{"_id": "q1", "text": "fever drug"}, {"_id": "q2", "text": "diabetes"}, {"_id": "q3", "text": "unjudged"}]


def test_loads_string_ids_crlf_qrels_and_keeps_only_judged_queries(tmp_path):
    ds = load_beir_folder(write_beir(tmp_path / "toy", CORPUS, QUERIES, [("q1", "1", 2), ("q2", 2, 1)]))
    assert set(ds.corpus) == {"1", "2"} and all(isinstance(k, str) for k in ds.corpus)
    assert ds.queries == {"q1": "fever drug", "q2": "diabetes"}
    assert ds.qrels == {"q1": {"1": 2}, "q2": {"2": 1}}
    assert ds.corpus["1"].full_text == "Aspirin aspirin lowers fever"
    assert ds.corpus["2"].full_text == "insulin treats diabetes"
    assert len(ds.fingerprint) == 64 and ds.qrels_hash


def test_fingerprint_changes_with_content(tmp_path):
    a = load_beir_folder(write_beir(tmp_path / "a", CORPUS, QUERIES, [("q1", "1", 1)]))
    b = load_beir_folder(write_beir(tmp_path / "b", CORPUS[:1], QUERIES, [("q1", "1", 1)]))
    assert a.fingerprint != b.fingerprint


@pytest.mark.parametrize("corpus_text, message", [
    ('{"_id": "1", "text": "ok"}\n{"_id": "2", "text": \n', "corpus.jsonl:2: malformed JSON"),
    ('{"_id": "1", "text": "ok"}\n{"_id": "1", "text": "again"}\n', "corpus.jsonl:2: field '_id': duplicate document id '1'"),
    ('{"_id": "1"}\n', "corpus.jsonl:1: field 'text': missing"),
    ("", "corpus.jsonl: empty corpus"),
])
def test_bad_corpus_gives_one_line_error_with_file_and_line(tmp_path, corpus_text, message):
    root = write_beir(tmp_path / "bad", CORPUS, QUERIES, [("q1", "1", 1)])
    (root / "corpus.jsonl").write_text(corpus_text)
    with pytest.raises(InputError) as e:
        load_beir_folder(root)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_non_utf8_line_is_reported(tmp_path):
    root = write_beir(tmp_path / "bad", CORPUS, QUERIES, [("q1", "1", 1)])
    (root / "queries.jsonl").write_bytes(b'{"_id": "q1", "text": "ok"}\n{"_id": "q2", "text": "\xff"}\n')
    with pytest.raises(InputError, match=r"queries.jsonl:2: not valid UTF-8"):
        load_beir_folder(root)


def test_qrels_naming_unknown_ids_are_errors(tmp_path):
    root = write_beir(tmp_path / "bad", CORPUS, QUERIES, [("q1", "1", 1), ("q9", "1", 1)])
    with pytest.raises(InputError, match=r"qrels/test.tsv: field 'query-id': 1 query ids not in queries.jsonl"):
        load_beir_folder(root)
    root = write_beir(tmp_path / "bad2", CORPUS, QUERIES, [("q1", "1", 1), ("q2", "nope", 1)])
    with pytest.raises(InputError, match=r"field 'corpus-id': 1 of 2 judgements name documents absent"):
        load_beir_folder(root)


def test_bad_qrels_score_names_line(tmp_path):
    root = write_beir(tmp_path / "bad", CORPUS, QUERIES, [("q1", "1", 1)])
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\t1\thigh\n")
    with pytest.raises(InputError, match=r"test.tsv:2: field 'score': not a number"):
        load_beir_folder(root)


def test_missing_folder_and_corpusless_folder(tmp_path):
    with pytest.raises(InputError, match="dataset folder not found"):
        load_beir_folder(tmp_path / "nope")
    root = write_beir(tmp_path / "qonly", CORPUS, QUERIES, [("q1", "1", 1)])
    (root / "corpus.jsonl").unlink()
    with pytest.raises(InputError, match="no corpus.jsonl"):
        load_beir_folder(root)
    assert load_beir_folder(root, require_corpus=False).qrels == {"q1": {"1": 1}}


def test_corpus_only_folder_loads_for_indexing(tmp_path):
    root = write_beir(tmp_path / "c", CORPUS, QUERIES, [("q1", "1", 1)])
    (root / "queries.jsonl").unlink()
    (root / "qrels" / "test.tsv").unlink()
    ds = load_beir_folder(root)
    assert set(ds.corpus) == {"1", "2"} and ds.queries == {} and ds.qrels == {}


def test_hub_name_offline_is_one_line_error():
    with pytest.raises(InputError, match="cannot load from the hub"):
        load_dataset("BeIR/definitely-not-a-dataset-colmed")


def test_real_nfcorpus_and_arguana_defect(shared_path):
    nf = load_dataset(shared_path("beir", "nfcorpus"))
    assert (len(nf.corpus), len(nf.queries)) == (3633, 323)
    arguana = load_dataset(shared_path("beir", "arguana"))
    assert arguana.name == "arguana"
    assert arguana.warnings and "absent from the corpus" in arguana.warnings[0]
