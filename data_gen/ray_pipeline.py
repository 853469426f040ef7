"""Scale-out query generation with Ray Data + vLLM (``ray.data.llm``) for millions of notes.

Optional extra: ``pip install 'colmed[ray]'`` on a GPU cluster. Ray and vLLM are imported only here.
This replaces only the *generation* stage: Ray Data streams passages through vLLM replicas (one per
``replicas``, each on ``tensor_parallel_size`` GPUs) with the same prompt template and JSON schema as
the single-machine backends, parses replies with the same validator, and writes the queries as
parquet shards. Mining, filters, the note-level split and the exports then run as usual from those
queries with :func:`mine_from_queries`, which is cheap next to generation.

Example (on a Ray cluster)::

    from colmed.data_gen.config import GenerateConfig
    from colmed.data_gen.ray_pipeline import generate_queries_with_ray
    cfg = GenerateConfig(notes="notes.jsonl", out="runs/big", generator="llm", backend="vllm",
                         model="Qwen/Qwen2.5-7B-Instruct", queries_per_note=3)
    generate_queries_with_ray(cfg, queries_dir="runs/big-queries", replicas=8)   # parquet of queries

For a few GPUs without Ray, ``colmed generate --shard i/n`` on each machine plus ``--merge-shards``
gives the same result with the resumable single-machine pipeline.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from colmed.core.errors import ColmedError
from colmed.data_gen.config import GenerateConfig
from colmed.data_gen.generators.base import GeneratedQuery, GenerationResult
from colmed.data_gen.notes import Passage, chunk_note, load_notes, sample_notes
from colmed.data_gen.parsing import LLMOutputError, parse_queries
from colmed.data_gen.prompts import load_prompt_template


def _require_ray():
    try:
        import ray  # noqa: F401
        from ray.data.llm import build_llm_processor, vLLMEngineProcessorConfig
    except ImportError:
        raise ColmedError("Ray generation needs the optional extra: pip install 'colmed[ray]'") from None
    return build_llm_processor, vLLMEngineProcessorConfig


def passage_rows(config: GenerateConfig) -> list[dict[str, Any]]:
    """The passages to generate from, as plain rows (Ray Data's input)."""
    notes, _ = load_notes(config.notes, config.text_field, config.id_field, config.title_field, config.hub_split)
    rows = []
    for note in sample_notes(notes, config.num_notes, config.seed):
        for p in chunk_note(note, config.chunk_words, config.min_chunk_words):
            rows.append({"passage_id": p.passage_id, "note_id": p.note_id, "text": p.full_text})
    return rows


def parse_row(row: dict[str, Any], types: list[str]) -> dict[str, Any]:
    """Ray postprocess step: validated queries as a JSON string, or the error (reject)."""
    try:
        items, _ = parse_queries(row.get("generated_text"), types)
        return {"passage_id": row["passage_id"], "note_id": row["note_id"], "text": row["text"],
                "queries": json.dumps(items), "error": "", "raw": ""}
    except LLMOutputError as e:
        return {"passage_id": row["passage_id"], "note_id": row["note_id"], "text": row["text"],
                "queries": "[]", "error": str(e), "raw": row.get("generated_text") or ""}


def generate_queries_with_ray(config: GenerateConfig, queries_dir: str | Path, replicas: int = 1,
                              batch_size: int = 64) -> None:
    """Generate LLM queries for every passage with ``ray.data.llm`` + vLLM; write parquet to ``queries_dir``."""
    build_llm_processor, vLLMEngineProcessorConfig = _require_ray()
    import ray

    template = load_prompt_template(config.prompts)
    types = list(template.query_types)
    schema = template.json_schema(config.queries_per_note)
    processor = build_llm_processor(
        vLLMEngineProcessorConfig(model_source=config.model, concurrency=replicas, batch_size=batch_size,
                                  engine_kwargs={"tensor_parallel_size": config.tensor_parallel_size}),
        preprocess=lambda row: {
            **row,
            "messages": template.messages(row["text"], [types[i % len(types)] for i in range(config.queries_per_note)]),
            "sampling_params": {"temperature": config.temperature, "max_tokens": config.max_new_tokens,
                                "structured_outputs": {"json": schema}},
        },
        postprocess=lambda row: parse_row(row, types),
    )
    ds = ray.data.from_items(passage_rows(config))
    processor(ds).write_parquet(str(queries_dir))


class PregeneratedQueries:
    """A query generator that serves queries generated elsewhere (rows as :func:`parse_row` writes them).

    Plugged into :class:`~colmed.data_gen.pipeline.TripletPipeline` it lets filters, mining, splits and
    exports run unchanged, resumably, on queries a Ray cluster produced.
    """

    name = "pregenerated"

    def __init__(self, rows: list[dict[str, Any]], generator_name: str = "llm:vllm"):
        self.by_passage = {r["passage_id"]: r for r in rows}
        self.generator_name = generator_name

    def generate(self, passages: list[Passage]) -> GenerationResult:
        result = GenerationResult()
        for p in passages:
            row = self.by_passage.get(p.passage_id)
            if row is None:
                result.count("passage_not_generated")
                continue
            if row.get("error"):
                result.rejects.append({"kind": "llm_output", "note_id": p.note_id, "passage_id": p.passage_id,
                                       "raw": row.get("raw"), "error": row["error"], "attempts": 1})
                continue
            for j, item in enumerate(json.loads(row["queries"])):
                result.queries.append(GeneratedQuery(
                    f"{p.passage_id}:llm{j}", item["query"], p.passage_id, p.passage_id, p.note_id, p.full_text,
                    generator=self.generator_name, query_type=item["type"], evidence=item["evidence"],
                    relevance=item["relevance"]))
        return result


def mine_from_queries(config: GenerateConfig, queries_dir: str | Path) -> dict[str, Any]:
    """Run filters, mining, split and exports on the parquet queries of :func:`generate_queries_with_ray`."""
    import datasets

    from colmed.data_gen.pipeline import TripletPipeline

    files = sorted(str(p) for p in Path(queries_dir).glob("*.parquet"))
    if not files:
        from colmed.core.errors import InputError
        raise InputError("no parquet files of generated queries", path=queries_dir)
    rows = datasets.Dataset.from_parquet(files).to_list()
    return TripletPipeline(config, generator=PregeneratedQueries(rows)).run()
