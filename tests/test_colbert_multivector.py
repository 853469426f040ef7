"""ColBERT as a sentence-transformers MultiVectorEncoder: untrained start points and the shared trainer (no colbert-ai)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from colmed.cli import main
from colmed.colbert.multivector import (ExhaustiveMaxSim, checkpoint_kind, colbert_from_base, conventions,
                                        encode_documents, encode_queries, load_colbert)
from colmed.core.errors import IndexExistsError, InputError

PASSAGES = ["aspirin lowers fever and relieves mild pain", "insulin treats type 1 diabetes",
            "lisinopril can cause a dry cough", "statins lower LDL cholesterol",
            "metformin is first-line therapy for type 2 diabetes", "ibuprofen is an anti-inflammatory drug"]


def _base_token_embeddings(base_dir: str, text: str, max_length: int) -> torch.Tensor:
    from transformers import AutoModel, AutoTokenizer

    tokenizer, model = AutoTokenizer.from_pretrained(base_dir), AutoModel.from_pretrained(base_dir).eval()
    with torch.no_grad():
        hidden = model(**tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")).last_hidden_state
    return torch.nn.functional.normalize(hidden[0], dim=-1)


def test_full_dimension_start_is_the_base_models_own_normalised_token_embeddings(tiny_st_model_dir, tiny_bert_dir):
    model = colbert_from_base(tiny_st_model_dir, dim=32)
    assert [type(m).__name__ for m in model] == ["Transformer", "MultiVectorMask", "Normalize"]  # no projection
    info = conventions(model)
    assert (info["dim"], info["query_length"], info["document_length"], info["query_expansion"]) == (32, 32, 256, None)
    assert info["prompts"] == {"query": "", "document": ""} and info["skiplist_words"] == []
    document = PASSAGES[0]
    expected = _base_token_embeddings(tiny_bert_dir, document, 256)
    assert torch.allclose(encode_documents(model, [document])[0], expected, atol=1e-5)  # no markers, [CLS]..[SEP]
    # Queries are cut at 32 tokens, not [MASK]-expanded: a short query has exactly its own tokens.
    long_query = "chest pain " * 40
    assert encode_queries(model, [long_query])[0].shape == (32, 32)
    assert torch.allclose(encode_queries(model, ["dry cough"])[0], _base_token_embeddings(tiny_bert_dir, "dry cough", 32),
                          atol=1e-5)


def test_pca_projection_keeps_the_full_dimension_ranking(minilm_path, sample_dataset_dir):
    """128-d PCA of MiniLM's token embeddings ranks like the 384-d original; a random 128-d head does not."""
    from colmed.colbert.multivector import _projection
    from colmed.data.datasets import load_dataset

    dataset = load_dataset(sample_dataset_dir)
    texts, queries = dataset.doc_texts(), list(dataset.queries.values())
    full = colbert_from_base(minilm_path, dim=384)
    pca = colbert_from_base(minilm_path, dim=128, pca_texts=texts)
    weight = pca[1].linear.weight.detach()
    assert weight.shape == (128, 384) and torch.allclose(weight @ weight.T, torch.eye(128), atol=1e-4)
    torch.manual_seed(0)
    random = type(full)(modules=[full[0], _projection(384, 128, torch.randn(128, 384) / 384 ** 0.5), full[1], full[2]])
    reference = ExhaustiveMaxSim(full, dataset.doc_ids(), texts).scores(queries)

    def correlation(model) -> float:  # mean over queries of the Pearson correlation of document scores
        scores = ExhaustiveMaxSim(model, dataset.doc_ids(), texts).scores(queries)
        a, b = scores - scores.mean(1, keepdim=True), reference - reference.mean(1, keepdim=True)
        return float(((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))).mean())

    pca_correlation, random_correlation = correlation(pca), correlation(random)
    assert pca_correlation > 0.99 and pca_correlation > random_correlation + 0.02


def test_start_point_errors_name_the_setting(tiny_bert_dir):
    with pytest.raises(InputError, match="field 'dim': dim 64 exceeds the base model's hidden size 32"):
        colbert_from_base(tiny_bert_dir, dim=64)
    with pytest.raises(InputError, match="field 'dim': .*PCA over sample passages; none were given"):
        colbert_from_base(tiny_bert_dir, dim=16)


