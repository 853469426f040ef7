"""Bad input, tried as a user would (issue #16): every row runs one ``colmed`` command on one bad input and
must end with exit code 2, one line on stderr naming the file/field at fault, and nothing written or deleted.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Callable

import pytest
from click.testing import CliRunner

from colmed.cli import main


def snapshot(root: Path) -> dict[str, str]:
    """Every path under ``root`` with its content hash ("dir" for folders): what a command may not change."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        out[rel] = "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def run_cli(args: list[str]):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def dataset(tmp_path, sample_dataset_dir) -> Path:
    """A writable copy of the bundled sample dataset."""
    ds = tmp_path / "ds"
    shutil.copytree(sample_dataset_dir, ds)
    return ds


@pytest.fixture
def bm25_index(tmp_path, dataset) -> Path:
    idx = tmp_path / "idx"
    result = run_cli(["index", "--retriever", "bm25", "--dataset", dataset, "--out", idx])
    assert result.exit_code == 0, result.output
    return idx


def _corpus_line(ds: Path, n: int) -> tuple[str, dict]:
    lines = (ds / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
    return lines[n], json.loads(lines[n])


# ---- rows: (name, setup(tmp_path, dataset, bm25_index) -> argv, words the one-line error must contain) ----

def _qrels_inf(tmp, ds, idx):
    with open(ds / "qrels" / "test.tsv", "a", encoding="utf-8") as f:
        f.write("q1\td1\tinf\n")
    return ["index", "--retriever", "bm25", "--dataset", ds, "--out", tmp / "new"]


def _qrels_not_utf8(tmp, ds, idx):
    with open(ds / "qrels" / "test.tsv", "ab") as f:
        f.write(b"q1\td\xff1\t1\n")
    return ["index", "--retriever", "bm25", "--dataset", ds, "--out", tmp / "new"]


def _doc_id_with_space(tmp, ds, idx):
    lines = (ds / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
    rec = json.loads(lines[2])
    rec["_id"] = "doc with space"
    lines[2] = json.dumps(rec)
    (ds / "corpus.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return ["index", "--retriever", "bm25", "--dataset", ds, "--out", tmp / "new"]


def _run_file(tmp, score: str) -> Path:
    run = tmp / "bad.trec"
    run.write_text("q1 Q0 d1 1 3.5 x\nq1 Q0 d2 2 " + score + " x\n", encoding="utf-8")
    return run


def _run_nan(tmp, ds, idx):
    return ["compare", "--dataset", ds, "--run", _run_file(tmp, "nan"), "--out", tmp / "report"]


def _run_inf(tmp, ds, idx):
    return ["compare", "--dataset", ds, "--run", _run_file(tmp, "inf"), "--out", tmp / "report"]


def _run_not_utf8(tmp, ds, idx):
    run = tmp / "bad.trec"
    run.write_bytes(b"q1 Q0 d1 1 3.5 x\nq1 Q0 d\xfe2 2 1.0 x\n")
    return ["compare", "--dataset", ds, "--run", run, "--out", tmp / "report"]


def _k_zero(tmp, ds, idx):
    return ["search", "--index", idx, "--query", "fever", "--k", "0"]


def _k_negative_with_queries(tmp, ds, idx):
    return ["search", "--index", idx, "--queries", ds, "--k", "-5", "--out", tmp / "run.trec"]


def _empty_query(tmp, ds, idx):
    return ["search", "--index", idx, "--query", ""]


def _empty_queries_file(tmp, ds, idx):
    (tmp / "queries.jsonl").write_text("", encoding="utf-8")
    return ["search", "--index", idx, "--queries", tmp / "queries.jsonl", "--out", tmp / "run.trec"]


def _split_without_qrels(tmp, ds, idx):
    return ["search", "--index", idx, "--queries", ds, "--split", "dev", "--out", tmp / "run.trec"]


def _docs_shorter(tmp, ds, idx):
    lines = (idx / "docs.jsonl").read_text(encoding="utf-8").splitlines()
    (idx / "docs.jsonl").write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")
    return ["search", "--index", idx, "--query", "fever"]


def _legacy_docs_shorter(tmp, ds, idx):
    """An index written before file sizes were recorded: docs.jsonl is checked against num_docs."""
    _manifest_edit(idx, lambda m: {k: v for k, v in m.items() if k != "files"})
    return _docs_shorter(tmp, ds, idx)


def _npy(idx: Path) -> Path:
    return sorted((idx / "bm25s").glob("*.npy"))[0]


def _npy_missing(tmp, ds, idx):
    _npy(idx).unlink()
    return ["search", "--index", idx, "--query", "fever"]


def _npy_truncated(tmp, ds, idx):
    path = _npy(idx)
    path.write_bytes(path.read_bytes()[:-8])
    return ["search", "--index", idx, "--query", "fever"]


def _manifest_edit(idx: Path, edit: Callable[[dict], object]) -> None:
    data = json.loads((idx / "manifest.json").read_text(encoding="utf-8"))
    (idx / "manifest.json").write_text(json.dumps(edit(data)), encoding="utf-8")


def _manifest_list(tmp, ds, idx):
    _manifest_edit(idx, lambda m: [m])
    return ["search", "--index", idx, "--query", "fever"]


def _manifest_no_kind(tmp, ds, idx):
    _manifest_edit(idx, lambda m: {k: v for k, v in m.items() if k != "kind"})
    return ["search", "--index", idx, "--query", "fever"]


def _manifest_setting_type(tmp, ds, idx):
    _manifest_edit(idx, lambda m: {**m, "settings": {**m["settings"], "k1": "high"}})
    return ["search", "--index", idx, "--query", "fever"]


def _manifest_num_docs_type(tmp, ds, idx):
    _manifest_edit(idx, lambda m: {**m, "num_docs": "many"})
    return ["search", "--index", idx, "--query", "fever"]


def _faiss_index(tmp: Path) -> Path:
    """A dense index directory written the way build_index writes one (faiss file, docs, manifest with sizes)."""
    import faiss
    import numpy as np

    from colmed.indexes.base import IndexManifest, file_records, write_docs

    d = tmp / "dense"
    d.mkdir()
    index = faiss.IndexFlatIP(4)
    index.add(np.eye(4, dtype="float32"))
    faiss.write_index(index, str(d / "faiss.index"))
    write_docs(d, ["a", "b", "c", "d"])
    IndexManifest(kind="dense", model=str(tmp / "model-folder"), dims=4, num_docs=4,
                  settings={"index_type": "flat"}, files=file_records(d)).write(d)
    return d


def _faiss_missing(tmp, ds, idx):
    d = _faiss_index(tmp)
    (d / "faiss.index").unlink()
    return ["search", "--index", d, "--query", "fever"]


def _faiss_truncated(tmp, ds, idx):
    d = _faiss_index(tmp)
    data = (d / "faiss.index").read_bytes()
    (d / "faiss.index").write_bytes(data[: len(data) // 2])
    return ["search", "--index", d, "--query", "fever"]


def _dense_model_path_missing(tmp, ds, idx):
    return ["index", "--retriever", "dense", "--dataset", ds, "--model", "./models/no-such-minilm",
            "--out", tmp / "new"]


def _dense_model_partial_path(tmp, ds, idx):
    Path("models").mkdir()  # "models/minilm" now names a local folder that is not there, not a hub repo
    return ["index", "--retriever", "dense", "--dataset", ds, "--model", "models/minilm",
            "--out", tmp / "new"]


def _verify_flipped_byte(tmp, ds, idx):
    path = idx / "docs.jsonl"
    data = bytearray(path.read_bytes())
    data[5] = ord("X") if data[5] != ord("X") else ord("Y")  # same size, other content
    path.write_bytes(bytes(data))
    return ["index", "--verify", idx]


def _overwrite_user_folder(tmp, ds, idx):
    (tmp / "u").mkdir()
    (tmp / "u" / "thesis.txt").write_text("keep", encoding="utf-8")
    return ["index", "--retriever", "bm25", "--dataset", ds, "--out", tmp / "u", "--overwrite"]


def _overwrite_dataset(tmp, ds, idx):
    return ["index", "--retriever", "bm25", "--dataset", ds, "--out", ds, "--overwrite"]


def _out_inside_dataset(tmp, ds, idx):
    return ["index", "--retriever", "bm25", "--dataset", ds, "--out", ds / "idx", "--overwrite"]


def _out_contains_dataset(tmp, ds, idx):
    inner = tmp / "outer" / "ds"
    shutil.copytree(ds, inner)
    return ["index", "--retriever", "bm25", "--dataset", inner, "--out", tmp / "outer", "--overwrite"]


def _overwrite_other_kind(tmp, ds, idx):
    (tmp / "model").mkdir()
    (tmp / "model" / "manifest.json").write_text('{"kind": "colmed-bi-encoder"}', encoding="utf-8")
    return ["index", "--retriever", "bm25", "--dataset", ds, "--out", tmp / "model", "--overwrite"]


def _out_dot(tmp, ds, idx):
    return ["index", "--retriever", "bm25", "--dataset", ds, "--out", ".", "--overwrite"]


def _out_dotdot(tmp, ds, idx):
    return ["index", "--retriever", "bm25", "--dataset", ds, "--out", "..", "--overwrite"]


def _out_under_file(tmp, ds, idx):
    (tmp / "afile").write_text("x", encoding="utf-8")
    return ["index", "--retriever", "bm25", "--dataset", ds, "--out", tmp / "afile" / "idx"]


def _search_run(tmp, ds, idx) -> Path:
    run = tmp / "run.trec"
    result = run_cli(["search", "--index", idx, "--queries", ds, "--out", run])
    assert result.exit_code == 0, result.output
    return run


def _compare_fuse_typo(tmp, ds, idx):
    run = _search_run(tmp, ds, idx)
    return ["compare", "--dataset", ds, "--run", f"a={run}", "--run", f"b={run}", "--fuse", "rfr", "--out",
            tmp / "report"]


def _compare_metric_typo(tmp, ds, idx):
    return ["compare", "--dataset", ds, "--run", _search_run(tmp, ds, idx), "--metric", "ndgc@10", "--out",
            tmp / "report"]


def _compare_other_qrels(tmp, ds, idx):
    run = _search_run(tmp, ds, idx)
    other = tmp / "other"
    shutil.copytree(ds, other)
    qrels = other / "qrels" / "test.tsv"
    lines = qrels.read_text(encoding="utf-8").splitlines()
    qid, did, grade = lines[-1].split("\t")
    lines[-1] = "\t".join([qid, did, str(int(grade) + 1)])  # one judgement regraded: other qrels
    qrels.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return ["compare", "--dataset", other, "--run", run, "--out", tmp / "report"]


def _benchmark_nothing_loads(tmp, ds, idx):
    return ["benchmark", "--retriever", "bm25=bm25", "--dataset", tmp / "no-such-a", "--dataset", tmp / "no-such-b",
            "--out", tmp / "bench"]


def _generate(tmp, ds, *extra):
    return ["generate", "--notes", ds, "--out", tmp / "triplets", "--no-progress", *extra]


def _generate_batch_zero(tmp, ds, idx):
    return _generate(tmp, ds, "--batch-notes", "0")


def _generate_negatives_negative(tmp, ds, idx):
    return _generate(tmp, ds, "--negatives", "-3")


def _generate_too_many_notes(tmp, ds, idx):
    return _generate(tmp, ds, "--num-notes", "100")


def _generate_openai_without_base_url(tmp, ds, idx):
    return _generate(tmp, ds, "--generator", "llm", "--backend", "openai", "--model", "served")


def _generate_base_url_with_password(tmp, ds, idx):
    return _generate(tmp, ds, "--generator", "llm", "--backend", "openai", "--model", "served", "--base-url",
                     "http://user:hunter2@127.0.0.1:8000/v1")


def _generate_base_url_with_key(tmp, ds, idx):
    return _generate(tmp, ds, "--generator", "llm", "--backend", "openai", "--model", "served", "--base-url",
                     "http://127.0.0.1:8000/v1?api-key=hunter2")


def _generate_yaml(tmp, ds, idx, text):
    (tmp / "gen.yaml").write_text(text, encoding="utf-8")
    return ["generate", "--config", tmp / "gen.yaml", "--notes", ds, "--out", tmp / "triplets"]


def _study_yaml(tmp, text):
    (tmp / "study.yaml").write_text(text, encoding="utf-8")
    return ["study", "--config", tmp / "study.yaml", "--out", tmp / "study"]


def _train_yaml(tmp, text):
    (tmp / "train.yaml").write_text(text, encoding="utf-8")
    return ["train", "bi-encoder", "--config", tmp / "train.yaml", "--triplets", tmp / "t", "--out", tmp / "model"]


CASES = [
    ("qrels score inf", _qrels_inf, ["qrels/test.tsv:", "field 'score'", "inf"]),
    ("qrels non-UTF-8 byte", _qrels_not_utf8, ["qrels/test.tsv:", "UTF-8"]),
    ("doc id with whitespace", _doc_id_with_space, ["corpus.jsonl:3", "field '_id'", "whitespace"]),
    ("run score nan", _run_nan, ["bad.trec:2", "field 'score'", "nan"]),
    ("run score inf", _run_inf, ["bad.trec:2", "field 'score'", "inf"]),
    ("run non-UTF-8 byte", _run_not_utf8, ["bad.trec:2", "UTF-8"]),
    ("search --k 0", _k_zero, ["field '--k'", "at least 1"]),
    ("search --k -5 with --queries", _k_negative_with_queries, ["field '--k'"]),
    ("search --query ''", _empty_query, ["field '--query'", "empty"]),
    ("empty queries file", _empty_queries_file, ["queries.jsonl", "no queries"]),
    ("search --split dev without dev qrels", _split_without_qrels, ["field '--split'", "qrels/dev.tsv"]),
    ("docs.jsonl shorter than the index", _docs_shorter, ["docs.jsonl", "damaged"]),
    ("docs.jsonl shorter, index without recorded sizes", _legacy_docs_shorter,
     ["docs.jsonl", "39 documents", "says 40"]),
    ("bm25s npy missing", _npy_missing, [".npy", "missing"]),
    ("bm25s npy truncated", _npy_truncated, [".npy", "bytes"]),
    ("manifest is a list", _manifest_list, ["manifest.json", "JSON object"]),
    ("manifest lacks kind", _manifest_no_kind, ["manifest.json", "field 'kind'"]),
    ("manifest setting of wrong type", _manifest_setting_type, ["manifest.json", "field 'settings.k1'"]),
    ("manifest num_docs of wrong type", _manifest_num_docs_type, ["manifest.json", "field 'num_docs'"]),
    ("faiss.index missing", _faiss_missing, ["faiss.index", "missing"]),
    ("faiss.index truncated", _faiss_truncated, ["faiss.index", "bytes"]),
    ("dense model path that does not exist", _dense_model_path_missing,
     ["no-such-minilm", "not looked up on the hub"]),
    ("dense model path whose first part exists", _dense_model_partial_path,
     ["models/minilm", "not looked up on the hub"]),
    ("index --verify with a changed byte", _verify_flipped_byte, ["docs.jsonl", "sha256"]),
    ("--overwrite onto a user's folder", _overwrite_user_folder, ["field '--out'", "did not write"]),
    ("--out equal to --dataset", _overwrite_dataset, ["field '--out'", "is the input"]),
    ("--out inside --dataset", _out_inside_dataset, ["field '--out'", "inside the input"]),
    ("--out containing --dataset", _out_contains_dataset, ["field '--out'", "contains the input"]),
    ("--overwrite onto another kind of colmed output", _overwrite_other_kind, ["field '--out'", "colmed model output"]),
    ("--out .", _out_dot, ["field '--out'", "'.'"]),
    ("--out ..", _out_dotdot, ["field '--out'", "'..'"]),
    ("--out under a file", _out_under_file, ["field '--out'", "afile", "a file"]),
    ("compare --fuse typo", _compare_fuse_typo, ["field '--fuse'", "'rfr'", "rrf"]),
    ("compare --metric typo", _compare_metric_typo, ["field '--metric'", "'ndgc@10'"]),
    ("compare a run made for other qrels", _compare_other_qrels, ["run.trec", "field 'qrels_hash'", "other qrels"]),
    ("benchmark where no dataset loads", _benchmark_nothing_loads,
     ["field 'datasets'", "no dataset could be evaluated", "no-such-a"]),
    ("generate --batch-notes 0", _generate_batch_zero, ["field 'batch_notes'", "at least 1"]),
    ("generate --negatives -3", _generate_negatives_negative, ["field 'num_negatives'", "-3"]),
    ("generate --num-notes above the population", _generate_too_many_notes,
     ["field 'num_notes'", "100 notes", "holds 40"]),
    ("generate --backend openai without --base-url", _generate_openai_without_base_url,
     ["field 'base_url'", "needs --base-url"]),
    ("generate --base-url with user:password@", _generate_base_url_with_password,
     ["field 'base_url'", "credential"]),
    ("generate --base-url with ?api-key=", _generate_base_url_with_key, ["field 'base_url'", "'api-key'"]),
    ("generate YAML num_negatives: five", lambda t, d, i: _generate_yaml(t, d, i, "num_negatives: five\n"),
     ["gen.yaml", "field 'num_negatives'", "five"]),
    ("generate YAML dedup: 'no' (a string)", lambda t, d, i: _generate_yaml(t, d, i, 'dedup: "no"\n'),
     ["gen.yaml", "field 'dedup'"]),
    ("study YAML datasets: a string", lambda t, d, i: _study_yaml(t, "benchmark:\n  datasets: nfcorpus\n"),
     ["study.yaml", "field 'benchmark.datasets'"]),
    ("study YAML num_notes: lots", lambda t, d, i: _study_yaml(t, "data:\n  num_notes: lots\n"),
     ["study.yaml", "field 'data.num_notes'"]),
    ("train YAML epochs: many", lambda t, d, i: _train_yaml(t, "epochs: many\n"),
     ["train.yaml", "field 'epochs'"]),
    ("train bi-encoder --batch-size 0", lambda t, d, i: ["train", "bi-encoder", "--triplets", t / "t", "--base", "m",
                                                         "--out", t / "model", "--batch-size", "0"],
     ["field 'batch_size'", "got 0"]),
    ("generate --labelled --negatives -3", lambda t, d, i: ["generate", "--labelled", d, "--out", t / "triplets",
                                                          "--negatives", "-3", "--no-progress"],
     ["field 'num_negatives'", "-3"]),
    ("benchmark --batch-size 0", lambda t, d, i: ["benchmark", "--retriever", "bm25=bm25", "--dataset", d,
                                                  "--batch-size", "0", "--out", t / "bench"],
     ["field 'batch_size'", "got 0"]),
    ("benchmark --compare of an unknown retriever", lambda t, d, i: [
        "benchmark", "--retriever", "bm25=bm25", "--retriever", "lex=bm25", "--compare", "lex:nope", "--dataset", d,
        "--out", t / "bench"], ["field 'comparisons'", "lex:nope"]),
    ("benchmark rrf of an unknown retriever", lambda t, d, i: [
        "benchmark", "--retriever", "bm25=bm25", "--retriever", "h=rrf:bm25+nope", "--dataset", d,
        "--out", t / "bench"], ["field 'retriever'", "bm25+nope"]),
    ("train colbert --num-negatives against --nway", lambda t, d, i: [
        "train", "colbert", "--triplets", t / "t", "--base", "m", "--out", t / "model", "--num-negatives", "2",
        "--nway", "4"], ["field 'nway'", "contradicts"]),
    ("generate --contamination-check of a missing folder", lambda t, d, i: [
        "generate", "--labelled", d, "--out", t / "triplets", "--no-progress", "--contamination-check",
        t / "no-such-benchmark"], ["no-such-benchmark"]),
    ("study --until an unknown stage", lambda t, d, i: _study_yaml(t, "data:\n  num_notes: 5\n") + ["--until", "train"],
     ["field 'until'", "train-bi-encoder"]),
]


@pytest.mark.parametrize("name,setup,words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(name, setup, words, tmp_path, dataset, bm25_index,
                                                         monkeypatch):
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)  # `--out .`/`..` must not touch the test's own folder either
    argv = setup(tmp_path, dataset, bm25_index)
    before = snapshot(tmp_path)
    result = run_cli(argv)
    assert result.exit_code == 2, (name, result.output)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    error_lines = [line for line in lines if line.startswith("error:")]
    assert len(error_lines) == 1 and lines[-1] == error_lines[0], (name, result.stderr)
    for word in words:
        assert word in error_lines[0], (name, word, error_lines[0])
    assert snapshot(tmp_path) == before, f"{name}: files changed"
