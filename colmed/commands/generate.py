"""``colmed generate``: clinical notes -> synthetic queries -> hard negatives -> triplets.

Examples::

    # LLM-free (runs anywhere; weaker than LLM queries), BM25 negatives
    colmed generate --notes ../shared/beir/nfcorpus --out runs/nfcorpus-triplets --generator inverse_cloze \\
        --negatives 5 --dev-fraction 0.05

    # a local causal LM (GGUF works through --gguf-file)
    colmed generate --notes ../shared/notes/mtsamples.jsonl --out runs/mt-llm --generator llm \\
        --backend transformers --model runs/models/qwen --gguf-file qwen2.5-coder-0.5b-instruct-q4_k_m.gguf

    # the same GGUF run natively by llama.cpp (pip install 'colmed[llamacpp]'): the fast CPU path
    colmed generate --notes ../shared/notes/mtsamples.jsonl --out runs/mt-llm --generator llm --backend llamacpp \\
        --model runs/models/qwen/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf --prompts medembed-lean

    # any OpenAI-compatible server (vllm serve ...), 4 machines, then merge
    colmed generate ... --backend openai --base-url http://host:8000/v1 --model Qwen/Qwen2.5-7B-Instruct --shard 0/4
    colmed generate --merge-shards --out runs/big

Re-running an interrupted command resumes it (with --ray too: finished blocks of queries are kept); a
finished output is only replaced with --overwrite.
"""

from __future__ import annotations

import json

import click

# flag name -> config field, for flags whose names differ from the field
_RENAMES = {"negatives": "num_negatives", "prompts_file": "prompts"}


@click.command("generate")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML file of settings (flags override it).")
@click.option("--notes", help="Notes: a JSONL file (id, text, title), a BEIR folder (corpus only) or a hub dataset name.")
@click.option("--out", help="Output directory.")
@click.option("--text-field", help="Field holding the note text [text].")
@click.option("--id-field", help="Field holding the note id [id; _id for BEIR].")
@click.option("--title-field", help="Field holding the title [title].")
@click.option("--hub-split", help="Split of a hub dataset [train].")
@click.option("--num-notes", type=int, help="Sample this many notes (seeded) [all].")
@click.option("--seed", type=int, help="Seed for sampling, generation, splits [13].")
@click.option("--chunk-words", type=int, help="Max words per passage; longer notes are chunked [200].")
@click.option("--generator", type=click.Choice(["inverse_cloze", "cropping", "llm"]),
              help="Query generator [inverse_cloze]. The LLM-free ones are weaker than an LLM.")
@click.option("--queries-per-note", type=int, help="Queries per passage [1].")
@click.option("--backend", type=click.Choice(["transformers", "llamacpp", "openai", "vllm"]),
              help="LLM backend [transformers]. llamacpp: a local GGUF run natively (fastest on CPU; colmed[llamacpp]).")
@click.option("--model", help="LLM: local path or hub name (llamacpp: a .gguf file or its folder; openai: the "
                             "served model name).")
