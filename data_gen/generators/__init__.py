"""Query generators: each turns passages into (query, positive) pairs.

``inverse_cloze`` and ``cropping`` need no model and run anywhere; they are weaker training signal than
an LLM's queries (the query is a verbatim sentence or span of the positive, so they teach lexical
overlap more than clinical intent). ``llm`` asks a language model for MedEmbed-style queries.
"""

from colmed.data_gen.generators.base import GeneratedQuery, GenerationResult, QueryGenerator, passage_rng

__all__ = ["GeneratedQuery", "GenerationResult", "QueryGenerator", "passage_rng", "make_generator"]


def make_generator(config, backend=None) -> QueryGenerator:
    """The generator named by ``config.generator`` (an ``llm`` one needs a ``backend``)."""
    if config.generator == "inverse_cloze":
        from colmed.data_gen.generators.inverse_cloze import InverseClozeGenerator
        return InverseClozeGenerator(config.queries_per_note, config.keep_sentence_prob, config.min_query_words,
                                     config.max_query_words, config.seed)
    if config.generator == "cropping":
        from colmed.data_gen.generators.cropping import IndependentCroppingGenerator
        return IndependentCroppingGenerator(config.queries_per_note, config.crop_min_ratio, config.crop_max_ratio,
                                            config.max_query_words, config.seed)
    from colmed.data_gen.generators.llm import LLMQueryGenerator
    from colmed.data_gen.prompts import load_prompt_template
    return LLMQueryGenerator(backend, load_prompt_template(config.prompts), config.queries_per_note,
                             max_retries=config.max_retries, max_new_tokens=config.max_new_tokens,
                             temperature=config.temperature, seed=config.seed)
