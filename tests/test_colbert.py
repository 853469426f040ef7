"""ColBERT family end to end: compat fixes, CPU training from all-MiniLM-L6-v2 (sentence-transformers'
MultiVectorEncoder trainer), PLAID index + search via the CLI with the model's own encoder, the exhaustive
MaxSim / PLAID round trip, and colbert-ai checkpoints made before the switch.

The end-to-end tests share one module-scoped run (a few training steps, one index over the bundled
40-document medical sample). They need colbert-ai's C++ extensions (compiled once into the cached
TORCH_EXTENSIONS_DIR, ~2.5 min the first time) and are marked ``colbert``.
"""

from __future__ import annotations

import json
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
def test_training_writes_a_multi_vector_encoder_and_manifest(colbert_run, minilm_path):
    from colmed.colbert.multivector import conventions, encode_documents, load_colbert

    ckpt = colbert_run["ckpt"]
    for name in ("config.json", "model.safetensors", "modules.json", "config_sentence_transformers.json",
                 "manifest.json"):
        assert (ckpt / name).is_file(), name
    manifest = json.loads((ckpt / "manifest.json").read_text())
    assert manifest["global_steps"] == 4 and manifest["model_class"] == "MultiVectorEncoder"
    assert all(loss > 0 for _, loss in manifest["loss_curve"])
    assert manifest["data"]["examples"] == 40 and manifest["config"]["nway"] == 3
    assert len(manifest["data"]["sha256"]) == 64
    assert manifest["config"]["batch_size"] == 8 and manifest["base_model"] == minilm_path
    # A 128-d PCA start from MiniLM, documents read to 64 tokens during training and after.
    model = load_colbert(ckpt)
    assert manifest["conventions"] == conventions(model)
    assert (conventions(model)["dim"], conventions(model)["query_length"], conventions(model)["document_length"]) == \
        (128, 32, 64)
    from colmed.colbert.multivector import colbert_from_base

    start = colbert_from_base(minilm_path, 128, document_length=64, pca_texts=["dry cough", "chest pain"] * 64)
    assert not torch.allclose(encode_documents(model, ["dry cough"])[0][:, :8].abs(),
                              encode_documents(start, ["dry cough"])[0][:, :8].abs())  # it did train
    assert not (colbert_run["tmp"] / "experiments").exists()


