"""Query generation on Ray Data: any colmed backend on a local Ray (CPU), or ``ray.data.llm`` + vLLM on GPUs.

Optional extra: ``pip install 'colmed[ray]'`` (Ray Data only; CPU-capable) or ``'colmed[ray-vllm]'`` (adds vLLM
for GPU clusters). Ray and vLLM are imported only here. This replaces only the *generation* stage:

* ``backend="vllm"``: Ray Data streams passages through ``ray.data.llm`` vLLM replicas (one per ``replicas``,
  each on ``tensor_parallel_size`` GPUs) with the same prompt template, per-passage query types and JSON
  schema as the single-machine backends, and parses replies with the same validator (no retries there).
* any other backend (``llamacpp``, ``openai``, ``transformers``): ``map_batches`` over a pool of ``replicas``
  actors, each holding ``num_cpus_per_replica`` CPUs. Each actor builds its backend once
  (:func:`~colmed.data_gen.backends.make_backend`) and runs the single-machine
  :class:`~colmed.data_gen.generators.llm.LLMQueryGenerator` on its batches: same prompts, parsing, retries
  and rejects, so with a deterministic backend the queries are exactly those of ``colmed generate``.

Either way the queries land in ``queries_dir`` as parquet (one row per passage: its validated queries as
JSON, or the error and raw reply of a rejected one) plus a ``manifest.json``; the folder appears only when
complete. Mining, filters, the note-level split and the exports then run from those queries with
:func:`mine_from_queries` (the normal resumable pipeline), which is cheap next to generation.
:func:`run_with_ray` does both (``colmed generate --ray``).

Generation is resumable like the single-machine pipeline's. While it runs, each block of passages Ray
finishes is written by the driver, atomically, as one parquet file in ``<queries_dir>.partial/``::

    state.json                          config + generation fingerprint (a resume with other settings is refused)
    _work/generate/part-<sha256>.parquet  one finished block (named by its passage ids)

A rerun of the same command after ``kill -9`` sends Ray only the passages of no finished block, so it
loses at most the blocks in flight and never generates a passage twice; at the end the blocks become
``queries_dir``.

Example (a local Ray on this machine's CPUs, llama.cpp on a GGUF file; ``tests/test_ray_cpu.py`` runs it)::

    from colmed.data_gen.config import GenerateConfig
    from colmed.data_gen.ray_pipeline import run_with_ray
    cfg = GenerateConfig(notes="notes.jsonl", out="runs/mt-llm", generator="llm", backend="llamacpp",
                         model="runs/models/qwen/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", temperature=0.0)
    run_with_ray(cfg, replicas=2, num_cpus_per_replica=1)   # queries in runs/mt-llm-queries, triplets in runs/mt-llm

On a cluster, ``ray.init(address=...)`` first (or set ``RAY_ADDRESS``); without either a local Ray is
started for the call and shut down after it.
For a few machines without Ray, ``colmed generate --shard i/n`` on each plus ``--merge-shards`` gives the same
result with the resumable single-machine pipeline.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from colmed.core.errors import ColmedError, InputError
from colmed.core.system import available_cores
from colmed.data_gen.config import GenerateConfig
from colmed.data_gen.generators.base import GeneratedQuery, GenerationResult
from colmed.data_gen.notes import Passage, chunk_note, load_notes, sample_notes
from colmed.data_gen.parsing import LLMOutputError, parse_queries

logger = logging.getLogger(__name__)

QUERIES_KIND = "colmed-queries"  # manifest kind of a queries folder (colmed.core.io.OUTPUT_KINDS["queries"])
# One row per passage. Batch-level figures (token counts, retries) sit on the first row of their batch,
# so sums over rows are exact.
COLUMNS = {"passage_id": "string", "note_id": "string", "text": "string", "queries": "string", "error": "string",
           "raw": "string", "generator": "string", "attempts": "int64", "prompt_tokens": "int64",
           "completion_tokens": "int64", "counts": "string"}


def _require_ray():
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ColmedError("Ray generation needs the optional extra: pip install 'colmed[ray]'") from None
    return ray


def _require_ray_llm():
    try:
        from ray.data.llm import build_llm_processor, vLLMEngineProcessorConfig
    except ImportError:
        raise ColmedError("Ray generation with vLLM needs the optional extra: pip install 'colmed[ray-vllm]'"
                          ) from None
    return build_llm_processor, vLLMEngineProcessorConfig


def passage_rows(config: GenerateConfig) -> list[dict[str, Any]]:
    """The passages to generate from, as plain rows (Ray Data's input): the sampled notes' chunks."""
    notes, _ = load_notes(config.notes, config.text_field, config.id_field, config.title_field, config.hub_split)
    if config.num_notes is not None and config.num_notes > len(notes):
        raise InputError(f"asks for {config.num_notes} notes but {config.notes} holds {len(notes)} usable ones",
                         field="num_notes")
    rows = []
    for note in sample_notes(notes, config.num_notes, config.seed):
        for p in chunk_note(note, config.chunk_words, config.min_chunk_words):
            rows.append({"passage_id": p.passage_id, "note_id": p.note_id, "text": p.full_text})
    return rows


def _row(passage_id: str, note_id: str, text: str, items: list[dict] | None = None, error: str = "",
         raw: str | None = None, generator: str = "", attempts: int = 1, prompt_tokens: int = 0,
         completion_tokens: int = 0, counts: dict | None = None) -> dict[str, Any]:
    return {"passage_id": passage_id, "note_id": note_id, "text": text, "queries": json.dumps(items or []),
            "error": error, "raw": raw, "generator": generator, "attempts": attempts,
            "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "counts": json.dumps(counts or {})}


def parse_row(row: dict[str, Any], types: list[str], require_evidence: bool = True,
              queries_per_passage: int | None = None, generator: str = "llm:vllm") -> dict[str, Any]:
    """Ray postprocess step of the vLLM path: a passage's validated queries, or the error (a reject).

    The reply is validated as :class:`~colmed.data_gen.generators.llm.LLMQueryGenerator` does it (same
    parser, evidence rule and cap of ``queries_per_passage``), so mining treats it the same way.
    """
    tokens = {"prompt_tokens": int(row.get("num_input_tokens") or 0),
              "completion_tokens": int(row.get("num_generated_tokens") or 0)}
    try:
        items, invalid = parse_queries(row.get("generated_text"), types, require_evidence)
    except LLMOutputError as e:
        # "" rather than None: the vLLM path's parquet schema is inferred per block and must not vary
        return _row(row["passage_id"], row["note_id"], row["text"], error=str(e),
                    raw=row.get("generated_text") or "", generator=generator, **tokens)
    return _row(row["passage_id"], row["note_id"], row["text"], items[:queries_per_passage], raw="",
                generator=generator, counts={"invalid_items": invalid} if invalid else None, **tokens)


def query_rows(passages: list[Passage], result: GenerationResult) -> list[dict[str, Any]]:
    """One row per passage from a generator's result on a batch (the parquet rows of the CPU path)."""
    queries: dict[str, list[GeneratedQuery]] = defaultdict(list)
    for q in result.queries:
        queries[q.source_passage_id].append(q)
    rejects = {r["passage_id"]: r for r in result.rejects}
    rows = []
    for i, p in enumerate(passages):
        batch_figures = ({"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
                          "counts": dict(result.counts)} if i == 0 else {})
        reject = rejects.get(p.passage_id)
        if reject is not None:
            rows.append(_row(p.passage_id, p.note_id, p.full_text, error=reject["error"], raw=reject["raw"],
                             attempts=reject["attempts"], **batch_figures))
            continue
        mine = queries.get(p.passage_id, [])
        items = [{"type": q.query_type, "query": q.query, "evidence": q.evidence, "relevance": q.relevance}
                 for q in mine]
        rows.append(_row(p.passage_id, p.note_id, p.full_text, items, generator=mine[0].generator if mine else "",
                         **batch_figures))
    return rows


def _arrow_schema():
    import pyarrow as pa

    return pa.schema([(name, getattr(pa, kind)()) for name, kind in COLUMNS.items()])


class BackendQueryGenerator:
    """The ``map_batches`` callable of the CPU path: one per actor, holding one backend for its lifetime.

    It runs the single-machine generator (:func:`~colmed.data_gen.generators.make_generator`) on each
    batch of passage rows, so prompts, parsing, retries and rejects are those of ``colmed generate``.
    """

    def __init__(self, config: GenerateConfig):
        from colmed.data_gen.backends import make_backend
        from colmed.data_gen.generators import make_generator

        self.generator = make_generator(config, make_backend(config))

    def __call__(self, batch):
        import pyarrow as pa

        passages = [Passage(r["passage_id"], r["note_id"], r["text"]) for r in batch.to_pylist()]
        return pa.Table.from_pylist(query_rows(passages, self.generator.generate(passages)), schema=_arrow_schema())


@contextmanager
def _ray_session(num_cpus: int):
    """The Ray this process already uses, the cluster ``RAY_ADDRESS`` names, or a local one for the call."""
    ray = _require_ray()
    if ray.is_initialized():
        yield ray
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init()
    else:
        # Logical CPUs: the replicas' plus one for Ray Data's read and write tasks, whatever the cores.
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def _queries_manifest(queries_dir: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((queries_dir / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("kind") == QUERIES_KIND else None


def _reusable(config: GenerateConfig, queries_dir: Path) -> dict[str, Any] | None:
    """The manifest of finished queries of these settings in ``queries_dir``, None if there are none to reuse.

    Queries of other settings are refused (an :class:`InputError` naming the folder) unless
    ``config.overwrite``: they took a cluster hours to make.
    """
    if not queries_dir.exists() or (queries_dir.is_dir() and not any(queries_dir.iterdir())):
        return None
    manifest = _queries_manifest(queries_dir)
    if manifest is not None and manifest.get("generation_fingerprint") == config.generation_fingerprint():
        return manifest
    if config.overwrite:
        return None
    what = "queries generated with other settings" if manifest else "files colmed did not write"
    raise InputError(f"holds {what}; pass --overwrite to replace them or choose another queries folder",
                     path=queries_dir, field="queries_dir")


def generate_queries_with_ray(config: GenerateConfig, queries_dir: str | Path, replicas: int = 1,
                              num_cpus_per_replica: int | None = None, batch_size: int | None = None
                              ) -> dict[str, Any]:
    """Generate LLM queries for every sampled passage on Ray Data; write parquet + manifest to ``queries_dir``.

    ``backend="vllm"`` runs ``ray.data.llm`` on GPUs; any other backend runs on ``replicas`` actors of
    ``num_cpus_per_replica`` CPUs (default: this machine's cores shared out when Ray is started here, else
    ``config.threads`` or 1; the llamacpp backend gets that many threads unless ``config.threads`` is set),
    ``batch_size`` passages (default 16) per call of the backend and per checkpointed block.
    Finished queries of the same settings already in ``queries_dir`` are reused, not regenerated; the
    finished blocks of an interrupted run of the same settings are kept and only the rest is generated.
    Returns the queries' manifest.
    """
    from colmed.core.io import atomic_directory, check_output, output_lock, remove_temp_files, write_json
    from colmed.core.provenance import run_manifest
    from colmed.data_gen.pipeline import GENERATION_PACKAGES, input_hash, model_identity

    config = config.validate()
    if config.generator != "llm":
        raise InputError("Ray generation runs an LLM; the LLM-free generators need no cluster (run colmed "
                         "generate without --ray)", field="generator")
    if config.shard:
        raise InputError("Ray generation covers every passage; --shard is for the single-machine pipeline",
                         field="shard")
    if replicas < 1 or (num_cpus_per_replica is not None and num_cpus_per_replica < 1):
        raise InputError(f"need at least 1 replica of at least 1 CPU, got {replicas} x {num_cpus_per_replica}",
                         field="replicas")
    if batch_size is not None and batch_size < 1:
        raise InputError(f"must be at least 1, got {batch_size}", field="batch_size")
    queries_dir = Path(queries_dir)
    reused = _reusable(config, queries_dir)
    if reused is not None:
        return reused
    # overwrite=True: _reusable already refused what --overwrite does not allow to replace; this refuses a
    # folder colmed did not write, before Ray starts
    check_output(queries_dir, overwrite=True, kind="queries")
    partial, rows = queries_dir.with_name(queries_dir.name + ".partial"), None
    if partial.exists():  # an unfinished run this command may not resume is refused before Ray is looked for
        rows = passage_rows(config)
        _refuse_unresumable(config, partial, rows)
    ray = _require_ray()
    vllm_processor = _require_ray_llm() if config.backend == "vllm" else None  # before anything starts
    rows = rows if rows is not None else passage_rows(config)
    local = not ray.is_initialized() and not os.environ.get("RAY_ADDRESS")
    cpus = num_cpus_per_replica or (max(1, available_cores() // replicas) if local else (config.threads or 1))
    if config.backend == "llamacpp" and config.threads is None:
        config = config.replace(threads=cpus)

    # The whole run holds the folder's writer lock: a second driver fails at once instead of sharing blocks.
    with output_lock(queries_dir):
        reused = _reusable(config, queries_dir)  # a writer that held the lock a moment ago may have finished
        if reused is not None:
            return reused
        work, done = _open_work_area(config, partial, rows)
        remove_temp_files(partial, recursive=True)  # a killed driver's half-written block (we hold the lock)
        todo = [r for r in rows if r["passage_id"] not in done]
        if done:
            logger.info("resuming %s: %d of %d passages already generated", partial, len(done), len(rows))
        t0 = time.perf_counter()
        if todo:
            with _ray_session(replicas * cpus + 1) as ray:
                ray.data.DataContext.get_current().enable_progress_bars = config.progress
                if vllm_processor is not None:
                    ds = ray.data.from_items(todo)
                    processed = _vllm_processor(config, replicas, batch_size or 64, *vllm_processor)(ds)
                else:
                    size = batch_size or 16
                    # one input block per backend batch, so each finished batch reaches the driver as one block
                    ds = ray.data.from_items(todo, override_num_blocks=-(-len(todo) // size))
                    processed = ds.map_batches(
                        BackendQueryGenerator, fn_constructor_args=(config,), batch_format="pyarrow",
                        batch_size=size, num_cpus=cpus, compute=ray.data.ActorPoolStrategy(size=replicas))
                for block in processed.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0):
                    _write_block(work, block)
        seconds = time.perf_counter() - t0

        with atomic_directory(queries_dir, overwrite=True, kind="queries", locked=True) as tmp:
            parts = sorted(work.glob("part-*.parquet"))
            for part in parts:
                # linked, not moved: a kill before the swap leaves every block in the work area for the rerun
                try:
                    os.link(part, tmp / part.name)
                except OSError:
                    shutil.copy2(part, tmp / part.name)
            if not parts:  # no note long enough for a passage: an empty result, as the single-machine pipeline gives
                import pyarrow.parquet as pq

                pq.write_table(_arrow_schema().empty_table(), tmp / "empty.parquet")
            counts = _count(tmp)
            _check_complete(tmp, rows)
            manifest = run_manifest(
                config.to_dict(), packages=GENERATION_PACKAGES, kind=QUERIES_KIND, format_version=1,
                generation_fingerprint=config.generation_fingerprint(), input=input_hash(config.notes),
                model=model_identity(config), counts=counts,
                ray={"replicas": replicas, "num_cpus_per_replica": cpus,
                     "engine": "ray.data.llm" if config.backend == "vllm" else "map_batches"},
                throughput={"generate_seconds": round(seconds, 3), "passages_generated": len(todo),
                            "passages_resumed": len(rows) - len(todo),
                            "passages_per_second": round(len(todo) / seconds, 3) if todo and seconds else None})
            write_json(tmp / "manifest.json", manifest)
        shutil.rmtree(partial, ignore_errors=True)
    return manifest


def _refuse_unresumable(config: GenerateConfig, partial: Path, rows: list[dict[str, Any]]) -> bool:
    """Refuse, touching nothing, an unfinished run in ``partial`` that this command may not resume or replace:
    finished blocks of other generation settings, or blocks whose passages the notes no longer give, unless
    ``--overwrite`` (the first changed setting is named). Returns whether ``partial`` is to be started over."""
    from colmed.data_gen.pipeline import read_state, refuse_changed_settings

    if not partial.exists():
        return False
    state, work = read_state(partial / "state.json"), partial / "_work" / "generate"
    if state.get("generation_fingerprint") == config.generation_fingerprint():
        stale = _stale_blocks(work, rows)
        if stale and not config.overwrite:
            raise InputError(f"unfinished Ray generation holds passages that the notes no longer give "
                             f"({stale}); pass --overwrite to start over", path=partial, field="notes")
        return stale is not None
    if any(work.glob("part-*.parquet")) and not config.overwrite:
        refuse_changed_settings(state, config, partial, "an unfinished Ray generation")
    return True


def _open_work_area(config: GenerateConfig, partial: Path, rows: list[dict[str, Any]]) -> tuple[Path, set[str]]:
    """Start or resume the blocks in ``partial``; returns the blocks' folder and the passages they hold.

    As :meth:`TripletPipeline._open_partial <colmed.data_gen.pipeline.TripletPipeline>` resumes: same generation
    settings, resume; other settings, refused naming the first changed one (``--overwrite`` starts over),
    unless no block had finished. Blocks whose passages are not this run's (the notes changed under the same
    path) are refused the same way.
    """
    from colmed.core.io import write_json

    # checked again under the lock: another driver may have written blocks since the check before Ray started
    if _refuse_unresumable(config, partial, rows):
        shutil.rmtree(partial)
    state_path, work = partial / "state.json", partial / "_work" / "generate"
    work.mkdir(parents=True, exist_ok=True)
    if not state_path.is_file():
        write_json(state_path, {"generation_fingerprint": config.generation_fingerprint(),
                                "config": config.to_dict()})
    return work, _block_passages(work)


def _block_passages(work: Path) -> set[str]:
    import pyarrow.parquet as pq

    done: set[str] = set()
    for part in sorted(work.glob("part-*.parquet")):
        done.update(pq.read_table(part, columns=["passage_id"]).column("passage_id").to_pylist())
    return done


def _stale_blocks(work: Path, rows: list[dict[str, Any]]) -> str | None:
    """The first finished block holding a passage this run does not have (or has with another text), or None."""
    import pyarrow.parquet as pq

    text_of = {r["passage_id"]: r["text"] for r in rows}
    for part in sorted(work.glob("part-*.parquet")):
        table = pq.read_table(part, columns=["passage_id", "text"]).to_pylist()
        for r in table:
            if text_of.get(r["passage_id"]) != r["text"]:
                return f"{part.name}: passage {r['passage_id']}"
    return None


def _write_block(work: Path, block) -> None:
    """One finished block of query rows, atomically, as ``part-<sha256 of its passage ids>.parquet``."""
    import pyarrow.parquet as pq

    from colmed.core.io import atomic_write

    if block.num_rows == 0:
        return
    table = block.select(list(COLUMNS)).cast(_arrow_schema())
    ids = table.column("passage_id").to_pylist()
    name = "part-" + hashlib.sha256("\n".join(ids).encode("utf-8")).hexdigest()[:20] + ".parquet"
    with atomic_write(work / name, "wb") as f:
        pq.write_table(table, f)


def _check_complete(folder: Path, rows: list[dict[str, Any]]) -> None:
    """Every passage exactly once: a block lost or written twice must fail here, not skew the triplets."""
    import pyarrow.parquet as pq

    got = pq.read_table(sorted(str(p) for p in folder.glob("*.parquet")), columns=["passage_id"]
                        ).column("passage_id").to_pylist()
    want = {r["passage_id"] for r in rows}
    if len(got) != len(set(got)) or set(got) != want:
        raise ColmedError(f"Ray wrote {len(got)} passage rows ({len(set(got))} distinct) for {len(want)} passages")


def _count(folder: Path) -> dict[str, Any]:
    """Passages, queries, rejects, tokens and generator counters of the parquet rows in ``folder``."""
    import pyarrow.parquet as pq

    table = pq.read_table(sorted(str(p) for p in folder.glob("*.parquet")))
    generator: dict[str, int] = {}
    for c in table.column("counts").to_pylist():
        for k, v in json.loads(c or "{}").items():
            generator[k] = generator.get(k, 0) + v
    errors = table.column("error").to_pylist()
    return {"passages": table.num_rows, "rejected_outputs": sum(bool(e) for e in errors),
            "queries": sum(len(json.loads(q)) for q in table.column("queries").to_pylist()),
            "prompt_tokens": sum(table.column("prompt_tokens").to_pylist()),
            "completion_tokens": sum(table.column("completion_tokens").to_pylist()), "generator": generator}


def _vllm_processor(config: GenerateConfig, replicas: int, batch_size: int, build_llm_processor,
                    vLLMEngineProcessorConfig):
    """``ray.data.llm``'s vLLM processor: the single-machine template, types and validator around vLLM."""
    from colmed.data_gen.generators import make_generator

    generator = make_generator(config)  # its template and per-passage type rotation; vLLM is the backend
    template, n = generator.template, config.queries_per_note
    schema = template.json_schema(n)
    return build_llm_processor(
        vLLMEngineProcessorConfig(model_source=config.model, concurrency=replicas, batch_size=batch_size,
                                  engine_kwargs={"tensor_parallel_size": config.tensor_parallel_size}),
        preprocess=lambda row: {
            **row,
            "messages": template.messages(row["text"], generator.types_for(
                Passage(row["passage_id"], row["note_id"], row["text"]))),
            "sampling_params": {"temperature": config.temperature, "max_tokens": config.max_new_tokens,
                                "seed": config.seed, "structured_outputs": {"json": schema}},
        },
        postprocess=lambda row: parse_row(row, generator.types, template.evidence, n),
    )


class PregeneratedQueries:
    """A query generator that serves queries generated elsewhere (rows as :func:`query_rows` and
    :func:`parse_row` write them).

    Plugged into :class:`~colmed.data_gen.pipeline.TripletPipeline` it lets filters, mining, splits and
    exports run unchanged, resumably, on queries a Ray cluster produced; token counts, retry counters and
    rejects carry over, so the manifest counts those of a single-machine run.
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
            result.prompt_tokens += int(row.get("prompt_tokens") or 0)
            result.completion_tokens += int(row.get("completion_tokens") or 0)
            for key, n in json.loads(row.get("counts") or "{}").items():
                result.count(key, n)
            if row.get("error"):
                result.rejects.append({"kind": "llm_output", "note_id": p.note_id, "passage_id": p.passage_id,
                                       "raw": row.get("raw"), "error": row["error"],
                                       "attempts": int(row.get("attempts") or 1)})
                continue
            for j, item in enumerate(json.loads(row["queries"])):
                result.queries.append(GeneratedQuery(
                    f"{p.passage_id}:llm{j}", item["query"], p.passage_id, p.passage_id, p.note_id, p.full_text,
                    generator=row.get("generator") or self.generator_name, query_type=item["type"],
                    evidence=item["evidence"], relevance=item["relevance"]))
        return result


def mine_from_queries(config: GenerateConfig, queries_dir: str | Path, record_check: Any = None) -> dict[str, Any]:
    """Run filters, mining, split and exports on the parquet queries of :func:`generate_queries_with_ray`.

    ``record_check`` is :class:`colmed.data_gen.pipeline.TripletPipeline`'s (e.g. a contamination check).

    Queries whose manifest records other generation settings than ``config``'s are refused.
    """
    import datasets

    from colmed.data_gen.pipeline import TripletPipeline

    files = sorted(str(p) for p in Path(queries_dir).glob("*.parquet"))
    if not files:
        raise InputError("no parquet files of generated queries", path=queries_dir)
    manifest = _queries_manifest(Path(queries_dir))
    if manifest is not None and manifest.get("generation_fingerprint") != config.generation_fingerprint():
        from colmed.data_gen.pipeline import _changed_settings

        changed = _changed_settings(manifest.get("config"), config.to_dict())
        what = ", ".join(f"{k}: {old!r} -> {new!r}" for k, old, new in changed) or "another colmed version"
        raise InputError(f"these queries were generated with other settings ({what})", path=queries_dir,
                         field=changed[0][0] if changed else None)
    rows = datasets.Dataset.from_parquet(files).to_list()
    return TripletPipeline(config, generator=PregeneratedQueries(rows), record_check=record_check).run()


def default_queries_dir(config: GenerateConfig) -> Path:
    """Where :func:`run_with_ray` keeps the queries by default: ``<out>-queries`` beside ``<out>``.

    Example:
        >>> default_queries_dir(GenerateConfig(notes="n.jsonl", out="runs/mt-llm")).as_posix()
        'runs/mt-llm-queries'
    """
    out = Path(config.out)
    return out.with_name(out.name + "-queries")


def run_with_ray(config: GenerateConfig, queries_dir: str | Path | None = None, replicas: int = 1,
                 num_cpus_per_replica: int | None = None, batch_size: int | None = None,
                 record_check: Any = None) -> dict[str, Any]:
    """``colmed generate --ray``: queries on Ray (:func:`generate_queries_with_ray`, reused when already
    there), then the single-machine filters, mining, split and exports (:func:`mine_from_queries`).

    The triplets output is checked before any generation, so a refusal costs nothing. Returns the
    triplets' manifest.
    """
    from colmed.core.io import check_output

    config = config.validate()
    check_output(config.out, config.overwrite, kind="triplets",
                 inputs=[config.notes if Path(config.notes).exists() else None])
    queries_dir = Path(queries_dir) if queries_dir is not None else default_queries_dir(config)
    generate_queries_with_ray(config, queries_dir, replicas, num_cpus_per_replica, batch_size)
    return mine_from_queries(config, queries_dir, record_check=record_check)
