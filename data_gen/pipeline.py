"""The resumable notes -> queries -> filters -> hard negatives -> triplets pipeline behind ``colmed generate``.

Layout while running (``<out>.partial/``, renamed to ``<out>`` only when everything is written)::

    state.json                     config + fingerprint (a resume with other settings is refused)
    _work/generate/part-00007.*    per batch of notes: queries.jsonl, rejects.jsonl, done.json
    _work/mine/part-00003.*        per batch of queries: records.jsonl, done.json

Each part's ``done.json`` is written last; a part without it is redone from scratch (its files are
replaced atomically), so ``kill -9`` at any moment loses at most the batch in flight and never
duplicates a record. Finished output (``<out>``)::

    triplets.jsonl  train/triplets.jsonl  dev/triplets.jsonl  triplets.parquet  rejects.jsonl
    export/sentence_transformers/{train,dev}.jsonl
    export/colbert/{triples.jsonl,dev_triples.jsonl,collection.tsv,queries.tsv,id_map.json}
    generation/part-00007.*        the generation parts, kept for a rerun with other late settings
    manifest.json                  config, versions, git sha, input hash, counts per stage/filter, throughput,
                                   generation (the fingerprint of the settings that shaped the parts)

The query filters, dedup, mining, split and exports run after generation
(:data:`~colmed.data_gen.config.LATE_SETTINGS`): ``--overwrite`` onto a finished output whose queries were
generated with the same settings, from the same notes and model, reuses its ``generation/`` parts and redoes
only those steps; any other change regenerates.

Example (the bundled sample's corpus as notes; real notes: ``notes="../shared/notes/mtsamples.jsonl"``):
    >>> import tempfile
    >>> from importlib.resources import files
    >>> from pathlib import Path
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     cfg = GenerateConfig(notes=str(files("colmed") / "data" / "sample_medical"), out=f"{tmp}/triplets",
    ...                          num_notes=20, progress=False)
    ...     manifest = TripletPipeline(cfg).run()
    ...     sorted(p.name for p in Path(tmp, "triplets").iterdir())
    ['dev', 'export', 'generation', 'manifest.json', 'rejects.jsonl', 'train', 'triplets.jsonl', 'triplets.parquet']
    >>> manifest["counts"]["records"]["total"], manifest["counts"]["records"]["dev"]
    (5, 1)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

from colmed.core.errors import IndexExistsError, InputError
from colmed.core.io import (atomic_directory, check_output, output_lock, read_jsonl, remove_temp_files, write_json,
                            write_jsonl)
from colmed.core.provenance import run_manifest, sha256_file
from colmed.data_gen.config import LATE_SETTINGS, GenerateConfig, parse_shard
from colmed.data_gen.filters import QueryFilter, dedup_queries
from colmed.data_gen.generators import GeneratedQuery, make_generator
from colmed.data_gen.notes import Passage, chunk_note, in_shard, load_notes, note_split, sample_notes
from colmed.data.triplets import TripletRecord, read_triplets, write_triplets

logger = logging.getLogger(__name__)

MINE_BATCH = 512
GENERATION_FOLDER = "generation"  # a finished output's copy of the generation parts
FINAL_FILES = ("triplets.jsonl", "triplets.parquet", "rejects.jsonl", "manifest.json")


def _merge_counts(total: dict, part: dict) -> None:
    for k, v in part.items():
        if isinstance(v, dict):
            _merge_counts(total.setdefault(k, {}), v)
        elif isinstance(v, (int, float)):
            total[k] = total.get(k, 0) + v


def input_hash(source: str) -> dict[str, Any]:
    r"""sha256 of the notes file (or a BEIR folder's corpus.jsonl, or of a notes folder's ``*.jsonl`` files, each
    hashed and named, read as :func:`~colmed.data_gen.notes.load_notes` reads them); hub sources are named,
    not hashed.

    Example:
        >>> import pathlib, tempfile
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> _ = (folder / "a.jsonl").write_text('{"id": "n1", "text": "Chest pain."}\n')
        >>> before = input_hash(str(folder))
        >>> sorted(before["files"]), len(before["sha256"])
        (['a.jsonl'], 64)
        >>> _ = (folder / "b.jsonl").write_text('{"id": "n2", "text": "Cough."}\n')
        >>> input_hash(str(folder))["sha256"] != before["sha256"]
        True
    """
    p = Path(source)
    if p.is_dir() and not (p / "corpus.jsonl").is_file():
        files = {f.name: sha256_file(f) for f in sorted(p.glob("*.jsonl"))}
        combined = hashlib.sha256("".join(f"{name}\t{digest}\n" for name, digest in files.items()).encode())
        return {"path": str(p.resolve()), "sha256": combined.hexdigest(), "files": files}
    if p.is_dir():
        p = p / "corpus.jsonl"
    if p.is_file():
        return {"path": str(p.resolve()), "sha256": sha256_file(p)}
    return {"hub": source}


# Packages that decide what a generation run writes, beyond the ones every manifest lists.
GENERATION_PACKAGES = ("datasets", "httpx", "vllm", "ray", "llama-cpp-python", "gguf")


def model_identity(config: GenerateConfig) -> dict[str, Any] | None:
    """What wrote the queries: the LLM backend, and the model's name or its local GGUF file's path and sha256."""
    if config.generator != "llm":
        return None
    gguf = config.gguf_path()
    if gguf is not None:
        return {"backend": config.backend, "path": str(gguf.resolve()), "sha256": sha256_file(gguf)}
    return {"backend": config.backend, "name": config.model}


class TripletPipeline:
    """Run (or resume) one ``colmed generate`` job described by a :class:`GenerateConfig`.

    ``backend`` overrides the LLM backend built from the config (tests pass a scripted one);
    ``generator`` overrides the whole query generator (e.g. queries produced on a Ray cluster, see
    :mod:`colmed.data_gen.ray_pipeline`). ``record_check`` is called with (records, output folder) after
    mining and before anything is written; it returns (records to write, summary), e.g.
    :class:`colmed.eval.contamination.TrainingSetCheck` (its reports are written beside the triplets and its
    summary goes into the manifest's ``counts.contamination``).
    """

    def __init__(self, config: GenerateConfig, backend: Any = None, generator: Any = None,
                 record_check: Any = None):
        self.config = config.validate()
        self.shard = parse_shard(config.shard) if config.shard else None
        out = Path(config.out)
        if self.shard:
            out = out / f"shard-{self.shard[0]}-of-{self.shard[1]}"
        self.out = out
        self.partial = out.with_name(out.name + ".partial")
        self.work = self.partial / "_work"
        self._backend = backend
        self._generator = generator
        self._record_check = record_check
        self._reused_generation = False
        self._identity_cache: tuple[dict[str, str], dict[str, Any] | None] | None = None

    # ---------------------------------------------------------------- run
    def run(self) -> dict[str, Any]:
        """Generate, filter, mine and write everything; returns the manifest.

        The whole run holds ``out``'s writer lock (:func:`colmed.core.io.output_lock`): a second
        ``colmed generate`` to the same ``--out`` fails at once instead of sharing the checkpoints.
        """
        cfg = self.config
        inputs = [cfg.notes if Path(cfg.notes).exists() else None]
        check_output(self.out, cfg.overwrite, kind="triplets", inputs=inputs)
        with output_lock(self.out):
            check_output(self.out, cfg.overwrite, kind="triplets", inputs=inputs)
            return self._run()

    def _run(self) -> dict[str, Any]:
        cfg = self.config
        t_start = time.perf_counter()
        t0 = time.perf_counter()
        # Inputs are read before the checkpoint folder exists: a typo'd input leaves nothing behind.
        all_notes, issues = load_notes(cfg.notes, cfg.text_field, cfg.id_field, cfg.title_field, cfg.hub_split)
        if cfg.num_notes is not None and cfg.num_notes > len(all_notes):
            raise InputError(f"asks for {cfg.num_notes} notes but {cfg.notes} holds {len(all_notes)} usable ones",
                             field="num_notes")
        notes = sample_notes(all_notes, cfg.num_notes, cfg.seed)
        self._open_partial()
        remove_temp_files(self.partial, recursive=True)  # a killed run's half-written files (we hold the lock)
        # The mining corpus is every sampled note's passages, whatever the shard: shards then mine the
        # same corpus and a merge is consistent.
        passages = {p.passage_id: p for n in notes for p in chunk_note(n, cfg.chunk_words, cfg.min_chunk_words)}
        my_notes = [n for n in notes if in_shard(n.note_id, self.shard)]
        load_seconds = time.perf_counter() - t0
        counts: dict[str, Any] = {
            "notes": {"read": len(all_notes), "bad": dict(issues.counts), "sampled": len(notes),
                      "in_shard": len(my_notes)},
            "passages": {"corpus": len(passages)},
        }

        queries, gen_counts, gen_seconds, tokens, filter_rejects = self._generate(my_notes, passages)
        counts["generation"] = gen_counts
        if cfg.dedup:
            queries, n_dup = dedup_queries(queries)
            counts["filters"] = {**gen_counts.pop("filters", {}), "duplicate": n_dup}
        else:
            counts["filters"] = gen_counts.pop("filters", {})

        records, mine_counts, mine_seconds = self._mine(queries, passages)
        counts["filters"]["round_trip"] = mine_counts.pop("round_trip", 0)
        counts["mining"] = mine_counts
        counts["queries_after_filters"] = len(records)
        if self._record_check is not None:
            records, counts["contamination"] = self._record_check(records, self.partial)

        t0 = time.perf_counter()
        rejects = list(issues.items) + self._read_parts("generate", "rejects.jsonl") + filter_rejects
        manifest = self._write_outputs(records, rejects, counts)
        write_seconds = time.perf_counter() - t0
        notes_done = counts["generation"].get("notes", 0)
        manifest["throughput"] = {
            "load_seconds": round(load_seconds, 3),
            "generate_seconds": round(gen_seconds, 3),
            "mine_seconds": round(mine_seconds, 3),
            "write_seconds": round(write_seconds, 3),
            "this_invocation_seconds": round(time.perf_counter() - t_start, 3),
            "notes_per_second": round(notes_done / gen_seconds, 3) if gen_seconds else None,
            "queries_per_second_mining": round(len(records) / mine_seconds, 3) if mine_seconds else None,
            "prompt_tokens": tokens[0], "completion_tokens": tokens[1],
            "completion_tokens_per_second": round(tokens[1] / gen_seconds, 3) if gen_seconds and tokens[1] else None,
        }
        write_json(self.partial / "manifest.json", manifest)
        self._finish()
        return manifest

    # ---------------------------------------------------------------- state
    def _open_partial(self) -> None:
        """Start, resume or (for changed late settings) partly reuse the checkpoints in ``<out>.partial``.

        Same settings: resume. Only :data:`~colmed.data_gen.config.LATE_SETTINGS` changed: keep the
        finished generation parts, redo mining. A setting that shapes the generation parts changed:
        refused, naming it (``--overwrite`` starts over), unless no part had finished (nothing to lose:
        e.g. the previous attempt failed on a typo). With ``--overwrite`` and no finished part here, the
        parts of a finished ``<out>`` generated the same way are reused (:meth:`_reuse_finished_generation`).
        """
        cfg = self.config
        state_path = self.partial / "state.json"
        fingerprint, generation = cfg.fingerprint(), cfg.generation_fingerprint()
        if self.partial.exists():
            state = read_state(state_path)
            finished = any((self.work / "generate").glob("part-*.done.json"))
            if state.get("fingerprint") == fingerprint:
                logger.info("resuming %s", self.partial)
            elif state.get("generation_fingerprint") == generation:
                logger.info("resuming %s: late settings changed, reusing the generation parts", self.partial)
                shutil.rmtree(self.work / "mine", ignore_errors=True)
                write_json(state_path, {**state, "fingerprint": fingerprint, "config": cfg.to_dict()})
            elif finished and not cfg.overwrite:
                refuse_changed_settings(state, cfg, self.partial, "an unfinished run")
            else:
                shutil.rmtree(self.partial)
        if cfg.overwrite and not any((self.work / "generate").glob("part-*.done.json")):
            self._reused_generation = self._reuse_finished_generation(generation)
        self.work.mkdir(parents=True, exist_ok=True)
        if not state_path.is_file():
            write_json(state_path, {"fingerprint": fingerprint, "generation_fingerprint": generation,
                                    "config": cfg.to_dict()})

    def _reuse_finished_generation(self, generation: str) -> bool:
        """Seed ``_work/generate`` with the ``generation/`` parts of the finished ``<out>`` being replaced, when
        its manifest records the same generation fingerprint, notes (sha256) and model: the expensive LLM
        calls are not repeated for a change of negatives, filters, split or export. Hard links where the
        file system allows (the parts are never written in place), else copies; ``<out>`` is not touched."""
        saved = self.out / GENERATION_FOLDER
        try:
            manifest = json.loads((self.out / "manifest.json").read_text(encoding="utf-8"))
            recorded = manifest.get("generation") or {}
        except (OSError, ValueError, AttributeError):
            return False
        if (recorded.get("fingerprint") != generation or not saved.is_dir()
                or [manifest.get("input"), manifest.get("model")] != list(self._identity())):
            return False
        target = self.work / "generate"
        shutil.rmtree(target, ignore_errors=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copytree(saved, target, copy_function=_link_or_copy, ignore=shutil.ignore_patterns(".*"))
        logger.info("reusing the %d generated query parts of %s: its generation settings, notes and model are "
                    "unchanged; redoing filters, mining, split and exports",
                    len(list(target.glob("part-*.done.json"))), self.out)
        return True

    def _identity(self) -> tuple[dict[str, str], dict[str, Any] | None]:
        """The notes' hash and the model's identity (a GGUF file's sha256), computed once per run."""
        if self._identity_cache is None:
            self._identity_cache = (input_hash(self.config.notes), model_identity(self.config))
        return self._identity_cache

    def _part(self, stage: str, index: int) -> Path:
        return self.work / stage / f"part-{index:05d}"

    def _is_done(self, stage: str, index: int) -> bool:
        return self._part(stage, index).with_suffix(".done.json").is_file()

    def _read_parts(self, stage: str, suffix: str) -> list[dict]:
        rows: list[dict] = []
        for path in sorted((self.work / stage).glob(f"part-*.{suffix}")):
            if path.with_name(path.name.replace(suffix, "done.json")).is_file():
                rows += [rec for _, rec in read_jsonl(path)]
        return rows

    # ---------------------------------------------------------------- generation
    def _generate(self, notes, corpus: dict[str, Passage]
                  ) -> tuple[list[GeneratedQuery], dict, float, tuple[int, int], list[dict]]:
        """Generate (or resume) the parts, then filter their queries: filters are late settings, so a
        resume with other filters reuses the parts."""
        from tqdm.auto import tqdm

        cfg = self.config
        batches = [notes[i:i + cfg.batch_notes] for i in range(0, len(notes), cfg.batch_notes)]
        todo = [i for i in range(len(batches)) if not self._is_done("generate", i)]
        generator = self._generator
        query_filter = QueryFilter(cfg.min_query_words, cfg.max_query_words,
                                   cfg.min_relevance if cfg.generator == "llm" else None,
                                   cfg.require_evidence_in_note)
        done_notes = sum(len(batches[i]) for i in range(len(batches)) if i not in set(todo))
        bar = tqdm(total=len(notes), initial=done_notes, unit="note", desc=f"generate ({cfg.generator})",
                   disable=not cfg.progress, dynamic_ncols=True)
        for i in todo:
            if generator is None:
                generator = make_generator(cfg, self._backend if self._backend is not None else self._make_backend())
            t0 = time.perf_counter()
            batch = batches[i]
            passages: list[Passage] = [p for n in batch for p in chunk_note(n, cfg.chunk_words, cfg.min_chunk_words)]
            result = generator.generate(passages)
            part = self._part("generate", i)
            part.parent.mkdir(parents=True, exist_ok=True)
            write_jsonl(part.with_suffix(".rejects.jsonl"), result.rejects)
            write_jsonl(part.with_suffix(".queries.jsonl"), (q.to_dict() for q in result.queries))
            write_json(part.with_suffix(".done.json"), {
                "notes": len(batch), "notes_without_passage": sum(1 for n in batch if not any(
                    p.note_id == n.note_id for p in passages)),
                "passages": len(passages), "generated": len(result.queries),
                "rejected_outputs": sum(r.get("kind") == "llm_output" for r in result.rejects),
                "generator": dict(result.counts),
                "seconds": time.perf_counter() - t0, "prompt_tokens": result.prompt_tokens,
                "completion_tokens": result.completion_tokens})
            bar.update(len(batch))
        bar.close()
        totals: dict[str, Any] = {}
        seconds, tokens = 0.0, [0, 0]
        for i in range(len(batches)):
            stats = json.loads(self._part("generate", i).with_suffix(".done.json").read_text(encoding="utf-8"))
            seconds += stats.pop("seconds")
            tokens[0] += stats.pop("prompt_tokens", 0)
            tokens[1] += stats.pop("completion_tokens", 0)
            _merge_counts(totals, stats)
        queries, filtered, filter_rejects = [], {}, []
        for d in self._read_parts("generate", "queries.jsonl"):
            q = GeneratedQuery.from_dict(d)
            reason = query_filter.reason(q.query, corpus[q.source_passage_id].full_text, q.evidence, q.relevance)
            if reason:
                filtered[reason] = filtered.get(reason, 0) + 1
                # kept for auditing the filters; counted under counts.filters, not counts.rejects' LLM part
                filter_rejects.append({"kind": "filtered_query", "reason": reason, **q.to_dict()})
            else:
                queries.append(q)
        totals["kept"], totals["filters"] = len(queries), filtered
        return queries, totals, seconds, (tokens[0], tokens[1]), filter_rejects

    def _make_backend(self):
        if self.config.generator != "llm":
            return None
        from colmed.data_gen.backends import make_backend

        return make_backend(self.config)

    # ---------------------------------------------------------------- mining
    def _make_miner(self, passages: dict[str, Passage]):
        from colmed.data_gen.mining import HardNegativeMiner, dense_retriever

        cfg = self.config
        ids = list(passages)
        texts = [passages[i].full_text for i in ids]
        if cfg.miner == "dense":
            retriever = dense_retriever(cfg.dense_model, ids, texts, cfg.device, cfg.dense_backend, cfg.dense_quantize)
            name = f"dense:{cfg.dense_model}"
        elif cfg.miner == "bm25" or cfg.round_trip_k:
            from colmed.indexes.bm25 import BM25Index

            retriever, name = BM25Index.build(ids, texts, show_progress=cfg.progress), "bm25"
        else:
            return None
        mining = cfg.miner != "none"
        return HardNegativeMiner(
            retriever, {i: passages[i].note_id for i in ids}, num_negatives=cfg.num_negatives if mining else 0,
            range_min=cfg.range_min, range_max=cfg.range_max if mining else 1,
            relative_margin=cfg.relative_margin, absolute_margin=cfg.absolute_margin, max_score=cfg.max_score,
            min_score=cfg.min_score, sampling=cfg.sampling, exclude_same_note=cfg.exclude_same_note,
            seed=cfg.seed, name=name if mining else "")

    def _mine(self, queries: list[GeneratedQuery], passages: dict[str, Passage]
              ) -> tuple[list[TripletRecord], dict, float]:
        from tqdm.auto import tqdm

        cfg = self.config
        batches = [queries[i:i + MINE_BATCH] for i in range(0, len(queries), MINE_BATCH)]
        todo = [i for i in range(len(batches)) if not self._is_done("mine", i)]
        miner = None
        if todo:
            t0 = time.perf_counter()
            miner = self._make_miner(passages)
            index_seconds = time.perf_counter() - t0
        bar = tqdm(total=len(queries), initial=sum(len(batches[i]) for i in range(len(batches)) if i not in set(todo)),
                   unit="query", desc=f"mine ({cfg.miner})", disable=not cfg.progress, dynamic_ncols=True)
        for n, i in enumerate(todo):
            t0 = time.perf_counter()
            batch = batches[i]
            records, round_trip = [], 0
            mined = {}
            if miner is not None:
                before = dict(miner.counts)
                mined = miner.mine({q.query_id: q.query for q in batch},
                                   {q.query_id: q.source_passage_id for q in batch}, search_depth=cfg.round_trip_k)
                delta = {k: v - before.get(k, 0) for k, v in miner.counts.items() if v - before.get(k, 0)}
            else:
                delta = {}
            for q in batch:
                m = mined.get(q.query_id)
                if cfg.round_trip_k and (m is None or m.positive_rank is None or m.positive_rank > cfg.round_trip_k):
                    round_trip += 1
                    continue
                mining = m is not None and cfg.miner != "none"
                records.append(TripletRecord(
                    query_id=q.query_id, query=q.query, positive_id=q.positive_id, positive=q.positive,
                    negative_ids=list(m.negative_ids) if mining else [],
                    negatives=[passages[d].full_text for d in m.negative_ids] if mining else [],
                    positive_score=m.positive_score if mining else None,
                    negative_scores=list(m.negative_scores) if mining else [],
                    note_id=q.note_id, generator=q.generator, miner=miner.name if mining else "",
                    negative_ranks=list(m.negative_ranks) if mining else [], query_type=q.query_type or "",
                    evidence=q.evidence or "", relevance=q.relevance,
                    split=note_split(q.note_id, cfg.dev_fraction, cfg.seed)))
            if cfg.teacher and records:
                from colmed.data_gen.mining import add_teacher_scores

                add_teacher_scores(records, cfg.teacher, device=cfg.device)
            part = self._part("mine", i)
            part.parent.mkdir(parents=True, exist_ok=True)
            write_triplets(part.with_suffix(".records.jsonl"), records)
            seconds = time.perf_counter() - t0 + (index_seconds if n == 0 else 0.0)
            write_json(part.with_suffix(".done.json"), {"queries": len(batch), "records": len(records),
                                                        "round_trip": round_trip, "removed": delta,
                                                        "seconds": seconds})
            bar.update(len(batch))
        bar.close()
        totals: dict[str, Any] = {}
        seconds = 0.0
        records: list[TripletRecord] = []
        for i in range(len(batches)):
            part = self._part("mine", i)
            stats = json.loads(part.with_suffix(".done.json").read_text(encoding="utf-8"))
            seconds += stats.pop("seconds")
            _merge_counts(totals, stats)
            records += list(read_triplets(part.with_suffix(".records.jsonl")))
        totals.setdefault("round_trip", 0)
        totals["miner"] = cfg.miner
        totals["queries_with_all_negatives"] = sum(1 for r in records if len(r.negative_ids) >= cfg.num_negatives)
        totals["queries_without_negatives"] = sum(1 for r in records if not r.negative_ids)
        totals["negatives_total"] = sum(len(r.negative_ids) for r in records)
        return records, totals, seconds

    # ---------------------------------------------------------------- outputs
    def _write_outputs(self, records: list[TripletRecord], rejects: list[dict], counts: dict) -> dict:
        out = self.partial
        write_outputs(out, records, rejects)
        counts["records"] = {"total": len(records), "train": sum(r.split == "train" for r in records),
                             "dev": sum(r.split == "dev" for r in records),
                             "notes_train": len({r.note_id for r in records if r.split == "train"}),
                             "notes_dev": len({r.note_id for r in records if r.split == "dev"})}
        counts["rejects"] = len(rejects)
        exports = export_all(out, records)
        cfg = self.config
        notes_hash, model = self._identity()
        generation = {"fingerprint": cfg.generation_fingerprint(), "folder": GENERATION_FOLDER,
                      "parts": len(list((self.work / "generate").glob("part-*.done.json"))),
                      "reused": self._reused_generation}
        return run_manifest(cfg.to_dict(), packages=GENERATION_PACKAGES, kind="colmed-triplets",
                            format_version=1, fingerprint=cfg.fingerprint(), shard=cfg.shard,
                            input=notes_hash, model=model, counts=counts, exports=exports, generation=generation)

    def _finish(self) -> None:
        """Swap the finished outputs, with the generation parts, into place (one atomic directory swap), then
        drop the checkpoints.

        The parts are linked, not moved: a crash before the swap leaves ``.partial`` with all its checkpoints,
        and a rerun rewrites the outputs from them.
        """
        with atomic_directory(self.out, overwrite=self.config.overwrite, kind="triplets", locked=True) as tmp:
            for entry in self.partial.iterdir():
                if entry.name not in ("_work", "state.json") and not entry.name.startswith("."):
                    os.replace(entry, tmp / entry.name)
            (self.work / "generate").mkdir(parents=True, exist_ok=True)  # none when a shard has no notes
            shutil.copytree(self.work / "generate", tmp / GENERATION_FOLDER, copy_function=_link_or_copy,
                            ignore=shutil.ignore_patterns(".*"))
        shutil.rmtree(self.partial, ignore_errors=True)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or one without hard links
        shutil.copy2(src, dst)


def read_state(path: Path) -> dict:
    """A checkpoint folder's ``state.json``, or ``{}`` when missing or unreadable (a killed first write)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def refuse_changed_settings(state: dict, config: GenerateConfig, partial: Path, what: str) -> None:
    """Raise the one-line refusal to resume checkpoints made with other settings, naming the first changed one."""
    changed = _changed_settings(state.get("config"), config.to_dict())
    settings = ", ".join(f"{k}: {old!r} -> {new!r}" for k, old, new in changed) or "written by another colmed version"
    raise InputError(f"{what} with different settings is here ({settings}); rerun with the same settings to resume "
                     "it, or pass --overwrite to start over", path=partial, field=changed[0][0] if changed else None)


def _changed_settings(old: dict | None, new: dict) -> list[tuple[str, Any, Any]]:
    """``(setting, old, new)`` for each generation-shaping setting that differs (first: the one to name)."""
    from colmed.data_gen.config import _NOT_FINGERPRINTED

    if not isinstance(old, dict):
        return []
    return [(k, old.get(k), v) for k, v in new.items()
            if k not in _NOT_FINGERPRINTED | LATE_SETTINGS and old.get(k) != v]


def write_outputs(out: Path, records: list[TripletRecord], rejects: list[dict]) -> None:
    """triplets.jsonl (+ train/ and dev/), triplets.parquet and rejects.jsonl, each atomically."""
    from colmed.data_gen.export import to_parquet

    write_triplets(out / "triplets.jsonl", records)
    for split in ("train", "dev"):
        write_triplets(out / split / "triplets.jsonl", (r for r in records if r.split == split))
    to_parquet(records, out / "triplets.parquet")
    write_jsonl(out / "rejects.jsonl", rejects)


def export_all(out: Path, records: list[TripletRecord]) -> dict:
    from colmed.data_gen.export import to_colbert, to_sentence_transformers

    return {"sentence_transformers": to_sentence_transformers(records, out / "export" / "sentence_transformers"),
            "colbert": to_colbert(records, out / "export" / "colbert")}


def merge_shards(out: str | Path, overwrite: bool = False) -> dict[str, Any]:
    """Merge ``<out>/shard-<i>-of-<n>/`` outputs into ``<out>``; every shard must be finished.

    Queries duplicated across shards (same normalised text) are deduplicated by the same rule as a
    single run (:func:`~colmed.data_gen.filters.dedup_queries`), so the merge keeps what one run would.
    """
    out = Path(out)
    shard_dirs = sorted(out.glob("shard-*-of-*"), key=lambda p: int(p.name.split("-")[1]))
    shard_dirs = [d for d in shard_dirs if not d.name.endswith(".partial")]
    if not shard_dirs:
        raise InputError("no shard-<i>-of-<n> folders to merge", path=out)
    n = int(shard_dirs[0].name.split("-")[-1])
    present = {int(d.name.split("-")[1]) for d in shard_dirs if int(d.name.split("-")[-1]) == n}
    missing = sorted(set(range(n)) - present)
    if missing:
        raise InputError(f"shards {missing} of {n} are missing or unfinished", path=out)
    if (out / "manifest.json").exists() and not overwrite:
        raise IndexExistsError(f"{out}: already merged; pass --overwrite to merge again")
    manifests = []
    for d in shard_dirs:
        mpath = d / "manifest.json"
        if not mpath.is_file():
            raise InputError("shard is unfinished (no manifest.json)", path=d)
        manifests.append(json.loads(mpath.read_text(encoding="utf-8")))
    if len({m["fingerprint"] for m in manifests}) != 1:
        raise InputError("shards were generated with different settings", path=out, field="fingerprint")
    records, rejects = [], []
    for d in shard_dirs:
        records += list(read_triplets(d))
        rejects += [rec for _, rec in read_jsonl(d / "rejects.jsonl")]
    records, dup = dedup_queries(records)
    # bad_note rejects come from the shared source file and repeat in every shard
    unique_rejects, keys = [], set()
    for rec in rejects:
        key = json.dumps(rec, sort_keys=True)
        if key not in keys:
            keys.add(key)
            unique_rejects.append(rec)
    write_outputs(out, records, unique_rejects)
    counts: dict[str, Any] = {}
    throughput: dict[str, Any] = {}
    for m in manifests:
        _merge_counts(counts, {k: v for k, v in m["counts"].items() if k not in ("notes", "passages")})
        _merge_counts(throughput, {k: v for k, v in m.get("throughput", {}).items() if "per_second" not in k})
    counts["notes"] = {**manifests[0]["counts"]["notes"], "in_shard": sum(m["counts"]["notes"]["in_shard"]
                                                                          for m in manifests)}
    counts["passages"] = manifests[0]["counts"]["passages"]
    counts["filters"]["duplicate_across_shards"] = dup
    counts["records"] = {"total": len(records), "train": sum(r.split == "train" for r in records),
                         "dev": sum(r.split == "dev" for r in records)}
    counts["rejects"] = len(unique_rejects)
    manifest = run_manifest({**manifests[0]["config"], "shard": None}, packages=GENERATION_PACKAGES,
                            kind="colmed-triplets", format_version=1, fingerprint=manifests[0]["fingerprint"],
                            merged_from=[d.name for d in shard_dirs], input=manifests[0]["input"],
                            model=manifests[0].get("model"), counts=counts,
                            exports=export_all(out, records), throughput_summed_over_shards=throughput)
    write_json(out / "manifest.json", manifest)
    return manifest
