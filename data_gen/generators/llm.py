"""LLM query generation: prompt template + backend + parsing with retries and rejects.

For each passage the template asks for ``queries_per_passage`` queries whose types rotate through the
template's mix (MedEmbed: keyword, question, treatment), starting at a per-passage offset so the mix
stays balanced at one query per passage. A reply that fails :func:`~colmed.data_gen.parsing.parse_queries`
is asked again (a new seed) up to ``max_retries`` times; then it is recorded as a reject (note id,
passage id, raw text, error) and the run goes on.

Example:
    >>> from colmed.data_gen.notes import Passage
    >>> from colmed.data_gen.prompts import load_prompt_template
    >>> from colmed.data_gen.backends.base import Completion
    >>> class Echo:  # a stand-in backend that always answers the same JSON
    ...     name, supports_prefill = "echo", False
    ...     def generate(self, conversations, **kw):
    ...         return [Completion('{"queries": [{"type": "keyword", "query": "metformin dose", '
    ...                            '"evidence": "Metformin 500 mg twice daily.", "relevance": 5}]}')
    ...                 for _ in conversations]
    >>> gen = LLMQueryGenerator(Echo(), load_prompt_template(), 1)
    >>> gen.generate([Passage("n1#0", "n1", "Metformin 500 mg twice daily.")]).queries[0].query
    'metformin dose'
"""

from __future__ import annotations

from colmed.core.errors import ColmedError
from colmed.data_gen.generators.base import GeneratedQuery, GenerationResult, passage_rng
from colmed.data_gen.notes import Passage
from colmed.data_gen.parsing import LLMOutputError, parse_queries
from colmed.data_gen.prompts import PromptTemplate


class LLMQueryGenerator:
    """Queries from any :class:`~colmed.data_gen.backends.base.LLMBackend`."""

    name = "llm"

    def __init__(self, backend, template: PromptTemplate, queries_per_passage: int = 1, max_retries: int = 2,
                 max_new_tokens: int = 384, temperature: float = 0.7, seed: int = 13):
        self.backend = backend
        self.template = template
        self.queries_per_passage = queries_per_passage
        self.max_retries = max_retries
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.seed = seed
        self.types = list(template.query_types)

    def types_for(self, passage: Passage) -> list[str]:
        start = passage_rng(self.seed, passage.passage_id).randrange(len(self.types))
        return [self.types[(start + j) % len(self.types)] for j in range(self.queries_per_passage)]

    def generate(self, passages: list[Passage]) -> GenerationResult:
        result = GenerationResult()
        pending = list(passages)
        last: dict[str, tuple[str | None, str]] = {}
        prefix = self.template.assistant_prefix if getattr(self.backend, "supports_prefill", False) else ""
        for attempt in range(self.max_retries + 1):
            if not pending:
                break
            if attempt:
                result.count("retries", len(pending))
            types = {p.passage_id: self.types_for(p) for p in pending}
            conversations = [self.template.messages(p.full_text, types[p.passage_id]) for p in pending]
            try:
                completions = self.backend.generate(
                    conversations, max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                    seed=self.seed + attempt, json_schema=self.template.json_schema(self.queries_per_passage),
                    assistant_prefix=prefix)
            except ColmedError:
                raise  # the backend gave up on the endpoint itself: stop (resumable) rather than reject everything
            except Exception as e:  # a backend failure must not kill a long run; every passage is retried
                result.count("backend_errors")
                for p in pending:
                    last[p.passage_id] = (None, f"backend error: {type(e).__name__}: {e}")
                continue
            still = []
            for passage, completion in zip(pending, completions):
                result.prompt_tokens += completion.prompt_tokens
                result.completion_tokens += completion.completion_tokens
                if completion.error:
                    last[passage.passage_id] = (completion.text, completion.error)
                    still.append(passage)
                    continue
                try:
                    items, invalid = parse_queries(completion.text, self.types, self.template.evidence)
                except LLMOutputError as e:
                    last[passage.passage_id] = (completion.text, str(e))
                    still.append(passage)
                    continue
                if invalid:
                    result.count("invalid_items", invalid)
                for j, item in enumerate(items[:self.queries_per_passage]):
                    result.queries.append(GeneratedQuery(
                        f"{passage.passage_id}:llm{j}", item["query"], passage.passage_id, passage.passage_id,
                        passage.note_id, passage.full_text, generator=f"llm:{getattr(self.backend, 'name', '')}",
                        query_type=item["type"], evidence=item["evidence"], relevance=item["relevance"]))
            pending = still
        for passage in pending:
            raw, error = last.get(passage.passage_id, (None, "no reply"))
            result.rejects.append({"kind": "llm_output", "note_id": passage.note_id,
                                   "passage_id": passage.passage_id, "raw": raw, "error": error,
                                   "attempts": self.max_retries + 1})
        return result
