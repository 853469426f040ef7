"""Independent cropping (Contriever; Izacard et al., 2022): two random spans of a passage form a pair.

No model needed; like inverse cloze it is a weaker signal than LLM queries (spans, not questions), but
it is a real, documented unsupervised pre-training recipe.

Example:
    >>> from colmed.data_gen.notes import Passage
    >>> words = " ".join(f"w{i}" for i in range(100))
    >>> gen = IndependentCroppingGenerator(seed=3)
    >>> q = gen.generate([Passage("n1#0", "n1", words)]).queries[0]
    >>> 10 <= len(q.query.split()) <= 50 and q.query in words
    True
"""

from __future__ import annotations

from colmed.data_gen.generators.base import GeneratedQuery, GenerationResult, passage_rng
from colmed.data_gen.notes import Passage


class IndependentCroppingGenerator:
    """Query and positive are independent random spans covering ``[min_ratio, max_ratio]`` of the words."""

    name = "cropping"

    def __init__(self, queries_per_passage: int = 1, min_ratio: float = 0.1, max_ratio: float = 0.5,
                 max_query_words: int = 64, seed: int = 13):
        self.queries_per_passage = queries_per_passage
        self.min_ratio, self.max_ratio = min_ratio, max_ratio
        self.max_query_words = max_query_words
        self.seed = seed

    def _span(self, rng, words: list[str], cap: int | None = None) -> str:
        ratio = rng.uniform(self.min_ratio, self.max_ratio)
        length = max(1, int(round(ratio * len(words))))
        if cap:
            length = min(length, cap)
        start = rng.randint(0, len(words) - length)
        return " ".join(words[start:start + length])

    def generate(self, passages: list[Passage]) -> GenerationResult:
        result = GenerationResult()
        for passage in passages:
            words = passage.text.split()
            if len(words) < 10:
                result.count("passage_too_short_to_crop")
                continue
            rng = passage_rng(self.seed, passage.passage_id)
            for j in range(self.queries_per_passage):
                query = self._span(rng, words, cap=self.max_query_words)
                body = self._span(rng, words)
                positive = f"{passage.title} {body}".strip() if passage.title else body
                result.queries.append(GeneratedQuery(
                    f"{passage.passage_id}:crop{j}", query, f"{passage.passage_id}:crop{j}", passage.passage_id,
                    passage.note_id, positive, generator=self.name, query_type="span", evidence=query))
        return result
