"""Bounded loopback load test of ``colmed serve`` against the same searches through the Python API.

For each index (BM25, dense, optionally the RRF fusion of both, and PLAID when an index is given) the
script alternates short slices of (a) N concurrent HTTP clients against a ``colmed serve`` subprocess on
127.0.0.1 and (b) the same NFCorpus queries through the Python API in this process, until each side has
had ``--seconds`` of load. Interleaving matters because the machine is shared: a burst of other work hits
both sides alike. Every request is one query, k=10. It stops by itself.

    python bench/serve_load.py --bm25 runs/serve-bench/nfcorpus-bm25 \\
        --dense runs/serve-bench/nfcorpus-minilm-flat --queries ../shared/beir/nfcorpus \\
        --clients 8 --seconds 60 --out bench/results/serve.md

In-process, the Python API is called from one thread (``load_index(dir).search({qid: text}, k=10)``):
the server searches each index under a lock (tokenizers and PLAID are not safe to share between
threads), so one caller is the in-process ceiling the server can reach.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def start_server(indexes: dict[str, str], port: int, torch_threads: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "colmed.cli", "serve", "--host", "127.0.0.1", "--port", str(port),
           "--log-level", "warning"]
    for name, path in indexes.items():
        cmd += ["--index", f"{name}={path}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(torch_threads)})
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"colmed serve exited: {proc.stderr.read()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("colmed serve did not come up in 600 s")


def http_slice(url: str, body: dict, queries: list[str], clients: int, seconds: float, offset: int):
    """``clients`` threads each send one query per request for ``seconds``; latencies and error count."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.perf_counter() + seconds

    def client(worker: int) -> None:
        mine, bad = [], 0
        i = offset + worker * 37
        with httpx.Client(base_url=url, timeout=120) as http:
            while time.perf_counter() < stop_at:
                q = queries[i % len(queries)]
                i += 1
                t0 = time.perf_counter()
                try:
                    r = http.post("/search", json={**body, "query": q, "k": 10})
                    ok = r.status_code == 200 and len(r.json()["results"]) == 1
                except httpx.HTTPError:
                    ok = False
                mine.append(time.perf_counter() - t0)
                bad += not ok
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    threads = [threading.Thread(target=client, args=(w,)) for w in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies, errors[0], time.perf_counter() - t0


_WRK_SCRIPT = """
local bodies = {%s}
local i = %d
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
request = function()
  i = i + 1
  return wrk.format(nil, "/search", nil, bodies[(i %% #bodies) + 1])
end
done = function(summary, latency, requests)
  -- up to 2,000 evenly spaced quantiles of the latency (microseconds), so slices can be merged
  local n = summary.requests
  local k = math.min(n, 2000)
  local parts = {}
  for j = 1, k do parts[#parts + 1] = latency:percentile(100 * (j - 0.5) / k) end
  local e = summary.errors
  io.write("WRK-RESULT ", n, " ", summary.duration, " ",
           e.connect + e.read + e.write + e.status + e.timeout, " ", table.concat(parts, ","), "\\n")
end
"""


def wrk_slice(url: str, body: dict, queries: list[str], clients: int, seconds: float, offset: int):
    """The same load from ``wrk`` (a C load generator, one thread, epoll): the client costs almost no CPU,
    so on a small machine the server is measured rather than the Python client's own JSON and HTTP work."""
    import tempfile

    bodies = ",".join(json.dumps(json.dumps({**body, "query": q, "k": 10})) for q in queries)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(_WRK_SCRIPT % (bodies, offset))
    try:
        out = subprocess.run(["wrk", "-t1", f"-c{clients}", f"-d{max(1, round(seconds))}s", "--timeout", "120s",
                              "-s", f.name, url], capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(f.name)
    line = next(x for x in out.splitlines() if x.startswith("WRK-RESULT "))
    _, requests, duration_us, errors, quantiles = (line.split(" ") + [""])[:5]
    q = np.array([float(x) for x in quantiles.split(",") if x], dtype=float) / 1e6
    n = int(requests)
    latencies = list(np.interp(np.linspace(0, 1, n), np.linspace(0, 1, len(q)), q)) if n and len(q) else []
    return latencies, int(errors), int(duration_us) / 1e6


def api_slice(search, queries: list[str], seconds: float, offset: int):
    latencies: list[float] = []
    stop_at = time.perf_counter() + seconds
    i = offset
    t0 = time.perf_counter()
    while time.perf_counter() < stop_at:
        q = queries[i % len(queries)]
        i += 1
        t1 = time.perf_counter()
        search(q)
        latencies.append(time.perf_counter() - t1)
    return latencies, 0, time.perf_counter() - t0


def summarise(latencies: list[float], errors: int, elapsed: float) -> dict:
    ms = np.array(latencies) * 1000
    return {"requests": len(latencies), "errors": errors, "seconds": round(elapsed, 1),
            "qps": round(len(latencies) / elapsed, 1) if elapsed else 0.0,
            "p50_ms": round(float(np.percentile(ms, 50)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bm25", required=True)
    ap.add_argument("--dense", required=True)
    ap.add_argument("--plaid", default=None, help="A PLAID index of the same corpus, if one exists.")
    ap.add_argument("--fused", action="store_true", help="Also load-test RRF(bm25+dense).")
    ap.add_argument("--queries", default="../shared/beir/nfcorpus")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60.0, help="Load per side per index.")
    ap.add_argument("--slice", type=float, default=10.0, help="Length of one interleaved slice.")
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="torch intra-op threads on both sides (OMP_NUM_THREADS for the server). On a shared, "
                         "oversubscribed 2-core machine 2 threads stall at OpenMP barriers (measured: 3.4 vs 31 "
                         "queries/s for MiniLM in-process), so 1 is the fair setting there.")
    ap.add_argument("--client", choices=["python", "wrk"], default="python",
                    help="Load generator: 8 httpx threads in this process (python), or wrk (apt install wrk), "
                         "whose near-zero CPU leaves the machine's cores to the server.")
    ap.add_argument("--out", default=None, help="Markdown results file.")
    ap.add_argument("--json", default="runs/serve-bench/serve_load.json")
    args = ap.parse_args()
    if args.clients < 1 or args.clients > 64 or args.seconds <= 0 or args.seconds > 600:
        raise SystemExit("--clients must be 1..64 and --seconds in (0, 600]: this is a bounded loopback test")

    import torch

    torch.set_num_threads(args.torch_threads)
    load = wrk_slice if args.client == "wrk" else http_slice
    from colmed.indexes.base import load_index
    from colmed.indexes.search import load_queries
    from colmed.serve import IndexPool

    queries = list(load_queries(args.queries)[0].values())
    indexes = {"bm25": args.bm25, "dense": args.dense}
    if args.plaid:
        indexes["plaid"] = args.plaid
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    started = time.time()
    server = start_server(indexes, port, args.torch_threads)
    load_seconds = time.time() - started
    try:
        targets = {name: ({"index": name}, load_index(path)) for name, path in indexes.items()}
        if args.fused:
            pool = IndexPool({"bm25": targets["bm25"][1], "dense": targets["dense"][1]})
            targets["rrf(bm25+dense)"] = ({"fuse": "rrf", "indexes": ["bm25", "dense"]}, pool)
        results = {}
        for name, (body, engine) in targets.items():
            if isinstance(engine, IndexPool):
                def search(q, engine=engine):
                    return engine.search([q], k=10, indexes=["bm25", "dense"], fuse="rrf")
            else:
                def search(q, engine=engine):
                    return engine.search({"q": q}, k=10)
            # Warm both sides (first encode, numba kernels for fusion) outside the measurement.
            load(url, body, queries, args.clients, 3.0, 0)
            api_slice(search, queries, 3.0, 0)
            sides = {"server": ([], 0, 0.0), "api": ([], 0, 0.0)}
            loads = []
            done = 0.0
            offset = 1000
            while done < args.seconds:
                length = min(args.slice, args.seconds - done)
                loads.append(os.getloadavg()[0])
                for side in ("server", "api"):
                    lat, err, el = (load(url, body, queries, args.clients, length, offset) if side == "server"
                                    else api_slice(search, queries, length, offset))
                    prev = sides[side]
                    sides[side] = (prev[0] + lat, prev[1] + err, prev[2] + el)
                offset += 500
                done += length
            row = {side: summarise(*vals) for side, vals in sides.items()}
            row["ratio"] = round(row["server"]["qps"] / row["api"]["qps"], 2) if row["api"]["qps"] else None
            row["load_avg_1m"] = round(statistics.mean(loads), 2)
            results[name] = row
            print(name, json.dumps(row), flush=True)
        info = httpx.get(f"{url}/indexes", timeout=10).json()
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()

    meta = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "nproc": os.cpu_count(),
            "cpu": cpu_model(), "python": platform.python_version(), "clients": args.clients, "client": args.client,
            "seconds_per_side": args.seconds, "torch_threads": args.torch_threads, "slice_seconds": args.slice, "queries": len(queries),
            "server_start_seconds": round(load_seconds, 1), "command": " ".join(sys.argv),
            "indexes": info["indexes"]}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    if args.out:
        Path(args.out).write_text(render(meta, results))


def render(meta: dict, results: dict) -> str:
    lines = ["| index | side | requests | errors | QPS | p50 ms | p95 ms | p99 ms | server/API QPS | load avg |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, row in results.items():
        for side in ("server", "api"):
            r = row[side]
            label = (f"HTTP, {meta['clients']} clients ({meta.get('client', 'python')})" if side == "server"
                     else "Python API, 1 thread")
            lines.append(f"| {name} | {label} | {r['requests']} | {r['errors']} | {r['qps']} | {r['p50_ms']} | "
                         f"{r['p95_ms']} | {r['p99_ms']} | {row['ratio'] if side == 'server' else ''} | "
                         f"{row['load_avg_1m'] if side == 'server' else ''} |")
    idx = "\n".join(f"- `{i['name']}`: {i['kind']}, model `{i['model']}`, {i['documents']} documents, "
                    f"index type {i['index_type'] or '-'}, ANN recall@10 {i['ann_recall_at_10']}"
                    for i in meta["indexes"])
    return (f"# `colmed serve` load test (NFCorpus)\n\n"
            f"- Command: `{meta['command']}`\n- Date: {meta['date']}\n"
            f"- Machine: {meta['nproc']} CPU cores (`nproc`), {meta['cpu']}, Python {meta['python']}; "
            f"shared with other agents' jobs while this ran (1-minute load average per index below), so the "
            f"server and the in-process API were run in interleaved {meta['slice_seconds']:.0f} s slices.\n"
            f"- Load: {meta['clients']} concurrent HTTP clients on 127.0.0.1 "
            f"({'wrk, one thread' if meta.get('client') == 'wrk' else 'httpx threads in the benchmark process'}), one query per request, k=10, "
            f"{meta['seconds_per_side']:.0f} s per side per index, {meta['queries']} NFCorpus test queries cycled; "
            f"server start (indexes loaded) {meta['server_start_seconds']} s; torch threads {meta['torch_threads']} "
            f"on both sides.\n\n"
            f"{chr(10).join(lines)}\n\nIndexes:\n{idx}\n")


if __name__ == "__main__":
    main()