def _triplets(path: Path, n: int = 24) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            pos, neg1, neg2 = PASSAGES[i % 6], PASSAGES[(i + 1) % 6], PASSAGES[(i + 3) % 6]
            f.write(json.dumps({"query_id": f"q{i}", "query": " ".join(pos.split()[:3]) + f" {i}",
                                "positive_id": f"p{i % 6}", "positive": pos,
                                "negative_ids": [f"p{(i + 1) % 6}", f"p{(i + 3) % 6}"], "negatives": [neg1, neg2],
                                "split": "dev" if i % 4 == 0 else "train"}) + "\n")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_bert_dir):
    """4 steps from the tiny BERT through the CLI: a 16-d PCA start, dev evaluation every 2 steps."""
    tmp = tmp_path_factory.mktemp("colbert-mve")
    triplets = _triplets(tmp / "triplets.jsonl")
    result = CliRunner().invoke(main, ["train", "colbert", "--triplets", str(triplets), "--base", tiny_bert_dir,
                                       "--out", str(tmp / "model"), "--max-steps", "4", "--batch-size", "4",
                                       "--learning-rate", "1e-3", "--dim", "16", "--max-query-length", "16",
                                       "--max-doc-length", "48", "--eval-steps", "2", "--quiet"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return {"tmp": tmp, "triplets": triplets, "out": tmp / "model", "output": result.output}


def test_training_saves_a_multi_vector_encoder_with_its_conventions_and_a_manifest(trained, tiny_bert_dir):
    out = trained["out"]
    assert checkpoint_kind(out) == "multivector" and not Path(str(out) + ".checkpoints").exists()
    model = load_colbert(out)
    assert (conventions(model)["dim"], conventions(model)["query_length"], conventions(model)["document_length"]) == \
        (16, 16, 48)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "colmed-colbert" and manifest["model_class"] == "MultiVectorEncoder"
    assert manifest["conventions"] == conventions(model) and manifest["global_steps"] == 4
    assert manifest["config"]["nway"] == 3 and manifest["data"]["examples"] == 18
    assert manifest["loss"]["negatives_per_query"] == 2 and manifest["loss"]["scale"] == 1.0
    assert set(manifest["metrics"]["base_dev"]) == {"dev_ndcg@10", "dev_mrr@10", "dev_recall@100"}
    assert [h["step"] for h in manifest["metrics"]["dev_history"]] == [2, 4]
    assert manifest["metrics"]["best_checkpoint"] in ("checkpoint-2", "checkpoint-4")
    assert "dev ndcg@10 untrained" in trained["output"]
    # It trained: the encoder moved away from the PCA start built from the same base.
    start = colbert_from_base(tiny_bert_dir, 16, query_length=16, document_length=48, pca_texts=PASSAGES)
    assert not torch.allclose(encode_documents(model, PASSAGES[:1])[0], encode_documents(start, PASSAGES[:1])[0])


def test_a_trained_colbert_continues_training_as_is(trained, tmp_path):
    from colmed.colbert.training import ColbertTrainingConfig, train_colbert

    config = ColbertTrainingConfig(base_model=str(trained["out"]), triplets=str(trained["triplets"]),
                                   out=str(tmp_path / "again"), max_steps=1, batch_size=4, dev=None)
    manifest = train_colbert(config, progress=False)
    assert manifest["start_conventions"]["dim"] == 16 and manifest["conventions"]["query_length"] == 16
    with pytest.raises(InputError, match="field 'dim'"):
        train_colbert(ColbertTrainingConfig(**{**config.to_dict(), "dim": 8, "out": str(tmp_path / "x")}),
                      progress=False)


def test_resume_continues_the_interrupted_run(trained, tmp_path, tiny_bert_dir):
    from colmed.colbert.training import ColbertTrainingConfig, train_colbert

    settings = dict(base_model=tiny_bert_dir, triplets=str(trained["triplets"]), out=str(tmp_path / "m"),
                    batch_size=4, dim=16, eval_steps=2, save_total_limit=5, keep_checkpoints=True)
    first = train_colbert(ColbertTrainingConfig(**settings, max_steps=2), progress=False)
    assert (tmp_path / "m.checkpoints" / "checkpoint-2").is_dir()
    shutil.rmtree(tmp_path / "m")  # as if the run had been interrupted before writing its model
    with pytest.raises(IndexExistsError, match="holds checkpoints of an earlier run; pass --resume"):
        train_colbert(ColbertTrainingConfig(**settings, max_steps=4), progress=False)
    with pytest.raises(InputError, match="cannot resume with changed settings.*learning_rate"):
        train_colbert(ColbertTrainingConfig(**{**settings, "learning_rate": 1e-3}, max_steps=4), resume=True,
                      progress=False)
    resumed = train_colbert(ColbertTrainingConfig(**settings, max_steps=4), resume=True, progress=False)
    assert resumed["global_steps"] == 4 and (tmp_path / "m.checkpoints" / "checkpoint-4").is_dir()
    # The untrained dev figures come from the first run (the resumed run never saw the untrained model).
    assert resumed["metrics"]["base_dev"] == first["metrics"]["base_dev"]
    assert [h["step"] for h in resumed["metrics"]["dev_history"]] == [2, 4]


def test_distillation_trains_on_teacher_scores(tmp_path, tiny_bert_dir):
    from colmed.colbert.training import ColbertTrainingConfig, train_colbert

    triplets = tmp_path / "t.jsonl"
    records = [json.loads(line) for line in _triplets(tmp_path / "plain.jsonl", 8).read_text().splitlines()]
    with open(triplets, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps({**rec, "split": "train", "teacher_scores": [4.0, -1.0, 0.5]}) + "\n")
    config = ColbertTrainingConfig(base_model=tiny_bert_dir, triplets=str(triplets), out=str(tmp_path / "kd"),
                                   batch_size=4, max_steps=2, dim=16, distill=True, dev=None, logging_steps=1,
                                   learning_rate=1e-3)
    manifest = train_colbert(config, progress=False)
    assert manifest["loss"]["name"] == "distill_kl" and not manifest["loss"]["in_batch_negatives"]
    assert manifest["global_steps"] == 2 and all(loss >= -1e-6 for _, loss in manifest["loss_curve"])
    start = colbert_from_base(tiny_bert_dir, 16, pca_texts=PASSAGES)
    assert not torch.allclose(encode_documents(load_colbert(tmp_path / "kd"), PASSAGES[:1])[0],
                              encode_documents(start, PASSAGES[:1])[0])
    # A record without teacher scores is named.
    with open(triplets, "a", encoding="utf-8") as f:
        f.write(json.dumps({**records[0], "query_id": "bare", "split": "train"}) + "\n")
    with pytest.raises(InputError, match=r"t\.jsonl: field 'teacher_scores': .*query 'bare' has 0"):
        train_colbert(ColbertTrainingConfig(**{**config.to_dict(), "out": str(tmp_path / "kd2")}), progress=False)


def test_one_encoding_pass_gives_the_same_projection_and_the_index_embeddings(minilm_path, sample_dataset_dir):
    """The PCA sample is encoded once at the base size: the projection is the one a separate PCA pass over
    the same passages fits (bitwise), and the kept sample, projected and re-normalised, is what the
    projecting model encodes (float rounding aside), so a PLAID build need not encode it again."""
    from colmed.colbert.multivector import pca_projection, untrained_colbert
    from colmed.data.datasets import load_dataset

    texts = load_dataset(sample_dataset_dir).doc_texts()
    built = untrained_colbert(minilm_path, 128, pca_texts=texts, keep_sample_embeddings=True)
    unprojected = colbert_from_base(minilm_path, dim=384)
    assert torch.equal(built.model[1].linear.weight.detach(), pca_projection(unprojected, texts, 128))
    again = encode_documents(built.model, texts)
    assert [e.shape for e in again] == [e.shape for e in built.sample_embeddings]
    assert max(float((a - b).abs().max()) for a, b in zip(again, built.sample_embeddings)) < 1e-5
    assert built.pca["passages"] == len(texts) and built.pca["tokens"] == sum(e.size(0) for e in again)
    assert built.pca["tokens_used"] == built.pca["tokens"] and built.pca["encoder_backend"]["backend"] == "torch"
    # without asking, nothing is kept (training starts from the model alone)
    assert untrained_colbert(minilm_path, 128, pca_texts=texts[:4]).sample_embeddings == []


def test_pca_subsamples_to_max_tokens_with_a_fixed_seed():
    from colmed.colbert.multivector import pca_from_embeddings

    torch.manual_seed(0)
    embeddings = [torch.nn.functional.normalize(torch.randn(n, 24), dim=-1) for n in (30, 50, 40)]
    weight, used = pca_from_embeddings(embeddings, 8, max_tokens=60)
    assert weight.shape == (8, 24) and torch.allclose(weight @ weight.T, torch.eye(8), atol=1e-5)
    assert (used["tokens"], used["tokens_used"], used["max_tokens"]) == (120, 60, 60)
    assert torch.equal(weight, pca_from_embeddings(embeddings, 8, max_tokens=60)[0])  # same subsample every time
    with pytest.raises(InputError, match="PCA to 8 dims needs at least 8 token embeddings"):
        pca_from_embeddings([torch.randn(5, 24)], 8)


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None or importlib.util.find_spec("nncf") is None,
                    reason="colmed[openvino] (openvino, nncf) is not installed")
def test_an_untrained_colbert_on_openvino_saves_torch_weights_and_shares_its_int8_export(tiny_bert_dir, tmp_path,
                                                                                        monkeypatch):
    """The backend runs from before the PCA (one pass, on the engine the index uses); the saved model has
    torch weights, and loading it on int8 again (as a PLAID search does) reuses the build's export."""
    from colmed.colbert.multivector import encoder_backend, untrained_colbert

    monkeypatch.setenv("COLMED_CACHE_DIR", str(tmp_path / "cache"))
    built = untrained_colbert(tiny_bert_dir, 16, pca_texts=PASSAGES * 4, backend="openvino", quantize="int8",
                              keep_sample_embeddings=True)
    assert built.pca["encoder_backend"]["quantization"] == "int8" == encoder_backend(built.model)["quantization"]
    built.save(tmp_path / "model")
    torch_model = load_colbert(tmp_path / "model")
    assert type(torch_model[0].model).__name__ == "BertModel"
    assert torch.equal(torch_model[1].linear.weight, built.model[1].linear.weight)
    reloaded = load_colbert(tmp_path / "model", backend="openvino", quantize="int8")
    assert encoder_backend(reloaded)["export_key"] == encoder_backend(built.model)["export_key"]
    assert len([p for p in (tmp_path / "cache" / "encoders").iterdir() if p.is_dir()]) == 1
    again = encode_documents(reloaded, PASSAGES)
    assert max(float((a - b).abs().max()) for a, b in zip(again, built.sample_embeddings)) < 1e-4
