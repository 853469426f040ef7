"""``colmed search``: query an index; write a TREC run (+ protocol sidecar) or print top hits."""

from __future__ import annotations

import click


@click.command("search")
@click.option("--index", "index_dir", required=True, type=click.Path(), help="Index directory.")
@click.option("--queries", default=None, help="queries.jsonl, or a BEIR folder/hub name (judged queries of --split).")
@click.option("--split", default="test", show_default=True)
@click.option("--query", "query_text", default=None, help="One free-text query: print its top hits.")
@click.option("--k", type=int, default=None, help="Documents per query [--queries: 100, --query: 10].")
@click.option("--out", default=None, type=click.Path(), help="TREC run file to write.")
@click.option("--batch-size", type=int, default=64, show_default=True, help="Queries per search call.")
@click.option("--device", default=None)
@click.option("--query-maxlen", type=int, default=None,
              help="ColBERT: query tokens read [a registered benchmark's protocol (ArguAna: 300), else the model's].")
@click.option("--backend", type=click.Choice(["torch", "openvino"]), default=None,
              help="Dense/ColBERT: encode queries on this engine [the one the index was built with]; recorded in "
                   "the run.")
@click.option("--quantize", type=click.Choice(["none", "bf16", "int8"]), default=None,
              help="Dense/ColBERT: query encoder precision, int8, bf16 or none (fp32), on openvino [the index's].")
def command(index_dir, queries, split, query_text, k, out, batch_size, device, query_maxlen, backend, quantize):
    """Search an index with a query set (writes --out) or one --query (prints hits).

    \b
    colmed search --index idx/nfcorpus-bm25 --queries ../shared/beir/nfcorpus --out runs/bm25.trec
    colmed search --index idx/nfcorpus-bm25 --query "statin side effects"
    """
    from colmed.commands._common import info as status, quiet_libraries
    from colmed.core.errors import InputError

    quiet_libraries()
    if (queries is None) == (query_text is None):
        raise InputError("give exactly one of --queries (with --out) or --query")
    if queries is not None and not out:
        raise InputError("--queries needs --out (the TREC run file to write)")
    if k is None:
        k = 10 if query_text is not None else 100  # a person reads 10 hits; a run feeds Recall@100
    from colmed.indexes.search import check_search_args

    check_search_args(None if query_text is None else {"q": query_text}, k, batch_size, field="--query")
    from colmed.indexes.base import IndexManifest, load_index, read_docs

    from colmed.indexes.search import ann_recall_line, load_queries, search_loaded_to_trec

    manifest = IndexManifest.read(index_dir)
    status(ann_recall_line(manifest))  # approximate indexes say what they cost
    if query_maxlen is not None and manifest.kind != "colbert":
        raise InputError(f"--query-maxlen applies to colbert indexes; {index_dir} is a {manifest.kind} index")
    encoder_options = {}
    if backend or quantize:
        if manifest.kind not in ("dense", "colbert"):
            raise InputError(f"--backend/--quantize apply to dense and colbert indexes; {index_dir} is a "
                             f"{manifest.kind} index", field="--backend")
        from colmed.indexes.dense import query_backend

        encoder_options = dict(zip(("backend", "quantize"), query_backend(manifest, backend, quantize)))
        from colmed.bi_encoder.encoder import check_backend

        check_backend(**encoder_options)
    loaded = load_queries(queries, split) if queries is not None else None
    if query_maxlen is None and loaded is not None and loaded[1].get("dataset"):
        from colmed.benchmark.datasets import dataset_search_options

        # A registered benchmark's protocol, as `colmed benchmark` applies it (ArguAna: 300 ColBERT query tokens).
        query_maxlen = dataset_search_options(manifest.kind, loaded[1]["dataset"]).get("query_maxlen")
    retriever = load_index(index_dir, device=device, **({"query_maxlen": query_maxlen} if query_maxlen else {}),
                           **encoder_options)
    if query_text is not None:
        hits = retriever.search({"q": query_text}, k=k)["q"]
        ids, titles = read_docs(index_dir)
        title_of = dict(zip(ids, titles))
        from colmed.data.runs import trec_eval_ranking

        for rank, (did, score) in enumerate(trec_eval_ranking(hits), start=1):
            click.echo(f"{rank:>3}  {score:9.4f}  {did}  {title_of.get(did, '')[:90]}")
        return
    extra = {"search_options": {"query_maxlen": query_maxlen}} if query_maxlen else {}
    if encoder_options:  # queries encoded on another engine than the documents: the run says so
        if manifest.kind == "colbert":
            extra["query_encoder"] = retriever.query_encoder_backend
        else:
            from colmed.bi_encoder.encoder import manifest_record

            extra["query_encoder"] = manifest_record(retriever.encoder.backend)
    info = search_loaded_to_trec(retriever, manifest, *loaded, out, k=k, batch_size=batch_size, extra=extra or None)
    click.echo(f"wrote {out} ({info['queries']} queries, {info['qps']:.1f} queries/s; {ann_recall_line(manifest)})")
