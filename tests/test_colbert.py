"""ColBERT family end to end: compat fixes, CPU training from all-MiniLM-L6-v2, PLAID index + search via the CLI.

The end-to-end tests share one module-scoped run (a few training steps, one index over the bundled
40-document medical sample). They need colbert-ai's C++ extensions (compiled once into the cached
TORCH_EXTENSIONS_DIR, ~2.5 min the first time) and are marked ``colbert``.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from colmed.cli import main
from colmed.data.datasets import load_dataset
from colmed.data.runs import read_trec

os.environ["HF_HUB_OFFLINE"] = "1"


# ----------------------------------------------------------------------------------------- compat fixes


def test_compat_lets_colbert_ai_load_a_bert_under_transformers_5(tiny_bert_dir):
    from colmed.colbert.adapter import _needs_post_init, apply_compat

    if not _needs_post_init():
        pytest.skip("this transformers does not need the post_init() fix")
    apply_compat()
    import colbert.modeling.base_colbert as base_colbert
    import colbert.modeling.hf_colbert as hf_colbert
    from colbert.infra import ColBERTConfig

    assert base_colbert.class_factory is hf_colbert.class_factory
    upstream = hf_colbert.class_factory.__wrapped__
    with pytest.raises(AttributeError, match="all_tied_weights_keys"):
        upstream(tiny_bert_dir).from_pretrained(tiny_bert_dir, colbert_config=ColBERTConfig(dim=16))
    model = hf_colbert.class_factory(tiny_bert_dir).from_pretrained(tiny_bert_dir, colbert_config=ColBERTConfig(dim=16))
    assert model.linear.weight.shape == (16, 32)
    # The pretrained encoder weights were loaded, not re-initialised by the extra post_init().
    from transformers import BertModel

    reference = BertModel.from_pretrained(tiny_bert_dir)
    assert torch.equal(model.LM.embeddings.word_embeddings.weight, reference.embeddings.word_embeddings.weight)


def test_single_process_ddp_passes_through_and_restores():
    from colmed.colbert.adapter import single_process_ddp

    module = torch.nn.Linear(3, 2)
    with pytest.raises((RuntimeError, ValueError)):
        torch.nn.parallel.DistributedDataParallel(module, device_ids=[0], output_device=0)
    original = torch.nn.parallel.DistributedDataParallel
    with single_process_ddp():
        wrapped = torch.nn.parallel.DistributedDataParallel(module, device_ids=[0], output_device=0,
                                                            find_unused_parameters=True)
        x = torch.randn(4, 3)
        assert torch.equal(wrapped(x), module(x))
        assert wrapped.module is module
    assert torch.nn.parallel.DistributedDataParallel is original


def test_colbert_metadata_works_in_a_git_repo_without_commits(tmp_path, monkeypatch):
    from colmed.colbert.adapter import apply_compat

    apply_compat()
    if subprocess.run(["git", "init", "-q", str(tmp_path)], capture_output=True).returncode != 0:
        pytest.skip("git not available")
    monkeypatch.chdir(tmp_path)
    from colbert.infra import ColBERTConfig

    ColBERTConfig(dim=16).save(str(tmp_path / "artifact.metadata"))  # upstream: ValueError from GitPython
    meta = json.loads((tmp_path / "artifact.metadata").read_text())["meta"]
    assert meta["hostname"] and "current_datetime" in meta


def test_torch_extensions_dir_defaults_to_one_cache_and_respects_the_user(monkeypatch, tmp_path):
    from colmed.colbert.adapter import torch_extensions_dir

    monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert torch_extensions_dir() == tmp_path / "cache" / "colmed" / "torch_extensions"
    assert os.environ["TORCH_EXTENSIONS_DIR"] == str(tmp_path / "cache" / "colmed" / "torch_extensions")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "mine"))
    assert torch_extensions_dir() == tmp_path / "mine"


# ----------------------------------------------------------------------------------------- end to end


def _write_triplets(dataset, path: Path) -> None:
    """Title -> its document, with the next two documents as negatives: enough signal for a smoke run."""
    docs = list(dataset.corpus.values())
    with open(path, "w", encoding="utf-8") as f:
        for i, doc in enumerate(docs):
            negs = [docs[(i + 7) % len(docs)], docs[(i + 19) % len(docs)]]
            f.write(json.dumps({"query_id": f"t{i}", "query": doc.title, "positive_id": doc.doc_id,
                                "positive": doc.text, "negative_ids": [n.doc_id for n in negs],
                                "negatives": [n.text for n in negs], "generator": "title"}) + "\n")


def _invoke(args: list[str]):
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


@pytest.fixture(scope="module")
def colbert_run(tmp_path_factory, minilm_path, sample_dataset_dir):
    """Train 4 steps from all-MiniLM-L6-v2, then index the 40-document sample, all through the CLI."""
    # Keep the test hermetic w.r.t. the working directory: colbert-ai must not write experiments/ there.
    tmp = tmp_path_factory.mktemp("colbert-e2e")
    cwd = os.getcwd()
    os.chdir(tmp)
    try:
        dataset = load_dataset(sample_dataset_dir)
        triplets = tmp / "triplets.jsonl"
        _write_triplets(dataset, triplets)
        ckpt, index = tmp / "ckpt", tmp / "index"
        train_out = _invoke(["train", "colbert", "--triplets", str(triplets), "--base", minilm_path, "--out", str(ckpt),
                             "--max-steps", "4", "--batch-size", "8", "--max-doc-length", "64", "--learning-rate", "3e-5",
                             "--warmup-ratio", "0.5", "--quiet"]).output
        index_out = _invoke(["index", "--retriever", "colbert", "--dataset", str(sample_dataset_dir), "--model",
                             str(ckpt), "--nbits", "2", "--doc-maxlen", "96", "--batch-size", "16",
                             "--out", str(index)]).output
        yield {"tmp": tmp, "ckpt": ckpt, "index": index, "dataset": dataset, "train_out": train_out,
               "index_out": index_out}
    finally:
        os.chdir(cwd)


@pytest.mark.colbert
def test_training_writes_a_loadable_colbert_checkpoint_and_manifest(colbert_run, minilm_path):
    ckpt = colbert_run["ckpt"]
    for name in ("config.json", "model.safetensors", "artifact.metadata", "manifest.json", "train.log"):
        assert (ckpt / name).is_file(), name
    assert any((ckpt / n).is_file() for n in ("tokenizer.json", "vocab.txt"))
    manifest = json.loads((ckpt / "manifest.json").read_text())
    assert manifest["steps"] == 4 and len(manifest["loss_curve"]) == 4
    assert all(loss > 0 for _, loss in manifest["loss_curve"])
    assert manifest["data"]["examples"] == 40 and manifest["config"]["nway"] == 3
    assert len(manifest["data"]["sha256"]) == 64 and manifest["versions"]["colbert-ai"] == "0.2.22"
    colbert_settings = json.loads((ckpt / "artifact.metadata").read_text())
    assert (colbert_settings["dim"], colbert_settings["doc_maxlen"], colbert_settings["nway"]) == (128, 64, 3)
    # The shared trainer vocabulary reached colbert-ai under its own names.
    assert (colbert_settings["bsize"], colbert_settings["maxsteps"], colbert_settings["lr"],
            colbert_settings["warmup"]) == (8, 4, 3e-5, 2)
    assert manifest["config"]["batch_size"] == 8 and manifest["base_model"] == minilm_path

    # What PyLate / plain transformers users read: a BERT body plus ColBERT's linear projection.
    from safetensors import safe_open
    from transformers import AutoModel

    with safe_open(str(ckpt / "model.safetensors"), "pt") as f:
        linear = f.get_tensor("linear.weight")
        trained_word = f.get_tensor("bert.embeddings.word_embeddings.weight")
    assert tuple(linear.shape) == (128, 384)
    body = AutoModel.from_pretrained(str(ckpt))
    assert torch.equal(body.embeddings.word_embeddings.weight, trained_word)
    base = AutoModel.from_pretrained(minilm_path)
    assert not torch.equal(base.embeddings.word_embeddings.weight, trained_word)  # it did train
    assert not (colbert_run["tmp"] / "experiments").exists()


@pytest.mark.colbert
def test_index_directory_has_manifest_string_id_map_and_stats(colbert_run):
    from colmed.indexes.base import IndexManifest, read_docs

    index = colbert_run["index"]
    manifest = IndexManifest.read(index)
    assert manifest.kind == "colbert" and manifest.model == str(colbert_run["ckpt"]) and manifest.dims == 128
    assert manifest.num_docs == 40
    assert manifest.settings["nbits"] == 2 and manifest.settings["doc_maxlen"] == 96
    stats = manifest.stats
    assert stats["num_embeddings"] > 40 and 30 < stats["bytes_per_token"] < 500
    # The k-means sample was the whole corpus, so its embeddings were reused instead of encoding twice.
    assert stats["encoded_passages"] == 40 and stats["reused_sample_encodings"] == 1
    ids, _ = read_docs(index)
    assert ids == list(colbert_run["dataset"].corpus)
    assert (index / "plaid" / "metadata.json").is_file()
    assert not any(p.name.startswith(".") for p in index.iterdir())  # no scratch left behind
    # PLAID's pruning is measured against exhaustive MaxSim on the dataset's queries at build time.
    assert stats["ann_recall_queries"] == 18 and 0.5 <= stats["ann_recall@10"] <= 1.0


@pytest.mark.colbert
def test_crippled_plaid_search_reports_recall_below_one(colbert_run):
    from colmed.indexes.plaid import PlaidIndex, plaid_recall
    from colmed.indexes.base import IndexManifest

    index = colbert_run["index"]
    queries = list(colbert_run["dataset"].queries.values())
    normal = PlaidIndex(index, IndexManifest.read(index))
    crippled = PlaidIndex(index, IndexManifest.read(index), ncells=1, ndocs=4, centroid_score_threshold=0.9)
    assert plaid_recall(crippled, queries, k=10) < plaid_recall(normal, queries, k=10)
    assert plaid_recall(crippled, queries, k=10) < 1.0


@pytest.mark.colbert
def test_index_refuses_to_overwrite(colbert_run, sample_dataset_dir):
    index = colbert_run["index"]
    before = (index / "manifest.json").read_text()
    result = CliRunner().invoke(main, ["index", "--retriever", "colbert", "--dataset", str(sample_dataset_dir),
                                       "--model", str(colbert_run["ckpt"]), "--out", str(index)])
    assert result.exit_code == 2 and "already exists" in result.output
    assert (index / "manifest.json").read_text() == before


@pytest.mark.colbert
def test_search_cli_returns_string_ids_and_finds_the_relevant_document(colbert_run):
    index = colbert_run["index"]
    out = _invoke(["search", "--index", str(index), "--query", "dry cough after starting lisinopril",
                   "--k", "3"]).output
    hits = [line.split() for line in out.splitlines() if re.match(r"^\s+\d+\s+-?[\d.]+\s+\S+", line)]
    assert [int(parts[0]) for parts in hits] == [1, 2, 3]
    assert "htn-02" in [parts[2] for parts in hits]

    run_path = colbert_run["tmp"] / "colbert.trec"
    _invoke(["search", "--index", str(index), "--queries", str(colbert_run["dataset"].source), "--k", "10",
             "--out", str(run_path)])
    run = read_trec(run_path)
    dataset = colbert_run["dataset"]
    assert set(run) == set(dataset.queries)
    assert all(set(hits) <= set(dataset.corpus) and 0 < len(hits) <= 10 for hits in run.values())
    from colmed.eval.evaluation import evaluate_run

    assert evaluate_run(dataset, run, ["ndcg@10"])["ndcg@10"] > 0.5


@pytest.mark.colbert
def test_search_passes_ncells_and_ndocs_on_every_call(colbert_run):
    from colmed.indexes.base import load_index

    index = load_index(colbert_run["index"])
    raw_config = index._searcher.raw.config
    first = index.search({"a": "metformin and kidney disease"}, k=5)
    assert (raw_config.ncells, raw_config.ndocs) == (1, 256)
    # colbert-ai alone would keep ncells=1/ndocs=256 from the first call; colmed sets them per call.
    index.search({"a": "metformin and kidney disease"}, k=50)
    assert (raw_config.ncells, raw_config.ndocs) == (2, 1024)
    assert list(index.search({"a": "metformin and kidney disease"}, k=5)["a"]) == list(first["a"])
    assert 0 < len(index.search({"a": "metformin"}, k=1000)["a"]) <= 40  # k beyond the corpus is fine
    tuned = load_index(colbert_run["index"], ncells=4, ndocs=64)
    tuned.search({"a": "metformin"}, k=5)
    assert (tuned._searcher.raw.config.ncells, tuned._searcher.raw.config.ndocs) == (4, 64)
    from colmed.core.errors import InputError

    with pytest.raises(InputError, match="unknown option"):
        load_index(colbert_run["index"], index_type="hnsw")


@pytest.mark.colbert
def test_long_queries_are_read_to_the_query_maxlen_asked_for(colbert_run):
    from colmed.indexes.base import load_index

    # Two queries that differ only after 40 shared tokens: a 32-token reading cannot tell them apart.
    prefix = "patient reports " * 20
    cough, fracture = prefix + "dry cough after starting lisinopril", prefix + "wrist fracture after a fall"
    default = load_index(colbert_run["index"])
    short = default._searcher.encode([cough, fracture])
    assert short.shape[1] == 32 and torch.allclose(short[0], short[1])  # the model's trained length
    long = load_index(colbert_run["index"], query_maxlen=300)
    full = long._searcher.encode([cough, fracture])
    assert full.shape[1] == 300 and not torch.allclose(full[0], full[1])
    assert long.search({"q": cough}, k=40)["q"] != default.search({"q": cough}, k=40)["q"]


@pytest.mark.colbert
def test_benchmark_reads_arguana_queries_to_300_tokens_for_colbert_only(colbert_run, sample_dataset_dir, tmp_path):
    import shutil

    from colmed.benchmark import BenchmarkConfig, run_benchmark

    # A registered name gives a folder its protocol: this copy of the sample is evaluated as ArguAna.
    shutil.copytree(sample_dataset_dir, tmp_path / "beir" / "arguana")
    config = BenchmarkConfig(retrievers=["bm25=bm25", f"colbert=colbert:{colbert_run['ckpt']}"], datasets=["arguana"],
                             data_dir=str(tmp_path / "beir"), out=str(tmp_path / "bench"), batch_size=16)
    results = run_benchmark(config, log=lambda line: None).to_dict()
    assert results["datasets"] == ["arguana"]
    sidecars = {name: json.loads(Path(cell["run_path"] + ".json").read_text())
                for name, cell in results["cells"]["arguana"].items()}
    assert sidecars["colbert"]["search_options"] == {"query_maxlen": 300}
    assert "search_options" not in sidecars["bm25"]
    assert results["protocol"]["arguana"]["colbert_query_maxlen"] == 300
    assert "ColBERT query tokens: arguana 300" in (tmp_path / "bench" / "report.md").read_text()
    # `colmed search` applies the same protocol to the registered folder, and records it.
    _invoke(["search", "--index", str(colbert_run["index"]), "--queries", str(tmp_path / "beir" / "arguana"),
             "--k", "10", "--out", str(tmp_path / "arguana.trec")])
    assert json.loads((tmp_path / "arguana.trec.json").read_text())["search_options"] == {"query_maxlen": 300}


@pytest.mark.colbert
def test_distillation_then_continued_training_from_the_colbert_checkpoint(tmp_path, tiny_bert_dir):
    from colmed.colbert.training import ColbertTrainingConfig, train_colbert

    triplets = tmp_path / "t.jsonl"
    with open(triplets, "w", encoding="utf-8") as f:
        for i in range(8):
            f.write(json.dumps({"query_id": f"q{i}", "query": f"symptom {i} treatment",
                                "positive_id": f"p{i}", "positive": f"treatment of symptom {i} is rest",
                                "negative_ids": [f"n{i}"], "negatives": [f"unrelated text number {i}"],
                                "teacher_scores": [4.0, -1.0]}) + "\n")
    first = train_colbert(ColbertTrainingConfig(
        base_model=tiny_bert_dir, triplets=str(triplets), out=str(tmp_path / "distilled"), batch_size=4, max_steps=2,
        max_doc_length=32, max_query_length=16, dim=16, distill=True, use_ib_negatives=False), progress=False)
    # Without in-batch negatives the loss is colbert-ai's KL divergence to the teacher: finite and >= 0.
    assert first["steps"] == 2 and all(math.isfinite(loss) and loss >= -1e-6 for _, loss in first["loss_curve"])
    settings = json.loads((tmp_path / "distilled" / "artifact.metadata").read_text())
    assert settings["ignore_scores"] is False and settings["dim"] == 16
    from safetensors import safe_open
    from transformers import BertModel

    with safe_open(str(tmp_path / "distilled" / "model.safetensors"), "pt") as f:
        distilled_word = f.get_tensor("bert.embeddings.word_embeddings.weight")
    base_word = BertModel.from_pretrained(tiny_bert_dir).embeddings.word_embeddings.weight
    assert not torch.equal(base_word, distilled_word), "distillation did not update the encoder"
    # A ColBERT checkpoint as --base keeps its projection size unless --dim says otherwise.
    second = train_colbert(ColbertTrainingConfig(
        base_model=str(tmp_path / "distilled"), triplets=str(triplets), out=str(tmp_path / "continued"),
        batch_size=4, max_steps=1, max_doc_length=32, max_query_length=16), progress=False)
    assert second["steps"] == 1
    assert json.loads((tmp_path / "continued" / "artifact.metadata").read_text())["dim"] == 16
