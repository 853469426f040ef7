"""Encoder backends (issue #19): OpenVINO fp32 and int8 for dense and ColBERT encoders, exported once into
colmed's cache, recorded in the index manifest and reused by searches.

Tests that run OpenVINO skip with a reason where ``colmed[openvino]`` (openvino, nncf) is not installed; the
missing-extra message is tested everywhere.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from colmed.bi_encoder import encoder as encoder_module
from colmed.bi_encoder.encoder import DenseEncoder, calibration_texts, check_backend
from colmed.core.errors import ColmedError, InputError

HAS_OPENVINO = importlib.util.find_spec("openvino") is not None and importlib.util.find_spec("nncf") is not None
needs_openvino = pytest.mark.skipif(not HAS_OPENVINO, reason="colmed[openvino] (openvino, nncf) is not installed")


@pytest.fixture
def encoder_cache(tmp_path, monkeypatch):
    """A fresh encoder cache for the test (``COLMED_CACHE_DIR``), so every export is the test's own."""
    monkeypatch.setenv("COLMED_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "encoders"


def test_a_missing_extra_is_one_line_naming_it(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("openvino", "nncf")
                        else real(name, *a))
    with pytest.raises(ColmedError) as e:
        check_backend("openvino", "int8")
    assert str(e.value) == "the openvino encoder backend needs openvino and nncf: pip install 'colmed[openvino]'"


def test_bad_backend_choices_are_refused_naming_the_field():
    with pytest.raises(InputError, match="field 'quantize': int8 runs on the openvino backend"):
        check_backend("torch", "int8")
    with pytest.raises(InputError, match="field 'backend': unknown encoder backend 'tensorrt'"):
        check_backend("tensorrt")
    with pytest.raises(InputError, match="optimum-onnx"):
        check_backend("onnx")
    assert check_backend(None, "none") == ("torch", None)


def test_cli_missing_extra_exits_2_before_reading_the_corpus(tmp_path, monkeypatch, sample_dataset_dir):
    from click.testing import CliRunner

    from colmed.cli import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    out = tmp_path / "idx"
    result = CliRunner().invoke(main, ["index", "--retriever", "dense", "--backend", "openvino", "--dataset",
                                       str(sample_dataset_dir), "--model", "some/model", "--out", str(out)])
    assert result.exit_code == 2
    assert "pip install 'colmed[openvino]'" in result.output and not out.exists()


@needs_openvino
def test_openvino_fp32_embeddings_equal_torch(minilm_path, encoder_cache):
    passages, queries = calibration_texts()
    torch_enc = DenseEncoder(minilm_path, device="cpu")
    ov_enc = DenseEncoder(minilm_path, backend="openvino")
    assert ov_enc.backend["backend"] == "openvino" and ov_enc.backend["quantization"] is None
    # documents of different lengths in one batch: padding and dynamic shapes must not change anything
    assert np.abs(ov_enc.encode_documents(passages, show_progress=False)
                  - torch_enc.encode_documents(passages, show_progress=False)).max() < 1e-5
    assert np.abs(ov_enc.encode_queries(queries) - torch_enc.encode_queries(queries)).max() < 1e-5


@needs_openvino
def test_bf16_computes_the_fp32_export_in_bfloat16_where_the_cpu_can(minilm_path, encoder_cache):
    passages, _ = calibration_texts()
    fp32 = DenseEncoder(minilm_path, backend="openvino")
    bf16 = DenseEncoder(minilm_path, backend="openvino", quantize="bf16")
    assert bf16.backend["export_key"] == fp32.backend["export_key"]  # one export serves both
    assert len([p for p in encoder_cache.iterdir() if p.is_dir()]) == 1
    assert fp32.backend["inference_precision"] == "f32"
    cpu_flags = open("/proc/cpuinfo").read() if Path("/proc/cpuinfo").is_file() else ""
    if "avx512_bf16" in cpu_flags or "amx_bf16" in cpu_flags:
        assert bf16.backend["inference_precision"] == "bf16"
    cosines = (bf16.encode_documents(passages, show_progress=False)
               * fp32.encode_documents(passages, show_progress=False)).sum(1)
    assert cosines.min() > 0.999


@needs_openvino
def test_export_is_cached_once_and_the_model_folder_is_untouched(minilm_path, encoder_cache, monkeypatch):
    from colmed.core.provenance import hash_directory

    before = hash_directory(minilm_path)
    first = DenseEncoder(minilm_path, backend="openvino")
    exports = sorted(p.name for p in encoder_cache.iterdir() if p.is_dir())
    assert len(exports) == 1 and exports[0].endswith(first.backend["export_key"])
    record = json.loads((encoder_cache / exports[0] / "export.json").read_text())
    assert record["weights"] == first.backend["weights_sha256"] and record["quantization"] is None

    def no_export(*args, **kwargs):
        raise AssertionError("exported again although the cache holds this model")

    monkeypatch.setattr(encoder_module, "_export", no_export)
    second = DenseEncoder(minilm_path, backend="openvino")
    assert second.backend["export_key"] == first.backend["export_key"]
    np.testing.assert_array_equal(second.encode_queries(["statin myopathy"]), first.encode_queries(["statin myopathy"]))
    assert hash_directory(minilm_path) == before  # nothing written into the model's own folder


@needs_openvino
def test_retrained_weights_get_their_own_export(tiny_st_model_dir, tmp_path, encoder_cache):
    import shutil

    import torch
    from sentence_transformers import SentenceTransformer

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_st_model_dir, model_dir)
    first = DenseEncoder(str(model_dir), backend="openvino").backend["export_key"]
    retrained = SentenceTransformer(str(model_dir), device="cpu")
    with torch.no_grad():
        next(retrained[0].model.parameters()).add_(0.01)
    retrained.save(str(model_dir))  # retrained in place: same path, new weights
    assert DenseEncoder(str(model_dir), backend="openvino").backend["export_key"] != first


