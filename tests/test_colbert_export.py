"""``colmed export colbert``: a MultiVectorEncoder written as a Stanford ``HF_ColBERT`` checkpoint.

The exact case is a ColBERT trained by ``colmed train colbert`` from a tiny Stanford checkpoint (so it keeps
Stanford's [unused0]/[unused1] markers, [MASK] query expansion and punctuation skiplist). colbert-ai's own
``Checkpoint`` must encode queries and documents as the model does (max |difference| < 1e-4 on CPU),
indexing the export with colbert-ai's encoder must give the same PLAID search results as indexing the model
with colmed's encoder, and sentence-transformers must load the export back to the same encodings.
An untrained ColBERT built from a plain BERT (no markers, no expansion) is refused unless asked for.
Marked ``colbert``: colbert-ai's C++ extensions are compiled once into the cached TORCH_EXTENSIONS_DIR.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from colmed.cli import main
from colmed.colbert.multivector import (checkpoint_kind, colbert_from_base, conventions,
                                        encode_documents, encode_queries, load_colbert)
from colmed.colbert.export import export_stanford
from colmed.core.errors import IndexExistsError, InputError

os.environ["HF_HUB_OFFLINE"] = "1"
pytestmark = pytest.mark.colbert

TOLERANCE = 1e-4
PASSAGES = ["aspirin lowers fever and relieves mild pain", "insulin treats type 1 diabetes",
            "lisinopril can cause a dry cough", "statins lower LDL cholesterol",
            "metformin is first-line therapy for type 2 diabetes", "ibuprofen is an anti-inflammatory drug"]
QUERIES = ["what lowers fever?", "dry cough after starting lisinopril", "first-line therapy, type 2 diabetes",
           " ".join(["a query longer than thirty two tokens about statins and cholesterol"] * 4)]


def _invoke(args: list[str]):
    return CliRunner().invoke(main, args, catch_exceptions=False)


def _triplets(path: Path, n: int = 16) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            pos, neg = PASSAGES[i % 6], PASSAGES[(i + 1) % 6]
            f.write(json.dumps({"query_id": f"q{i}", "query": " ".join(pos.split()[:3]) + f" {i}",
                                "positive_id": f"p{i % 6}", "positive": pos, "negative_ids": [f"p{(i + 1) % 6}"],
                                "negatives": [neg], "split": "train"}) + "\n")
    return path


def _max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    assert [x.shape for x in a] == [y.shape for y in b]
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def stanford_base(tmp_path_factory, tiny_bert_dir) -> Path:
    """What colbert-ai training writes: an HF_ColBERT (tiny BERT + 16-d linear) and artifact.metadata."""
    from colmed.colbert.adapter import apply_compat

    apply_compat()
    import colbert.modeling.hf_colbert as hf_colbert
    from colbert.infra import ColBERTConfig
    from transformers import AutoTokenizer

    config = ColBERTConfig(dim=16, doc_maxlen=64, query_maxlen=32)
    out = tmp_path_factory.mktemp("stanford") / "ckpt"
    torch.manual_seed(0)
    model = hf_colbert.class_factory(tiny_bert_dir).from_pretrained(tiny_bert_dir, colbert_config=config)
    model.save_pretrained(str(out))
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(str(out))
    config.save_for_checkpoint(str(out))
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory, stanford_base) -> Path:
    """``colmed train colbert`` from the Stanford checkpoint: a MultiVectorEncoder with Stanford's conventions."""
    tmp = tmp_path_factory.mktemp("trained")
    result = _invoke(["train", "colbert", "--triplets", str(_triplets(tmp / "triplets.jsonl")),
                      "--base", str(stanford_base), "--out", str(tmp / "model"), "--max-steps", "2",
                      "--batch-size", "4", "--learning-rate", "1e-3", "--dev", "none", "--quiet"])
    assert result.exit_code == 0, result.output
    return tmp / "model"


