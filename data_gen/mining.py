"""Hard-negative mining over any retriever, with a positive-aware false-negative guard.

Selection follows sentence-transformers' ``mine_hard_negatives`` (``sentence_transformers.util.
hard_negatives``): take the top candidates, drop the positive, drop candidates that score too close
to the positive (``relative_margin``: keep a candidate only if ``score <= pos - |pos| * margin``, the
NV-Retriever TopK-PercPos guard; ``absolute_margin``: ``score + margin <= pos``), drop scores above
``max_score`` / below ``min_score``, then skip the first ``range_min`` survivors and take the top
``num_negatives`` (``sampling="top"``) or a random sample of the survivors within ``range_max``
(``sampling="random"``, re-sorted by score). On top of that, passages of the positive's own note are
excluded by default: another chunk of the same clinical note is a likely false negative.

The positive's score comes from the retrieved list when it is there, else from the retriever's
``get_scores(query)`` (BM25, dense) when it has one. A plain :class:`~colmed.indexes.base.Retriever` that did
not retrieve the positive gives no score; the positive then scores at most the last retrieved score,
so every retrieved candidate is within the margin and none is kept (counted as ``positive_unscored``).

Example:
    >>> from colmed.indexes.bm25 import BM25Index
    >>> ids = ["a#0", "b#0", "c#0", "d#0"]
    >>> texts = ["aspirin for fever in adults", "aspirin for fever in children",
    ...          "insulin dosing in diabetes", "fever of unknown origin workup"]
    >>> miner = HardNegativeMiner(BM25Index.build(ids, texts, show_progress=False),
    ...                           note_of={i: i.split("#")[0] for i in ids}, num_negatives=2,
    ...                           relative_margin=None)
    >>> mined = miner.mine({"q": "aspirin fever"}, {"q": "a#0"})["q"]
    >>> mined.negative_ids
    ['b#0', 'd#0']
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np


@dataclass
class MinedNegatives:
    """The outcome of mining for one query."""

    negative_ids: list[str] = field(default_factory=list)
    negative_scores: list[float] = field(default_factory=list)
    negative_ranks: list[int] = field(default_factory=list)  # 1-based rank in the retriever's list
    positive_score: float | None = None
    positive_rank: int | None = None  # 1-based; None = not within the retrieved depth


class HardNegativeMiner:
    """Mine hard negatives for (query, positive id) pairs from any :class:`~colmed.indexes.base.Retriever`.

    ``note_of`` maps every corpus id to its note id (for the same-note exclusion); ``counts``
    accumulates how many candidates each rule removed, for the manifest.
    """

    def __init__(self, retriever: Any, note_of: Mapping[str, str] | None = None, num_negatives: int = 5,
                 range_min: int = 0, range_max: int = 50, relative_margin: float | None = 0.05,
                 absolute_margin: float | None = None, max_score: float | None = None,
                 min_score: float | None = None, sampling: str = "top", exclude_same_note: bool = True,
                 seed: int = 13, name: str = ""):
        if num_negatives > range_max - range_min:
            raise ValueError(f"cannot mine {num_negatives} negatives from ranks [{range_min}, {range_max})")
        self.retriever = retriever
        self.note_of = dict(note_of or {})
        self.num_negatives, self.range_min, self.range_max = num_negatives, range_min, range_max
        self.relative_margin, self.absolute_margin = relative_margin, absolute_margin
        self.max_score, self.min_score = max_score, min_score
        self.sampling, self.exclude_same_note, self.seed = sampling, exclude_same_note, seed
        self.name = name or type(retriever).__name__
        per_note: dict[str, int] = {}
        for note in self.note_of.values():
            per_note[note] = per_note.get(note, 0) + 1
        # Retrieve deep enough that excluding the positive's whole note still leaves range_max candidates.
        self.depth = range_max + 1 + (max(per_note.values()) if per_note and exclude_same_note else 0)
        self._position = ({d: i for i, d in enumerate(retriever.doc_ids)}
                          if hasattr(retriever, "get_scores") and hasattr(retriever, "doc_ids") else None)
        self.counts: dict[str, int] = {}

    def _count(self, key: str, n: int = 1) -> None:
        if n:
            self.counts[key] = self.counts.get(key, 0) + n

    def _positive_score(self, query: str, positive_id: str) -> float | None:
        if self._position is None or positive_id not in self._position:
            return None
        return float(np.asarray(self.retriever.get_scores(query))[self._position[positive_id]])

    def mine(self, queries: Mapping[str, str], positive_ids: Mapping[str, str],
             search_depth: int | None = None) -> dict[str, MinedNegatives]:
        """Negatives for each query id; ``positive_ids[qid]`` is the corpus id of its positive."""
        depth = max(self.depth, search_depth or 0)
        results = self.retriever.search(dict(queries), k=depth)
        return {qid: self._select(qid, queries[qid], positive_ids[qid], results.get(qid, {}))
                for qid in queries}

    def _select(self, qid: str, query: str, positive_id: str, hits: Mapping[str, float]) -> MinedNegatives:
        ranked = sorted(hits.items(), key=lambda kv: -kv[1])
        out = MinedNegatives()
        for rank, (doc_id, score) in enumerate(ranked, start=1):
            if doc_id == positive_id:
                out.positive_rank, out.positive_score = rank, float(score)
                break
        if out.positive_score is None:
            out.positive_score = self._positive_score(query, positive_id)
        own_note = self.note_of.get(positive_id)
        candidates: list[tuple[str, float, int]] = []
        for rank, (doc_id, score) in enumerate(ranked, start=1):
            if doc_id == positive_id:
                continue
            if self.exclude_same_note and own_note is not None and self.note_of.get(doc_id) == own_note:
                self._count("same_note")
                continue
            candidates.append((doc_id, float(score), rank))
        candidates = candidates[:self.range_max]
        self._count("candidates", len(candidates))
        pos = out.positive_score
        if pos is None and (self.relative_margin is not None or self.absolute_margin is not None):
            self._count("positive_unscored", len(candidates))
            self._count("queries_positive_unscored")
            candidates = []
        if pos is not None:
            kept = apply_margin(candidates, pos, absolute_margin=self.absolute_margin)
            self._count("absolute_margin", len(candidates) - len(kept))
            candidates = kept
            kept = apply_margin(candidates, pos, relative_margin=self.relative_margin)
            self._count("relative_margin", len(candidates) - len(kept))
            candidates = kept
        if self.max_score is not None:
            kept = [c for c in candidates if not c[1] > self.max_score]
            self._count("max_score", len(candidates) - len(kept))
            candidates = kept
        if self.min_score is not None:
            kept = [c for c in candidates if not c[1] < self.min_score]
            self._count("min_score", len(candidates) - len(kept))
            candidates = kept
        window = candidates[self.range_min:]
        if self.sampling == "random" and len(window) > self.num_negatives:
            rng = random.Random(f"{self.seed}:{qid}")
            chosen = sorted(rng.sample(window, self.num_negatives), key=lambda c: -c[1])
        else:
            chosen = window[:self.num_negatives]
        if len(chosen) < self.num_negatives:
            self._count("queries_short_of_negatives")
        out.negative_ids = [c[0] for c in chosen]
        out.negative_scores = [c[1] for c in chosen]
        out.negative_ranks = [c[2] for c in chosen]
        return out


def apply_margin(candidates: Sequence[tuple], positive_score: float, relative_margin: float | None = None,
                 absolute_margin: float | None = None) -> list[tuple]:
    """The false-negative guard: the ``(doc_id, score, ...)`` candidates that score clearly below the positive.

    ``relative_margin`` keeps a candidate only if ``score <= pos - |pos| * margin`` (``|pos|`` rather than
    ``pos * (1 - margin)``: sign-safe, as sentence-transformers #3819); ``absolute_margin`` only if
    ``score + margin <= pos``. ``None`` switches a rule off. Order is kept.

    Example:
        >>> cands = [("dup", 9.8, 1), ("near", 9.4, 2), ("far", 3.0, 3)]
        >>> [c[0] for c in apply_margin(cands, 10.0, relative_margin=0.05)]
        ['near', 'far']
        >>> [c[0] for c in apply_margin(cands, 10.0, absolute_margin=1.0)]
        ['far']
        >>> negative = [("a", -2.5, 1), ("b", -3.5, 2)]  # sign-safe: threshold -2 - |-2| * 0.5 = -3
        >>> [c[0] for c in apply_margin(negative, -2.0, relative_margin=0.5)]
        ['b']
    """
    kept = list(candidates)
    if absolute_margin is not None:
        kept = [c for c in kept if not c[1] + absolute_margin > positive_score]
    if relative_margin is not None:
        threshold = positive_score - abs(positive_score) * relative_margin
        kept = [c for c in kept if not c[1] > threshold]
    return kept


def dense_retriever(model: str, doc_ids: list[str], texts: list[str], device: str | None = None,
                    backend: str | None = "torch", quantize: str | None = None):
    """Exact (flat inner-product) dense retrieval over a small in-memory corpus, for mining.

    A :class:`colmed.indexes.dense.DenseIndex` held in memory, encoded by
    :class:`colmed.bi_encoder.encoder.DenseEncoder` (so query/document prompts match the trainers'); it
    has ``search`` and ``get_scores`` like :class:`colmed.indexes.bm25.BM25Index`. ``backend``/``quantize``
    choose the encoder's engine as for dense indexing (``"openvino"``, with ``"int8"`` or ``"bf16"``;
    see :func:`colmed.bi_encoder.encoder.use_backend`); ``retriever.encoder.backend`` says which ran.
    """
    from colmed.bi_encoder.encoder import DenseEncoder
    from colmed.indexes.dense import DenseIndex, make_faiss_index

    encoder = DenseEncoder(model, device=device, backend=backend, quantize=quantize)
    vectors = encoder.encode_documents(list(texts), show_progress=False)
    return DenseIndex(make_faiss_index(vectors, "flat"), list(doc_ids), encoder)


def add_teacher_scores(records: list, model: str, batch_size: int = 32, device: str | None = None) -> None:
    """Fill ``teacher_scores`` (cross-encoder logits for ``[positive, *negatives]``) in place."""
    from sentence_transformers import CrossEncoder

    encoder = CrossEncoder(model, device=device)
    pairs, spans = [], []
    for r in records:
        start = len(pairs)
        pairs += [(r.query, r.positive)] + [(r.query, n) for n in r.negatives]
        spans.append((start, len(pairs)))
    if not pairs:
        return
    scores = np.asarray(encoder.predict(pairs, batch_size=batch_size, show_progress_bar=False), dtype=float)
    if scores.ndim > 1:  # multi-label heads: the last column is the "relevant" logit by convention
        scores = scores[:, -1]
    for r, (a, b) in zip(records, spans):
        r.teacher_scores = [float(s) for s in scores[a:b]]
