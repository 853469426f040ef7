"""`colmed serve` over real uvicorn on loopback, and the LangChain / LlamaIndex retrievers, on the bundled sample."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

httpx = pytest.importorskip("httpx")
pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

from colmed.serve import MAX_K, MAX_QUERY_CHARS, create_app  # noqa: E402


@pytest.fixture(scope="module")
def sample_indexes(tmp_path_factory, sample_dataset_dir, minilm_path):
    """BM25 and dense (MiniLM, exact faiss) indexes of the bundled sample, built on disk."""
    from colmed.data.datasets import load_dataset
    from colmed.indexes.base import build_index

    ds = load_dataset(sample_dataset_dir)
    root = tmp_path_factory.mktemp("serve-indexes")
    build_index("bm25", ds, root / "bm25")
    build_index("dense", ds, root / "dense", model=minilm_path)
    return {"bm25": root / "bm25", "dense": root / "dense"}


@pytest.fixture(scope="module")
def server(sample_indexes):
    """The app on uvicorn in a thread, bound to 127.0.0.1 on a port the OS picked."""
    app = create_app({"bm25": str(sample_indexes["bm25"]), "dense": str(sample_indexes["dense"])})
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    # Generous: the first fused request waits while numba compiles ranx's fusion kernels.
    with httpx.Client(base_url=url, timeout=300) as client:
        yield url, client
    srv.should_exit = True
    thread.join(timeout=10)
    sock.close()


def ids(hits):
    return [h["id"] for h in hits]


def test_health_indexes_and_openapi(server):
    _, client = server
    assert client.get("/health").json() == {"status": "ok", "indexes": 2}
    info = {ix["name"]: ix for ix in client.get("/indexes").json()["indexes"]}
    assert info["bm25"]["kind"] == "bm25" and info["bm25"]["documents"] == 40
    assert info["dense"]["kind"] == "dense" and info["dense"]["dims"] == 384
    assert info["dense"]["index_type"] == "flat" and info["dense"]["approximate"] is False
    assert info["dense"]["ann_recall_at_10"] is None
    schema = client.get("/openapi.json").json()
    assert {"/search", "/indexes", "/health"} <= set(schema["paths"])


def test_single_query_returns_ranked_hits_with_titles(server):
    _, client = server
    body = client.post("/search", json={"query": "dry cough after starting lisinopril", "index": "bm25",
                                        "k": 3}).json()
    assert body["index"] == "bm25" and body["k"] == 3
    hits = body["results"][0]["hits"]
    assert len(hits) == 3 and hits[0]["id"] == "htn-02" and hits[0]["title"] == "ACE inhibitor cough"
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    assert "text" not in hits[0]
    with_text = client.post("/search", json={"query": "lisinopril cough", "index": "bm25", "k": 1,
                                             "include_text": True}).json()
    assert "persistent cough" in with_text["results"][0]["hits"][0]["text"]


def test_batch_matches_single_queries(server):
    _, client = server
    queries = ["signs of a heart attack in women", "levothyroxine dose adjustment TSH", "newborn with a fever"]
    batch = client.post("/search", json={"queries": queries, "index": "dense", "k": 5}).json()["results"]
    assert [r["query"] for r in batch] == queries
    for query, result in zip(queries, batch):
        single = client.post("/search", json={"query": query, "index": "dense", "k": 5}).json()["results"][0]
        assert ids(result["hits"]) == ids(single["hits"])
    assert batch[1]["hits"][0]["id"] == "thyroid-01"


@pytest.mark.parametrize("payload, status, message", [
    ({"query": "cough", "index": "nope"}, 400, "unknown index 'nope'"),
    ({"query": "cough", "index": "bm25", "k": 0}, 422, "field 'k'"),
    ({"query": "cough", "index": "bm25", "k": MAX_K + 1}, 422, "field 'k'"),
    ({"query": "   ", "index": "bm25"}, 422, "the query is empty"),
    ({"queries": ["cough", ""], "index": "bm25"}, 422, "query 1 is empty"),
    ({"query": "x" * (MAX_QUERY_CHARS + 1), "index": "bm25"}, 422, "field 'query'"),
    ({"queries": ["x" * (MAX_QUERY_CHARS + 1)], "index": "bm25"}, 422, f"at most {MAX_QUERY_CHARS}"),
    ({"queries": [], "index": "bm25"}, 422, "field 'queries'"),
    ({"index": "bm25"}, 422, "exactly one of 'query'"),
    ({"query": "cough", "queries": ["cough"]}, 422, "exactly one of 'query'"),
    ({"query": "cough"}, 400, "name one with 'index'"),
    ({"query": "cough", "fuse": "borda"}, 422, "field 'fuse'"),
    ({"query": "cough", "index": "bm25", "fuse": "rrf"}, 400, "not both"),
    ({"query": "cough", "topk": 3}, 422, "field 'topk'"),
])
def test_bad_requests_get_one_clear_4xx(server, payload, status, message):
    _, client = server
    response = client.post("/search", json=payload)
    assert response.status_code == status
    detail = response.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and message in detail


def test_malformed_json_and_wrong_types_then_server_still_answers(server):
    _, client = server
    response = client.post("/search", content=b'{"query": "cough", "k": ', headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["detail"].startswith("malformed JSON")
    response = client.post("/search", json=["cough"])
    assert response.status_code == 422 and isinstance(response.json()["detail"], str)
    assert client.get("/health").json()["status"] == "ok"


def test_concurrent_requests_give_the_sequential_answers(server):
    _, client = server
    queries = ["treatment of asthma flare", "bladder infection antibiotic for women", "leg swelling blood clot test",
               "antidepressant first choice"] * 4
    expected = {q: ids(client.post("/search", json={"query": q, "index": "dense", "k": 5})
                       .json()["results"][0]["hits"]) for q in set(queries)}

    def ask(query):
        r = client.post("/search", json={"query": query, "index": "dense", "k": 5})
        return query, r.status_code, ids(r.json()["results"][0]["hits"])

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, queries))
    assert all(status == 200 for _, status, _ in answers)
    assert all(got == expected[q] for q, _, got in answers)


def test_rrf_fusion_of_bm25_and_dense(server):
    _, client = server
    query = "what is the first medicine for high blood pressure"
    fused = client.post("/search", json={"query": query, "fuse": "rrf", "k": 5}).json()
    assert fused["index"] == "rrf(bm25+dense)"
    hits = fused["results"][0]["hits"]
    alone = {name: ids(client.post("/search", json={"query": query, "index": name, "k": 100})
                       .json()["results"][0]["hits"]) for name in ("bm25", "dense")}
    # RRF (k=60): a document's score is the sum over runs of 1 / (60 + its rank there).
    for hit in hits:
        expected = sum(1 / (60 + run.index(hit["id"]) + 1) for run in alone.values() if hit["id"] in run)
        assert hit["score"] == pytest.approx(expected)
    assert hits[0]["id"] in {"htn-01", "htn-02", "htn-03"}  # the judged-relevant hypertension notes
    named = client.post("/search", json={"query": query, "indexes": ["dense", "bm25"], "k": 5}).json()
    assert named["index"] == "rrf(dense+bm25)" and ids(named["results"][0]["hits"]) == ids(hits)


def test_langchain_retriever_in_process_hybrid_and_served(server, sample_indexes):
    from langchain_core.documents import Document

    from colmed.integrations.langchain import ColmedRetriever

    hybrid = ColmedRetriever(index=[str(sample_indexes["bm25"]), str(sample_indexes["dense"])], k=3)
    docs = hybrid.invoke("dry cough after starting lisinopril")
    assert all(isinstance(d, Document) for d in docs) and len(docs) == 3
    top = docs[0]
    assert top.metadata["id"] == "htn-02" and top.metadata["title"] == "ACE inhibitor cough"
    assert top.page_content.startswith("ACE inhibitor cough") and "lisinopril" in top.page_content
    assert top.metadata["score"] > docs[-1].metadata["score"]

    url, client = server
    served = ColmedRetriever(url=url, index="dense", k=3).invoke("dry cough after starting lisinopril")
    direct = client.post("/search", json={"query": "dry cough after starting lisinopril", "index": "dense",
                                          "k": 3}).json()["results"][0]["hits"]
    assert [d.metadata["id"] for d in served] == ids(direct)
    assert served[0].page_content.startswith(direct[0]["title"])
    with pytest.raises(Exception, match="unknown index 'nope'"):
        ColmedRetriever(url=url, index="nope").invoke("cough")


def test_llama_index_retriever_in_process_and_served_hybrid(server, sample_indexes):
    from llama_index.core.schema import NodeWithScore

    from colmed.integrations.llama_index import ColmedLlamaRetriever

    local = ColmedLlamaRetriever(index={"bm25": str(sample_indexes["bm25"])}, k=2)
    nodes = local.retrieve("levothyroxine dose adjustment TSH")
    assert all(isinstance(n, NodeWithScore) for n in nodes) and len(nodes) == 2
    assert nodes[0].node.node_id == "thyroid-01" and nodes[0].node.metadata["title"] == "Hypothyroidism treatment"
    assert "levothyroxine" in nodes[0].node.get_content().lower()

    url, _ = server
    served = ColmedLlamaRetriever(url=url, index=["bm25", "dense"], k=4).retrieve(
        "levothyroxine dose adjustment TSH")
    assert len(served) == 4 and served[0].node.node_id == "thyroid-01"
    assert served[0].score == pytest.approx(2 / 61)  # first in both runs under RRF


def test_cli_serves_on_loopback_until_stopped(sample_indexes):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "colmed.cli", "serve", "--index", f"lex={sample_indexes['bm25']}",
                             "--port", str(port), "--log-level", "warning"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "colmed serve did not come up"
                time.sleep(0.2)
        hits = httpx.post(f"http://127.0.0.1:{port}/search",
                          json={"query": "clot busting drug in stroke", "k": 1}).json()["results"][0]["hits"]
        assert hits[0]["id"] == "stroke-02"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_cli_refuses_a_missing_index_with_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "colmed.cli", "serve", "--index", str(tmp_path / "absent")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "no manifest.json" in proc.stderr and proc.stderr.count("\n") == 1


def test_queries_arriving_together_are_searched_in_one_call_with_their_own_results(sample_dataset_dir):
    import threading
    import time

    import colmed
    from colmed.serve import ServedIndex

    ds = colmed.load_dataset(sample_dataset_dir)
    bm25 = colmed.build_index("bm25", ds)
    calls = []

    class SlowCounted:  # the real BM25 index, slowed so that requests pile up behind a running search
        def search(self, queries, k=100):
            calls.append(len(queries))
            time.sleep(0.2)
            return bm25.search(queries, k=k)

    served = ServedIndex("bm25", SlowCounted())
    texts = list(ds.queries.values())[:12]
    expected = [bm25.search({"q": t}, k=3)["q"] for t in texts]
    got = [None] * len(texts)

    def ask(i):
        got[i] = served.search([texts[i]], k=3)[0]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(texts))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert got == expected
    assert sum(calls) == len(texts) and len(calls) < len(texts)  # batched, every query searched once
