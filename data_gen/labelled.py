"""Triplets from a labelled split (e.g. NFCorpus ``qrels/train.tsv``): its judged pairs plus mined negatives.

This puts supervised data on the same footing as synthetic data: the same record type, the same
miner and false-negative guard, the same outputs and manifest. Every document judged relevant to a
query is excluded from that query's negatives (not only the pair's own positive), and the train/dev
split is by query, so no query leaks across splits.

Example (the bundled sample, whose only judged split is ``test``; NFCorpus's would be
``build_labelled_triplets("../shared/beir/nfcorpus", "runs/nf-train")``):
    >>> import tempfile
    >>> from importlib.resources import files
    >>> sample = str(files("colmed") / "data" / "sample_medical")
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     manifest = build_labelled_triplets(sample, f"{tmp}/triplets", split="test", progress=False)
    >>> manifest["counts"]["records"]
    {'total': 35, 'train': 30, 'dev': 5}
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from colmed.core.errors import InputError
from colmed.core.io import atomic_directory, check_output, write_json
from colmed.data.triplets import TripletRecord


def labelled_records(dataset, num_negatives: int = 5, max_positives_per_query: int = 4, range_max: int = 50,
                     relative_margin: float | None = 0.05, min_relevance: int = 1, dev_fraction: float = 0.1,
                     seed: int = 13, progress: bool = True, num_queries: int | None = None
                     ) -> tuple[list[TripletRecord], dict]:
    """Records for up to ``max_positives_per_query`` judged pairs per query (highest grades first),
    each with BM25 hard negatives from the query's top ``range_max`` unjudged documents.

    ``num_queries`` draws that many of the queries with a judged document (seeded, kept in the split's order;
    all of them when ``None``), so a labelled source can match a synthetic one's size.

    The guard is :func:`colmed.data_gen.mining.apply_margin`, as in ``HardNegativeMiner``: for each pair, a
    candidate scoring above ``pos - |pos| * relative_margin`` is a likely unjudged positive and is dropped
    (``counts["relative_margin"]`` counts the top-``num_negatives`` slots it changed).
    """
    import numpy as np
    from tqdm.auto import tqdm

    from colmed.data_gen.mining import apply_margin
    from colmed.data_gen.notes import note_split, sample_notes
    from colmed.indexes.bm25 import BM25Index

    docs = list(dataset.corpus.values())
    index = BM25Index.build([d.doc_id for d in docs], [d.full_text for d in docs], show_progress=progress)
    position = {d: i for i, d in enumerate(index.doc_ids)}
    records: list[TripletRecord] = []
    counts = {"queries": 0, "pairs_judged": 0, "pairs_kept": 0, "judged_relevant_skipped": 0,
              "relative_margin": 0, "pairs_short_of_negatives": 0}
    judged_queries = [(qid, text, judged) for qid, text in dataset.queries.items()
                      if (judged := {d: r for d, r in dataset.qrels.get(qid, {}).items()
                                     if r >= min_relevance and d in position})]
    if num_queries is not None:
        if not 1 <= num_queries <= len(judged_queries):
            raise InputError(f"must be between 1 and the {len(judged_queries)} queries with a judged document, "
                             f"got {num_queries}", field="num_queries")
        judged_queries = sample_notes(judged_queries, num_queries, seed)
        counts["queries_sampled"] = num_queries
    for qid, text, judged in tqdm(judged_queries, desc="pairs", disable=not progress):
        counts["queries"] += 1
        counts["pairs_judged"] += len(judged)
        positives = sorted(judged, key=lambda d: (-judged[d], d))[:max_positives_per_query]
        scores = np.asarray(index.get_scores(text)) if num_negatives else None
        candidates: list[tuple[str, float, int]] = []
        if num_negatives:
            order = np.argsort(-scores, kind="stable")[:range_max + len(judged)]
            for rank, i in enumerate(order.tolist(), start=1):
                if index.doc_ids[i] in judged:
                    counts["judged_relevant_skipped"] += 1
                else:
                    candidates.append((index.doc_ids[i], float(scores[i]), rank))
        split = note_split(qid, dev_fraction, seed)
        for pos in positives:
            pos_score = None if scores is None else float(scores[position[pos]])
            negs = candidates
            if pos_score is not None:
                negs = apply_margin(candidates, pos_score, relative_margin=relative_margin)
                counts["relative_margin"] += min(len(candidates) - len(negs), num_negatives)
            negs = negs[:num_negatives]
            counts["pairs_short_of_negatives"] += bool(num_negatives) and len(negs) < num_negatives
            counts["pairs_kept"] += 1
            records.append(TripletRecord(
                query_id=f"{qid}::{pos}", query=text, positive_id=pos, positive=dataset.corpus[pos].full_text,
                negative_ids=[n[0] for n in negs], negatives=[dataset.corpus[n[0]].full_text for n in negs],
                positive_score=pos_score, negative_scores=[n[1] for n in negs],
                negative_ranks=[n[2] for n in negs], note_id=qid,
                generator=f"labelled:{dataset.name}/{dataset.split}", miner="bm25" if num_negatives else "",
                relevance=float(judged[pos]), split=split))
    return records, counts


def build_labelled_triplets(dataset_path: str, out: str | Path, split: str = "train", negatives: int = 5,
                            dev_fraction: float = 0.1, seed: int = 13, overwrite: bool = False,
                            progress: bool = True, record_check: Any = None, **options) -> dict[str, Any]:
    """Write the standard triplet outputs (as ``colmed generate``) from a labelled split.

    ``record_check`` is :class:`colmed.data_gen.pipeline.TripletPipeline`'s: e.g. a decontamination against the
    benchmark's test queries (NFCorpus's train and test splits share 24 queries).
    """
    from colmed.core.provenance import run_manifest
    from colmed.data_gen.pipeline import GENERATION_PACKAGES, export_all, write_outputs
    from colmed.data.datasets import load_dataset

    if negatives < 0:
        raise InputError(f"must be 0 or more, got {negatives}", field="num_negatives")
    if not 0 <= dev_fraction < 1:
        raise InputError(f"must be in [0, 1), got {dev_fraction}", field="dev_fraction")
    check_output(out, overwrite, kind="triplets", inputs=[dataset_path if Path(dataset_path).exists() else None])
    t0 = time.perf_counter()
    ds = load_dataset(dataset_path, split=split)
    records, counts = labelled_records(ds, num_negatives=negatives, dev_fraction=dev_fraction, seed=seed,
                                       progress=progress, **options)
    inputs = [dataset_path if Path(dataset_path).exists() else None]
    with atomic_directory(out, overwrite=overwrite, kind="triplets", inputs=inputs) as tmp:
        if record_check is not None:
            records, counts["contamination"] = record_check(records, tmp)
        counts["records"] = {"total": len(records), "train": sum(r.split == "train" for r in records),
                             "dev": sum(r.split == "dev" for r in records)}
        write_outputs(tmp, records, [])
        exports = export_all(tmp, records)
        manifest = run_manifest({"source": "labelled", "dataset": str(dataset_path), "split": split,
                                 "negatives": negatives, "dev_fraction": dev_fraction, "seed": seed,
                                 "generator": f"labelled:{ds.name}/{split}", "miner": "bm25", **options},
                                packages=GENERATION_PACKAGES, kind="colmed-triplets", format_version=1,
                                input={"path": ds.source, "fingerprint": ds.fingerprint,
                                       "qrels_hash": ds.qrels_hash},
                                counts=counts, exports=exports,
                                throughput={"seconds": round(time.perf_counter() - t0, 2)})
        write_json(tmp / "manifest.json", manifest)
    return manifest
