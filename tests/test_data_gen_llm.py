"""data_gen LLM path: prompt templates, JSON parsing, retries and rejects with a scripted backend, the
``openai`` backend against a real HTTP server on 127.0.0.1, and the ``transformers`` backend with a
tiny randomly initialised causal LM."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from colmed.core.errors import InputError
from colmed.data_gen.backends.base import Completion
from colmed.data_gen.config import GenerateConfig
from colmed.data_gen.generators.llm import LLMQueryGenerator
from colmed.data_gen.notes import Passage
from colmed.data_gen.parsing import LLMOutputError, parse_queries
from colmed.data_gen.pipeline import TripletPipeline
from colmed.data_gen.prompts import load_prompt_template
from colmed.data.triplets import read_triplets

os.environ["HF_HUB_OFFLINE"] = "1"

TEXT = ("The patient was started on metformin 500 mg twice daily for type 2 diabetes. "
        "Repeat HbA1c is planned in three months.")


def reply(query="metformin starting dose", evidence="metformin 500 mg twice daily", relevance=5, qtype="keyword"):
    return json.dumps({"queries": [{"type": qtype, "query": query, "evidence": evidence, "relevance": relevance}]})


# ------------------------------------------------------------------ parsing

def test_parser_accepts_fenced_and_chatty_json():
    items, bad = parse_queries("Sure! Here you go:\n```json\n" + reply() + "\n```\nHope it helps {", ["keyword"])
    assert items == [{"type": "keyword", "query": "metformin starting dose",
                      "evidence": "metformin 500 mg twice daily", "relevance": 5.0}] and bad == 0


@pytest.mark.parametrize("raw, why", [
    ("", "empty"), ("no json here", "no JSON"), ('{"answer": 1}', "no JSON"),
    (reply(relevance=9), "relevance"), (reply(qtype="poem"), "type"), (reply(query="  "), "query"),
    ('{"queries": [{"type": "keyword", "query": "x", "relevance": 3}]}', "evidence"),
])
def test_parser_rejects_schema_violations(raw, why):
    with pytest.raises(LLMOutputError, match=why):
        parse_queries(raw, ["keyword", "question"])


def test_parser_keeps_complete_items_of_a_truncated_reply():
    item = json.loads(reply())["queries"][0]
    cut = '{"queries": [' + json.dumps(item) + ', {"type": "keyword", "query": "hba1c'
    items, bad = parse_queries(cut, ["keyword"])
    assert [i["query"] for i in items] == ["metformin starting dose"] and bad == 0
    with pytest.raises(LLMOutputError):
        parse_queries('{"queries": [{"type": "keyword", "query": "hba1c', ["keyword"])


def test_parser_keeps_valid_items_and_counts_invalid_ones():
    raw = json.dumps({"queries": [json.loads(reply())["queries"][0], {"type": "keyword", "query": ""}]})
    items, bad = parse_queries(raw, ["keyword"])
    assert len(items) == 1 and bad == 1


def test_prompt_template_yaml(tmp_path):
    t = load_prompt_template()
    msgs = t.messages(TEXT, ["keyword", "question"])
    assert msgs[0]["role"] == "system" and TEXT in msgs[1]["content"] and "{passage}" not in msgs[1]["content"]
    assert '{"queries": [' in msgs[1]["content"]  # literal JSON braces survive rendering
    schema = t.json_schema(2)
    assert schema["properties"]["queries"]["minItems"] == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nuser: no placeholder\nquery_types: [keyword]\n")
    with pytest.raises(InputError, match="passage"):
        load_prompt_template(bad)



def test_lean_template_needs_no_evidence_but_the_default_does():
    lean = load_prompt_template("medembed-lean")
    assert lean.name == "medembed-lean" and not lean.evidence and list(lean.query_types) == ["keyword", "question",
                                                                                            "treatment"]
    assert "evidence" not in lean.json_schema(1)["properties"]["queries"]["items"]["required"]
    assert "evidence" in load_prompt_template().json_schema(1)["properties"]["queries"]["items"]["required"]
    raw = '{"queries": [{"type": "keyword", "query": "metformin dose", "relevance": 4}]}'
    with pytest.raises(LLMOutputError, match="evidence"):
        parse_queries(raw, ["keyword"])
    items, bad = parse_queries(raw, ["keyword"], require_evidence=False)
    assert items == [{"type": "keyword", "query": "metformin dose", "evidence": "", "relevance": 4.0}] and bad == 0
    # through the generator: the lean template's replies are kept, with no evidence to filter on
    gen = LLMQueryGenerator(ScriptedBackend([raw]), lean, 1, max_retries=0)
    result = gen.generate([Passage("a#0", "a", TEXT)])
    assert [(q.query, q.evidence) for q in result.queries] == [("metformin dose", "")] and not result.rejects

# ------------------------------------------------------------------ retries and rejects (scripted backend)

class ScriptedBackend:
    """Replays canned replies in order (one per request), as an LLM server would answer."""

    name, supports_prefill = "scripted", False

    def __init__(self, replies):
        self.replies = list(replies)
        self.calls = 0

    def generate(self, conversations, **kw):
        out = []
        for _ in conversations:
            self.calls += 1
            r = self.replies.pop(0)
            out.append(r if isinstance(r, Completion) else Completion(r, prompt_tokens=10, completion_tokens=5))
        return out


def test_malformed_output_is_retried_then_rejected_never_raised():
    passages = [Passage("a#0", "a", TEXT), Passage("b#0", "b", TEXT)]
    backend = ScriptedBackend([
        "not json", reply(),                        # attempt 1: a malformed, b fine
        Completion(None, error="HTTP 500"),         # attempt 2: a fails at the transport
        '{"queries": []}',                          # attempt 3: a still has no valid item -> reject
    ])
    result = LLMQueryGenerator(backend, load_prompt_template(), 1, max_retries=2).generate(passages)
    assert [q.note_id for q in result.queries] == ["b"]
    assert result.counts["retries"] == 2 and backend.calls == 4
    assert result.rejects == [{"kind": "llm_output", "note_id": "a", "passage_id": "a#0", "raw": '{"queries": []}',
                               "error": "no valid item (no JSON object with a 'queries' list)", "attempts": 3}]
    assert result.prompt_tokens == 30


def test_backend_exception_becomes_rejects():
    class Broken:
        name, supports_prefill = "broken", False

        def generate(self, conversations, **kw):
            raise RuntimeError("CUDA out of memory")

    result = LLMQueryGenerator(Broken(), load_prompt_template(), 1, max_retries=1).generate([Passage("a#0", "a", TEXT)])
    assert not result.queries and "CUDA out of memory" in result.rejects[0]["error"]


def test_pipeline_filters_llm_queries_and_writes_rejects(tmp_path):
    notes = tmp_path / "notes.jsonl"
    notes.write_text("".join(json.dumps({"id": f"n{i}", "text": TEXT + f" Visit number {i} was uneventful."}) + "\n"
                             for i in range(4)))
    backend = ScriptedBackend([
        reply(),                                                  # kept
        reply(query="hba1c target value", relevance=2),                       # relevance below 3: filtered
        reply(evidence="the patient enjoys skiing"),              # evidence not in note: filtered
        "garbage", "garbage", "garbage",                          # rejected after 2 retries
    ])
    cfg = GenerateConfig(notes=str(notes), out=str(tmp_path / "out"), generator="llm", model="scripted",
                         min_chunk_words=5, miner="bm25", num_negatives=2, range_max=3, dedup=True, progress=False,
                         batch_notes=4, relative_margin=None)
    m = TripletPipeline(cfg, backend=backend).run()
    assert m["counts"]["filters"]["relevance"] == 1 and m["counts"]["filters"]["evidence_not_in_note"] == 1
    assert m["counts"]["generation"]["rejected_outputs"] == 1 and m["counts"]["records"]["total"] == 1
    rec = next(read_triplets(tmp_path / "out"))
    assert (rec.query, rec.query_type, rec.relevance, rec.generator) == ("metformin starting dose", "keyword", 5.0,
                                                                         "llm:scripted")
    assert rec.positive_id == "n0#0" and rec.negative_ids and "n0#0" not in rec.negative_ids
    rejects = [json.loads(line) for line in (tmp_path / "out" / "rejects.jsonl").read_text().splitlines()]
    filtered = [r for r in rejects if r["kind"] == "filtered_query"]
    assert sorted(r["reason"] for r in filtered) == ["evidence_not_in_note", "relevance"]
    assert {r["query"] for r in filtered} == {"hba1c target value", "metformin starting dose"}
    rejects = [r for r in rejects if r["kind"] != "filtered_query"]
    assert rejects == [{"kind": "llm_output", "note_id": "n3", "passage_id": "n3#0", "raw": "garbage",
                        "error": "no JSON object with a 'queries' list", "attempts": 3}]


# ------------------------------------------------------------------ openai backend against a local server

def test_openai_backend_retries_http_errors_and_sends_schema(monkeypatch, scripted_server):
    from colmed.data_gen.backends.openai_backend import OpenAIBackend

    with scripted_server(fail_first=True) as url:
        backend = OpenAIBackend(url, "served-model", api_key="sk-test", concurrency=2, backoff=0.01)
        t = load_prompt_template()
        convs = [t.messages(TEXT + f" Note {i} is here today.", ["keyword"]) for i in range(3)]
        out = backend.generate(convs, json_schema=t.json_schema(1), max_new_tokens=50)
        assert all(c.error is None and parse_queries(c.text, ["keyword"]) for c in out)
        assert out[0].prompt_tokens == 100 and out[0].completion_tokens == 20
    from colmed.data_gen.backends.openai_backend import EndpointError

    dead = OpenAIBackend(f"http://127.0.0.1:{_closed_port()}/v1", "m", max_attempts=2, backoff=0.01, timeout=1)
    with pytest.raises(EndpointError, match="gave up after 2 attempts"):
        dead.generate([[{"role": "user", "content": "hi"}]])


def _cli(*args, env=None):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "colmed.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}, timeout=120)


def _closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_endpoint_fails_the_run_and_leaves_it_resumable(tmp_path, scripted_server):
    """generate against a closed port exits 2 after its retries; no finished output; once the endpoint is up
    the same settings resume and finish."""
    notes = tmp_path / "notes.jsonl"
    notes.write_text("".join(json.dumps({"id": f"n{i}", "text": TEXT + f" Visit number {i} was for a check of "
                                                                       f"condition {i} in the left knee."}) + "\n"
                             for i in range(4)))
    out = tmp_path / "out"
    common = ["generate", "--notes", str(notes), "--out", str(out), "--generator", "llm", "--backend", "openai",
              "--model", "served", "--chunk-words", "60", "--negatives", "2", "--range-max", "4", "--no-progress",
              "--batch-notes", "2"]
    r = _cli(*common, "--base-url", f"http://127.0.0.1:{_closed_port()}/v1")
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "gave up after" in lines[0] and "rerun the same command to resume" in lines[0]
    assert not out.exists() and (tmp_path / "out.partial" / "state.json").is_file()
    with scripted_server() as url:
        # the endpoint is not a generation setting that changes the parts' layout: a new URL resumes
        ok = _cli(*common, "--base-url", url)
    assert ok.returncode == 0, ok.stderr
    counts = json.loads((out / "manifest.json").read_text())["counts"]
    assert counts["generation"]["notes"] == 4 and counts["generation"]["generated"] == 4


@pytest.mark.parametrize("base_url, says", [
    (None, "field 'base_url': the openai backend needs --base-url"),
    ("http://user:hunter2@127.0.0.1:8000/v1", "holds a credential (user:password@)"),
    ("http://127.0.0.1:8000/v1?api-key=hunter2", "holds a credential (query parameter 'api-key')"),
])
def test_openai_base_url_is_required_and_never_holds_credentials(tmp_path, base_url, says):
    notes = tmp_path / "notes.jsonl"
    notes.write_text(json.dumps({"id": "n", "text": TEXT}) + "\n")
    args = ["generate", "--notes", str(notes), "--out", str(tmp_path / "out"), "--generator", "llm",
            "--backend", "openai", "--model", "served", "--no-progress"]
    r = _cli(*args, *(["--base-url", base_url] if base_url else []), env={"OPENAI_API_KEY": "sk-set"})
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and says in r.stderr, r.stderr
    assert "hunter2" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.jsonl"]


def test_openai_backend_end_to_end_through_the_pipeline(tmp_path, scripted_server):
    notes = tmp_path / "notes.jsonl"
    notes.write_text("".join(json.dumps({"id": f"n{i}", "text": TEXT + f" Visit number {i} was for a check of "
                                                                       f"condition {i} in the left knee."}) + "\n"
                             for i in range(5)))
    with scripted_server(malformed_first=True) as url:
        cfg = GenerateConfig(notes=str(notes), out=str(tmp_path / "out"), generator="llm", backend="openai",
                             base_url=url, model="served", min_chunk_words=5, num_negatives=2, range_max=4,
                             progress=False, relative_margin=None, dedup=False)
        m = TripletPipeline(cfg).run()
    assert m["counts"]["records"]["total"] == 5 and m["counts"]["generation"]["generator"]["retries"] == 5
    assert m["throughput"]["prompt_tokens"] == 1000  # 5 malformed + 5 good replies, 100 prompt tokens each
    for r in read_triplets(tmp_path / "out"):
        assert r.evidence in r.positive and r.generator == "llm:openai"


# ------------------------------------------------------------------ transformers backend, tiny random causal LM

@pytest.fixture(scope="module")
def tiny_causal_lm(tmp_path_factory, minilm_path):
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-lm")
    tok = AutoTokenizer.from_pretrained(minilm_path)
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                                         max_position_embeddings=1024, pad_token_id=tok.pad_token_id,
                                         eos_token_id=tok.sep_token_id, bos_token_id=tok.cls_token_id))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def test_transformers_backend_generates_reproducibly(tiny_causal_lm):
    from colmed.data_gen.backends.transformers_backend import TransformersBackend

    backend = TransformersBackend(tiny_causal_lm, device="cpu", batch_size=2)
    convs = [[{"role": "user", "content": "short"}], [{"role": "user", "content": TEXT}],
             [{"role": "user", "content": "a medium length prompt here"}]]
    a = backend.generate(convs, max_new_tokens=6, temperature=0.7, seed=1, assistant_prefix='{"queries": [')
    b = backend.generate(convs, max_new_tokens=6, temperature=0.7, seed=1, assistant_prefix='{"queries": [')
    assert [c.text for c in a] == [c.text for c in b]
    assert all(c.text.startswith('{"queries": [') and 0 < c.completion_tokens <= 6 for c in a)
    assert a[1].prompt_tokens > a[0].prompt_tokens


def test_transformers_backend_through_the_pipeline_records_rejects(tiny_causal_lm, tmp_path):
    """A random LM writes no valid JSON: every passage is retried, then rejected, and the run completes."""
    notes = tmp_path / "notes.jsonl"
    notes.write_text("".join(json.dumps({"id": f"n{i}", "text": TEXT}) + "\n" for i in range(2)))
    out = tmp_path / "out"
    cfg = GenerateConfig(notes=str(notes), out=str(out), generator="llm", backend="transformers",
                         model=tiny_causal_lm, max_new_tokens=8, max_retries=1, min_chunk_words=5, device="cpu",
                         progress=False)
    m = TripletPipeline(cfg).run()  # builds the backend from the config, as the CLI does
    assert m["counts"]["generation"]["rejected_outputs"] == 2 and m["counts"]["records"]["total"] == 0
    assert m["counts"]["generation"]["generator"]["retries"] == 2 and m["throughput"]["completion_tokens"] > 0
    rejects = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    assert {r["note_id"] for r in rejects} == {"n0", "n1"} and all(r["raw"].startswith('{"queries"') for r in rejects)


@pytest.mark.slow
def test_real_gguf_llm_writes_clinical_queries(tmp_path):
    """Qwen2.5-Coder-0.5B GGUF (assembled by ../shared/models/get-qwen-0.5b-gguf.sh into runs/models/qwen)."""
    model_dir = Path(__file__).resolve().parents[1] / "runs" / "models" / "qwen"
    gguf = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"
    if not (model_dir / gguf).is_file():
        pytest.skip("run: bash ../shared/models/get-qwen-0.5b-gguf.sh runs/models/qwen")
    from colmed.data_gen.backends.transformers_backend import TransformersBackend

    gen = LLMQueryGenerator(TransformersBackend(str(model_dir), gguf_file=gguf, device="cpu"), load_prompt_template(),
                            1, max_retries=2, max_new_tokens=160, temperature=0.3)
    result = gen.generate([Passage("a#0", "a", TEXT)])
    assert result.queries and result.queries[0].query.strip()


# ------------------------------------------------------------------ Ray scale-out: generation elsewhere, rest here

def test_queries_generated_on_a_cluster_feed_the_normal_pipeline(tmp_path):
    import datasets

    from colmed.data_gen.ray_pipeline import mine_from_queries, parse_row

    notes = tmp_path / "notes.jsonl"
    notes.write_text("".join(json.dumps({"id": f"n{i}", "text": TEXT + f" Visit {i} was for the left knee."}) + "\n"
                             for i in range(3)))
    # rows as the Ray postprocess step (parse_row) writes them from vLLM replies
    replies = [reply(), "oops", reply(query="repeat hba1c timing", qtype="question")]
    rows = [parse_row({"passage_id": f"n{i}#0", "note_id": f"n{i}", "text": TEXT, "generated_text": r},
                      ["keyword", "question", "treatment"]) for i, r in enumerate(replies)]
    qdir = tmp_path / "queries"
    qdir.mkdir()
    datasets.Dataset.from_list(rows).to_parquet(str(qdir / "part-0.parquet"))
    cfg = GenerateConfig(notes=str(notes), out=str(tmp_path / "out"), generator="llm", backend="vllm", model="m",
                         min_chunk_words=5, num_negatives=1, range_max=2, relative_margin=None, progress=False)
    m = mine_from_queries(cfg, qdir)
    assert m["counts"]["records"]["total"] == 2 and m["counts"]["generation"]["rejected_outputs"] == 1
    assert {r.query_type for r in read_triplets(tmp_path / "out")} == {"keyword", "question"}


def test_ray_generation_without_ray_says_how_to_install():
    import importlib.util

    from colmed.core.errors import ColmedError
    from colmed.data_gen.ray_pipeline import generate_queries_with_ray

    if importlib.util.find_spec("ray") is not None:
        pytest.skip("ray is installed here")
    with pytest.raises(ColmedError, match=r"colmed\[ray\]"):
        generate_queries_with_ray(GenerateConfig(notes="x", out="y", generator="llm", model="m"), "q")