@pytest.fixture(scope="module")
def exported(tmp_path_factory, trained) -> dict:
    out = tmp_path_factory.mktemp("export") / "stanford"
    result = _invoke(["export", "colbert", "--model", str(trained), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return {"out": out, "output": result.output}


def test_export_is_a_stanford_checkpoint_that_colbert_ai_encodes_as_the_model_does(trained, exported, stanford_base,
                                                                                   tmp_path):
    from colmed.colbert.adapter import checkpoint_encodings

    out = exported["out"]
    assert checkpoint_kind(trained) == "multivector" and checkpoint_kind(out) == "stanford"
    assert {"config.json", "model.safetensors", "artifact.metadata", "manifest.json"} <= {p.name for p in out.iterdir()}
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no scratch or encoder left inside
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as weights:
        keys = set(weights.keys())
        assert weights.get_tensor("linear.weight").shape == (16, 32)
    assert "linear.bias" not in keys and all(k == "linear.weight" or k.startswith("bert.") for k in keys)
    metadata = json.loads((out / "artifact.metadata").read_text())
    assert (metadata["dim"], metadata["query_maxlen"], metadata["doc_maxlen"], metadata["similarity"]) == \
        (16, 32, 64, "cosine")
    assert (metadata["query_token_id"], metadata["doc_token_id"]) == ("[unused0]", "[unused1]")
    assert metadata["mask_punctuation"] is True and metadata["attend_to_mask_tokens"] is False

    model = load_colbert(trained)
    # Training moved the weights: the export carries the trained model, not the checkpoint it started from.
    assert not torch.equal(encode_documents(model, PASSAGES[:1])[0], encode_documents(load_colbert(stanford_base),
                                                                                      PASSAGES[:1])[0])
    queries, documents = checkpoint_encodings(out, QUERIES, PASSAGES, scratch=tmp_path / "scratch")
    assert all(q.shape == (32, 16) for q in queries)  # [Q] marker, [MASK] expansion to 32, long query truncated
    assert _max_diff(queries, encode_queries(model, QUERIES)) < TOLERANCE
    assert _max_diff(documents, encode_documents(model, PASSAGES)) < TOLERANCE

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "colbert-checkpoint" and manifest["convention_mismatches"] == []
    assert manifest["conventions"] == conventions(model) and manifest["source_model"]["kind"] == "colmed-colbert"
    check = manifest["colbert_ai_check"]
    assert check["exact"] and check["same_token_counts"] and check["max_abs_diff"] < TOLERANCE
    assert str(trained) in next(iter(manifest["inputs"])) and "colbert-ai" in manifest["versions"]
    assert f"wrote {out}" in exported["output"] and "as the model does" in exported["output"]


def test_sentence_transformers_loads_the_export_back_to_the_same_encodings(trained, exported):
    model, back = load_colbert(trained), load_colbert(exported["out"])
    assert conventions(back) == conventions(model)
    assert _max_diff(encode_queries(back, QUERIES), encode_queries(model, QUERIES)) < TOLERANCE
    assert _max_diff(encode_documents(back, PASSAGES), encode_documents(model, PASSAGES)) < TOLERANCE


def test_plaid_on_the_export_matches_plaid_on_the_model(trained, exported, sample_dataset_dir, tmp_path):
    """colbert-ai encoding the export and colmed encoding the model build the same index (same embeddings, same
    k-means seed and thread count), so every query gets the same top-10 with the same scores."""
    from colmed.data.datasets import load_dataset
    from colmed.indexes.base import build_index, load_index

    dataset = load_dataset(sample_dataset_dir)
    options = dict(nbits=2, batch_size=16, recall_sample=0, doc_maxlen=64, kmeans_threads=1)
    stanford = build_index("colbert", dataset, tmp_path / "stanford", model=str(exported["out"]), **options)
    ours = build_index("colbert", dataset, tmp_path / "ours", model=str(trained), **options)
    assert (stanford.settings["encoder"], ours.settings["encoder"]) == ("colbert-ai", "multivector")
    assert stanford.stats["num_embeddings"] == ours.stats["num_embeddings"]
    queries = dict(dataset.queries)
    a, b = load_index(tmp_path / "stanford").search(queries, k=10), load_index(tmp_path / "ours").search(queries, k=10)
    for qid in queries:
        assert list(a[qid]) == list(b[qid]), qid
        assert max(abs(a[qid][d] - b[qid][d]) for d in a[qid]) < 1e-3


@pytest.fixture(scope="module")
def untrained(tmp_path_factory, tiny_bert_dir) -> Path:
    """An untrained ColBERT from a plain BERT: no markers, no [MASK] expansion, no projection (32-d)."""
    out = tmp_path_factory.mktemp("untrained") / "model"
    colbert_from_base(tiny_bert_dir, document_length=64).save(str(out))
    return out


def test_a_model_without_stanford_conventions_is_refused_with_one_line_and_nothing_written(untrained, tmp_path):
    out = tmp_path / "stanford"
    result = CliRunner().invoke(main, ["export", "colbert", "--model", str(untrained), "--out", str(out)])
    assert result.exit_code == 2 and result.stdout == ""
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    line = errors[0]
    assert all(name in line for name in ("query marker", "document marker", "query expansion", "document skiplist"))
    assert "--allow-convention-mismatch" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_allow_convention_mismatch_exports_and_records_every_difference(untrained, tmp_path):
    from colmed.colbert.adapter import checkpoint_encodings

    out = tmp_path / "stanford"
    result = _invoke(["export", "colbert", "--model", str(untrained), "--out", str(out),
                      "--allow-convention-mismatch"])
    assert result.exit_code == 0, result.output
    assert "warning:" in result.stderr and "does not encode as" in result.stderr and f"wrote {out}" in result.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    differences = {d["convention"]: d for d in manifest["convention_mismatches"]}
    assert set(differences) == {"query marker", "document marker", "query expansion", "document skiplist"}
    assert differences["query marker"] == {"convention": "query marker", "model": "", "export": "[unused0] after [CLS]"}
    assert differences["query expansion"]["model"] is None
    # The identity projection: no Dense in the model, a 32 x 32 identity linear in the export.
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as weights:
        assert torch.equal(weights.get_tensor("linear.weight"), torch.eye(32))
    metadata = json.loads((out / "artifact.metadata").read_text())
    assert (metadata["dim"], metadata["query_maxlen"], metadata["doc_maxlen"], metadata["mask_punctuation"]) == \
        (32, 32, 64, True)
    check = manifest["colbert_ai_check"]
    assert check["exact"] is False and check["same_token_counts"] is False  # queries now have 32 tokens
    queries, _ = checkpoint_encodings(out, QUERIES[:1], PASSAGES[:1], scratch=tmp_path / "scratch")
    assert queries[0].shape == (32, 32)


def test_overwrite_replaces_only_a_colmed_model_folder(trained, exported, tmp_path):
    out = exported["out"]
    with pytest.raises(IndexExistsError, match="already exists; pass --overwrite"):
        export_stanford(trained, out)
    (out / "stale.txt").write_text("from the previous export")
    result = _invoke(["export", "colbert", "--model", str(trained), "--out", str(out), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert not (out / "stale.txt").exists() and checkpoint_kind(out) == "stanford"
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no lock, temp or old folder left
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("keep")
    result = CliRunner().invoke(main, ["export", "colbert", "--model", str(trained), "--out", str(foreign),
                                       "--overwrite"])
    assert result.exit_code == 2 and "colmed did not write" in result.output
    assert (foreign / "mine.txt").read_text() == "keep"
    # The model itself is never an output.
    with pytest.raises(InputError, match="is the input"):
        export_stanford(trained, trained, overwrite=True)


def test_inputs_that_are_not_colbert_models_are_refused(stanford_base, tiny_bert_dir, tmp_path):
    with pytest.raises(InputError, match="already a Stanford ColBERT"):
        export_stanford(stanford_base, tmp_path / "a")
    with pytest.raises(InputError, match="not a ColBERT model folder"):
        export_stanford(tiny_bert_dir, tmp_path / "b")
    assert list(tmp_path.iterdir()) == []