@click.option("--gguf-file", help="GGUF file name inside the --model folder (transformers, llamacpp).")
@click.option("--base-url", help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1.")
@click.option("--api-key-env", help="Environment variable holding the API key [OPENAI_API_KEY].")
@click.option("--prompts", "prompts_file", type=click.Path(dir_okay=False), help="Prompt template YAML, or a bundled one: medembed (default) or medembed-lean (no evidence spans; for small CPU models).")
@click.option("--max-new-tokens", type=int, help="LLM output budget [384].")
@click.option("--temperature", type=float, help="LLM sampling temperature [0.7].")
@click.option("--max-retries", type=int, help="Retries of a malformed LLM output before it is rejected [2].")
@click.option("--concurrency", type=int, help="Concurrent requests (openai backend) [8].")
@click.option("--tensor-parallel-size", type=int, help="vllm backend: GPUs per model [1].")
@click.option("--device", help="torch device for local models [auto].")
@click.option("--threads", type=int, help="llamacpp backend: CPU threads [every core this process may use].")
@click.option("--min-relevance", type=float, help="Drop LLM queries the LLM itself rated below this (1-5) [3].")
@click.option("--round-trip-k", type=int, help="Keep a query only if its passage ranks in the miner's top-k [off].")
@click.option("--miner", type=click.Choice(["bm25", "dense", "none"]), help="Hard-negative miner [bm25].")
@click.option("--dense-model", help="Dense miner model (path or name).")
@click.option("--dense-backend", type=click.Choice(["torch", "openvino"]),
              help="Dense miner: the encoder's engine [torch]; openvino needs colmed[openvino].")
@click.option("--dense-quantize", type=click.Choice(["none", "int8", "bf16"]),
              help="Dense miner on openvino: int8 weights and activations, or bf16 compute [none: fp32].")
@click.option("--negatives", type=int, help="Negatives per query [5].")
@click.option("--range-min", type=int, help="Skip this many top candidates [0].")
@click.option("--range-max", type=int, help="Consider candidates up to this rank [50].")
@click.option("--relative-margin", type=float, help="Drop candidates scoring above pos - |pos|*margin [0.05].")
@click.option("--absolute-margin", type=float, help="Drop candidates scoring above pos - margin [off].")
@click.option("--sampling", type=click.Choice(["top", "random"]), help="Negative sampling [top].")
@click.option("--teacher", help="Cross-encoder for distillation scores [off].")
@click.option("--dev-fraction", type=float, help="Fraction of notes held out as dev [0.1].")
@click.option("--shard", help="Process shard i of n (i/n); merge later with --merge-shards.")
@click.option("--batch-notes", type=int, help="Notes per checkpoint [64].")
@click.option("--merge-shards", is_flag=True, help="Merge the finished shard-*-of-* folders under --out.")
@click.option("--overwrite", is_flag=True, default=None, help="Replace a finished output (or a mismatched unfinished one).")
@click.option("--no-progress", is_flag=True, default=False, help="No progress bars.")
@click.option("--ray", "use_ray", is_flag=True, default=False,
              help="Generate the LLM queries on Ray Data (a local Ray on this machine's CPUs, or the cluster "
                   "RAY_ADDRESS names; --backend vllm: ray.data.llm on GPUs), then mine here (colmed[ray]).")
@click.option("--ray-replicas", type=int, default=1, show_default=True, help="--ray: backend replicas (actors).")
@click.option("--ray-cpus-per-replica", type=int, default=None,
              help="--ray: CPUs per replica [a local Ray: the cores shared out over the replicas].")
@click.option("--ray-queries", type=click.Path(file_okay=False), default=None,
              help="--ray: folder of the generated queries (reused by a rerun) [<out>-queries].")
@click.option("--ray-batch-size", type=int, default=None,
              help="--ray: passages per backend call and per checkpointed block [16; vllm: 64].")
@click.option("--labelled", default=None,
              help="Instead of notes: a BEIR folder/hub name whose judged --labelled-split pairs become the "
                   "positives (supervised data on the same footing as synthetic).")
@click.option("--labelled-split", default="train", show_default=True, help="Split of --labelled.")
@click.option("--num-queries", type=click.IntRange(min=1), default=None,
              help="With --labelled: draw this many of its judged queries (seeded by --seed) [all].")
@click.option("--contamination-check", "contamination_check", multiple=True, metavar="DATASET",
              help="Check the triplets against this benchmark's test split before writing them (a BEIR folder "
                   "or hub name; repeatable): contamination.md/.json go beside them, the summary into the manifest.")
@click.option("--decontaminate", is_flag=True, default=False,
              help="With --contamination-check: drop the records that copy or paraphrase a test query or leak a "
                   "(test query, relevant document) pair; each is logged in decontamination_removed.jsonl.")
@click.option("--contamination-encoder", default=None, metavar="MODEL",
              help="With --contamination-check: also match paraphrased queries by embedding cosine >= 0.9 "
                   "(a sentence-transformers model path or name) [off: exact and near duplicates only].")
def command(config_path, merge_shards, no_progress, labelled, labelled_split, num_queries, use_ray, ray_replicas,
            ray_cpus_per_replica, ray_queries, ray_batch_size, contamination_check, decontaminate,
            contamination_encoder, **flags):
    """Generate synthetic triplets from clinical notes (resumable; see the module docs)."""
    from colmed.data_gen.config import GenerateConfig
    from colmed.data_gen.pipeline import TripletPipeline, merge_shards as merge

    overrides = {_RENAMES.get(k, k): v for k, v in flags.items() if v is not None}
    record_check = _record_check(contamination_check, decontaminate, contamination_encoder)
    if num_queries is not None and not labelled:
        raise click.UsageError("--num-queries draws from a labelled split: it needs --labelled")
    if labelled:
        from colmed.data_gen.labelled import build_labelled_triplets

        if not overrides.get("out"):
            raise click.UsageError("--labelled needs --out")
        extra = {k: overrides[k] for k in ("range_max", "relative_margin") if k in overrides}
        if num_queries is not None:
            extra["num_queries"] = num_queries
        manifest = build_labelled_triplets(
            labelled, overrides["out"], split=labelled_split, negatives=overrides.get("num_negatives", 5),
            dev_fraction=overrides.get("dev_fraction", 0.1), seed=overrides.get("seed", 13),
            overwrite=bool(overrides.get("overwrite")), progress=not no_progress, record_check=record_check, **extra)
        click.echo(f"wrote {manifest['counts']['records']['total']} triplets from {labelled} ({labelled_split}) "
                   f"to {overrides['out']}")
        _echo_contamination(manifest)
        return
    if no_progress:
        overrides["progress"] = False
    if merge_shards:
        if not overrides.get("out"):
            raise click.UsageError("--merge-shards needs --out")
        manifest = merge(overrides["out"], overwrite=bool(overrides.get("overwrite")))
        click.echo(json.dumps(manifest["counts"]["records"]))
        return
    cfg = GenerateConfig.from_yaml(config_path, **overrides) if config_path else GenerateConfig(**overrides)
    if use_ray:
        from colmed.data_gen.ray_pipeline import run_with_ray

        manifest = run_with_ray(cfg, ray_queries, replicas=ray_replicas, num_cpus_per_replica=ray_cpus_per_replica,
                                batch_size=ray_batch_size, record_check=record_check)
    else:
        manifest = TripletPipeline(cfg, record_check=record_check).run()
    c = manifest["counts"]
    click.echo(f"wrote {c['records']['total']} triplets ({c['records']['train']} train, {c['records']['dev']} dev) "
               f"to {TripletPipeline(cfg).out}; filters: {json.dumps(c['filters'])}; "
               f"{manifest['throughput']['notes_per_second']} notes/s")
    _echo_contamination(manifest)
    if manifest.get("generation", {}).get("reused"):
        click.echo("reused the generated queries of the output it replaced (same generation settings, notes, model)")


def _record_check(datasets, decontaminate: bool, encoder_name: str | None):
    """The contamination check the flags ask for (test splits loaded now, before any generation), or None."""
    if not datasets:
        if decontaminate or encoder_name:
            raise click.UsageError("--decontaminate and --contamination-encoder need --contamination-check DATASET")
        return None
    from colmed.eval.contamination import TrainingSetCheck

    encoder = None
    if encoder_name:
        from colmed.bi_encoder.encoder import DenseEncoder

        encoder = DenseEncoder(encoder_name)
    return TrainingSetCheck(list(datasets), decontaminate=decontaminate, encoder=encoder)


def _echo_contamination(manifest: dict) -> None:
    summary = manifest.get("counts", {}).get("contamination")
    if not summary:
        return
    for name, d in summary["per_dataset"].items():
        click.echo(f"contamination vs {name}: {d['verdict']}")
    if summary["decontaminated"]:
        click.echo(f"decontaminated: removed {summary['removed']} records, kept {summary['kept']}")
