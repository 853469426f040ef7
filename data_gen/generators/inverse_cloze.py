"""Inverse cloze task (ICT; Lee et al., 2019): a sentence of a passage is the query, the rest the positive.

No model needed, so it runs on any machine, but it is a weaker signal than LLM queries: the query is
prose lifted from the note, not what a clinician would type.

Example:
    >>> from colmed.data_gen.notes import Passage
    >>> text = ("Patient reports chest pain on exertion. ECG shows ST depression in V4 to V6. "
    ...         "Troponin was negative twice. Started on aspirin and a beta blocker.")
    >>> gen = InverseClozeGenerator(queries_per_passage=1, keep_sentence_prob=0.0, seed=1)
    >>> q = gen.generate([Passage("n1#0", "n1", text)]).queries[0]
    >>> q.query in text and q.query not in q.positive
    True
"""

from __future__ import annotations

import re

from colmed.data_gen.generators.base import GeneratedQuery, GenerationResult, passage_rng
from colmed.data_gen.notes import Passage, split_sentences


# "OBJECTIVE:", "HISTORY OF PRESENT ILLNESS:": section labels are layout, not something a searcher types.
_SECTION_LABEL = re.compile(r"^[A-Z][A-Z0-9 &/,()-]{1,60}:\s+")


class InverseClozeGenerator:
    """Pick ``queries_per_passage`` distinct sentences per passage as queries.

    With probability ``keep_sentence_prob`` the sentence stays in the positive (ICT's 10% default),
    so the model also learns that exact overlap is relevant.
    """

    name = "inverse_cloze"

    def __init__(self, queries_per_passage: int = 1, keep_sentence_prob: float = 0.1, min_query_words: int = 4,
                 max_query_words: int = 64, seed: int = 13):
        self.queries_per_passage = queries_per_passage
        self.keep_sentence_prob = keep_sentence_prob
        # ICT needs a sentence with some content; 4 words skips section headers like "PLAN:".
        self.min_query_words = max(min_query_words, 4)
        self.max_query_words = max_query_words
        self.seed = seed

    def generate(self, passages: list[Passage]) -> GenerationResult:
        result = GenerationResult()
        for passage in passages:
            sentences = split_sentences(passage.text)
            usable = [i for i, s in enumerate(sentences)
                      if self.min_query_words <= len(s.split()) <= self.max_query_words]
            if len(sentences) < 2 or not usable:
                result.count("passage_without_query_sentence")
                continue
            rng = passage_rng(self.seed, passage.passage_id)
            picks = rng.sample(usable, min(self.queries_per_passage, len(usable)))
            for j, i in enumerate(picks):
                keep = rng.random() < self.keep_sentence_prob
                rest = sentences if keep else sentences[:i] + sentences[i + 1:]
                body = " ".join(rest)
                positive = f"{passage.title} {body}".strip() if passage.title else body
                positive_id = passage.passage_id if keep else f"{passage.passage_id}:ict{j}"
                query = _SECTION_LABEL.sub("", sentences[i])
                result.queries.append(GeneratedQuery(
                    f"{passage.passage_id}:ict{j}", query, positive_id, passage.passage_id,
                    passage.note_id, positive, generator=self.name, query_type="sentence",
                    evidence=query))
        return result