@needs_openvino
@pytest.mark.slow  # a real model's int8 export: about a minute on 2 idle cores
def test_int8_ranks_the_sample_queries_like_torch(minilm_path, encoder_cache, sample_dataset_dir):
    from colmed.data.datasets import load_dataset
    from colmed.eval.evaluation import evaluate_run
    from colmed.indexes.dense import build_dense_in_memory

    ds = load_dataset(sample_dataset_dir)
    scores = {}
    for backend, quantize in (("torch", None), ("openvino", "int8")):
        index, manifest = build_dense_in_memory(ds, model=minilm_path, backend=backend, quantize=quantize)
        assert manifest.settings["encoder_backend"]["quantization"] == quantize
        scores[quantize] = evaluate_run(ds, index.search(ds.queries, k=10), metrics=["ndcg@10"])["ndcg@10"]
    # the calibration set is this sample, so this checks the quantised model, not its generalisation
    # (bench/encode_speed.py measures that on NFCorpus)
    assert scores["int8"] == pytest.approx(scores[None], abs=0.02), scores


@needs_openvino
def test_searches_reuse_the_index_backend_unless_told_and_record_it(tiny_st_model_dir, encoder_cache, tmp_path,
                                                                     sample_dataset_dir):
    from click.testing import CliRunner

    from colmed.cli import main
    from colmed.indexes.base import IndexManifest, load_index

    idx = tmp_path / "idx"
    runner = CliRunner()
    result = runner.invoke(main, ["index", "--retriever", "dense", "--backend", "openvino", "--quantize", "int8",
                                  "--dataset", str(sample_dataset_dir), "--model", tiny_st_model_dir,
                                  "--out", str(idx)],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    recorded = IndexManifest.read(idx).settings["encoder_backend"]
    assert (recorded["backend"], recorded["quantization"]) == ("openvino", "int8") and recorded["export_key"]
    assert load_index(idx).encoder.backend["export_key"] == recorded["export_key"]  # documents' engine by default
    run = tmp_path / "fp32-queries.trec"
    result = runner.invoke(main, ["search", "--index", str(idx), "--queries", str(sample_dataset_dir), "--out",
                                  str(run), "--backend", "torch"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    sidecar = json.loads((tmp_path / "fp32-queries.trec.json").read_text())
    assert sidecar["index"]["settings"]["encoder_backend"]["quantization"] == "int8"
    assert sidecar["query_encoder"] == {"backend": "torch", "quantization": None}


@needs_openvino
def test_colbert_multivector_encoder_on_openvino_equals_torch(tiny_bert_dir, tmp_path, encoder_cache):
    from colmed.colbert.multivector import (colbert_from_base, encode_documents, encode_queries, encoder_backend,
                                            load_colbert)

    passages, queries = calibration_texts()
    colbert_dir = tmp_path / "colbert"
    colbert_from_base(tiny_bert_dir, dim=16, pca_texts=passages, device="cpu").save(str(colbert_dir))
    torch_model = load_colbert(colbert_dir, device="cpu")
    ov_model = load_colbert(colbert_dir, backend="openvino")
    assert encoder_backend(torch_model) == {"backend": "torch", "quantization": None}
    assert encoder_backend(ov_model)["backend"] == "openvino"
    int8_model = load_colbert(colbert_dir, backend="openvino", quantize="int8")  # calibrated via encode_document/query
    assert encoder_backend(int8_model)["quantization"] == "int8"
    for encode, texts in ((encode_documents, passages), (encode_queries, queries)):
        for ours, int8, theirs in zip(encode(ov_model, texts), encode(int8_model, texts), encode(torch_model, texts)):
            assert ours.shape == int8.shape == theirs.shape and (ours - theirs).abs().max() < 1e-5
            assert (int8 * theirs).sum(-1).mean() > 0.95  # unit token vectors: mean cosine to torch's


@needs_openvino
def test_benchmark_backend_joins_each_dense_retrievers_identity():
    from colmed.benchmark.spec import BenchmarkConfig

    retrievers = ["bm25", "dense:some/model"]
    torch_specs = BenchmarkConfig(retrievers=retrievers, out="b", backend="torch").retriever_specs()
    int8_specs = BenchmarkConfig(retrievers=retrievers, out="b", backend="openvino",
                                 quantize="int8").retriever_specs()
    assert torch_specs[1].options == {}  # torch is the default: its cached runs stay valid
    assert int8_specs[1].options == {"backend": "openvino", "quantize": "int8"} and int8_specs[0].options == {}
    assert int8_specs[1].identity() != torch_specs[1].identity()  # so the cache never mixes their runs
    with pytest.raises(InputError, match="quantize"):
        BenchmarkConfig(retrievers=retrievers, out="b", quantize="int8").retriever_specs()