@pytest.mark.colbert
def test_index_directory_has_manifest_string_id_map_and_stats(colbert_run):
    from colmed.indexes.base import IndexManifest, read_docs

    index = colbert_run["index"]
    manifest = IndexManifest.read(index)
    assert manifest.kind == "colbert" and manifest.model == str(colbert_run["ckpt"]) and manifest.dims == 128
    assert manifest.num_docs == 40 and manifest.settings["encoder"] == "multivector"
    assert manifest.settings["nbits"] == 2 and manifest.settings["doc_maxlen"] == 96
    assert manifest.settings["conventions"]["document_length"] == 96  # --doc-maxlen: an index-time choice
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
    assert short[0].shape[0] == 32 and torch.allclose(short[0], short[1])  # the model's trained length
    long = load_index(colbert_run["index"], query_maxlen=300)
    full = long._searcher.encode([cough, fracture])
    assert 40 < full[0].shape[0] <= 300  # read past 32 tokens; no [MASK] padding to a fixed width
    assert full[0].shape != full[1].shape or not torch.allclose(full[0], full[1])
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
def test_exhaustive_maxsim_and_plaid_agree_on_the_untrained_minilm_colbert(minilm_path, sample_dataset_dir, tmp_path):
    """The round trip: the model's exhaustive MaxSim and colmed's PLAID (nbits 8, every centroid probed, no
    threshold, every document kept) return the same top-10 documents with scores within 0.06 (8-bit residuals
    and float16 centroids on MaxSim sums of up to 32 query tokens), ties within that tolerance aside."""
    from colmed.colbert.multivector import ExhaustiveMaxSim
    from colmed.indexes.base import build_index, load_index

    dataset = load_dataset(sample_dataset_dir)
    manifest = build_index("colbert", dataset, tmp_path / "idx", model=minilm_path, nbits=8, batch_size=16)
    # A plain model indexes as its untrained 128-d PCA ColBERT, saved with the index so search encodes alike.
    assert manifest.settings["encoder"] == "multivector" and manifest.dims == 128 and manifest.model == "encoder"
    assert manifest.settings["base_model"] == minilm_path and (tmp_path / "idx" / "encoder" / "modules.json").is_file()
    # Built with colmed's k-means settings (faiss threads = free cores), recorded so the build can be repeated.
    kmeans = manifest.settings["kmeans"]
    assert 1 <= kmeans["threads"] <= len(os.sched_getaffinity(0)) and kmeans["niter"] == 4 and kmeans["seed"] == 123
    assert kmeans["points"] == min(kmeans["sample_embeddings"], 256 * manifest.settings["num_partitions"])
    assert kmeans["max_points_per_centroid"] == 256 and kmeans["wait_policy"]
    phases = manifest.stats["phase_seconds"]
    assert all(phases[p] > 0 for p in ("model_and_pca", "kmeans", "compress", "ivf", "recall_check"))
    # Every sample passage was encoded once, for the projection's PCA, and that encoding is the index's: the
    # indexer's own encode phase only looks them up.
    pca = manifest.settings["pca"]
    assert pca["reused_for_index"] and pca["index_passages_reused"] >= len(dataset.corpus)
    assert manifest.stats["pca_seconds"]["encode"] > 0 and 0 <= phases["encode"] < phases["model_and_pca"]
    index = load_index(tmp_path / "idx")
    qids = list(dataset.queries)
    texts = [dataset.queries[q] for q in qids]
    plaid = index._searcher.search_batch(texts, 10, ncells=manifest.settings["num_partitions"],
                                         centroid_score_threshold=-1.0, ndocs=4 * manifest.num_docs)
    passages = [" ".join(dataset.corpus[d].full_text.split()) for d in dataset.doc_ids()]
    exact = ExhaustiveMaxSim(index.encoder, dataset.doc_ids(), passages).scores(texts)
    tolerance = 0.06
    for row, (pids, scores) in enumerate(plaid):
        top = exact[row].topk(10)
        assert set(pids) == set(top.indices.tolist()), qids[row]
        for pid, score in zip(pids, scores):
            assert abs(score - float(exact[row, pid])) <= tolerance
        # Order differs only where exhaustive scores are within the tolerance of each other.
        ranked = [float(exact[row, pid]) for pid in pids]
        assert all(a >= b - 2 * tolerance for a, b in zip(ranked, ranked[1:]))
    # The index's normal search returns what the exhaustive search ranks first.
    first = index.search({"q": texts[0]}, k=1)["q"]
    assert list(first) == [dataset.doc_ids()[int(exact[0].argmax())]]


@pytest.mark.colbert
def test_colbert_ai_checkpoints_from_before_the_switch_still_index_and_search(tiny_bert_dir, sample_dataset_dir,
                                                                             tmp_path):
    from colmed.colbert.adapter import apply_compat
    from colmed.colbert.multivector import checkpoint_kind
    from colmed.indexes.base import build_index, load_index

    apply_compat()
    import colbert.modeling.hf_colbert as hf_colbert
    from colbert.infra import ColBERTConfig

    # What colbert-ai training wrote: an HF_ColBERT body + linear projection and artifact.metadata.
    config = ColBERTConfig(dim=16, doc_maxlen=64, query_maxlen=32)
    legacy = tmp_path / "legacy"
    model = hf_colbert.class_factory(tiny_bert_dir).from_pretrained(tiny_bert_dir, colbert_config=config)
    model.save_pretrained(str(legacy))
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(str(legacy))
    config.save_for_checkpoint(str(legacy))
    assert checkpoint_kind(legacy) == "stanford"
    dataset = load_dataset(sample_dataset_dir)
    from colmed.core.errors import InputError

    with pytest.raises(InputError, match="multiple of 8 x nbits") as refused:  # one line, not colbert-ai's assert
        build_index("colbert", dataset, tmp_path / "idx", model=str(legacy), nbits=4, recall_sample=0)
    assert refused.value.field == "nbits" and not (tmp_path / "idx").exists()
    manifest = build_index("colbert", dataset, tmp_path / "idx", model=str(legacy), nbits=2, batch_size=16,
                           recall_sample=0)
    assert manifest.settings["encoder"] == "colbert-ai" and manifest.dims == 16 and manifest.settings["doc_maxlen"] == 300
    hits = load_index(tmp_path / "idx").search({"q": "dry cough after starting lisinopril"}, k=5)["q"]
    assert len(hits) == 5 and set(hits) <= set(dataset.corpus)
    # colbert-ai encodes those queries itself: [Q] marker and [MASK] expansion to 32 tokens.
    assert load_index(tmp_path / "idx")._searcher.encode(["dry cough"]).shape == (1, 32, 16)
