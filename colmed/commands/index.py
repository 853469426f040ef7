"""``colmed index``: build a BM25, dense (faiss) or ColBERT (PLAID) index directory."""

from __future__ import annotations

import click

BM25_METHODS = ("robertson", "lucene", "bm25l", "bm25+", "atire")  # bm25s' variants
# Options that configure one retriever family; given to another they would be silently ignored.
RETRIEVER_OPTIONS = {
    "model": ("dense", "colbert"), "batch_size": ("dense", "colbert"), "device": ("dense", "colbert"),
    "index_type": ("dense",), "query_prompt": ("dense",), "document_prompt": ("dense",),
    "max_seq_length": ("dense",), "backend": ("dense", "colbert"), "quantize": ("dense", "colbert"),
    "nbits": ("colbert",), "doc_maxlen": ("colbert",),
    "k1": ("bm25",), "b": ("bm25",), "method": ("bm25",), "stopwords": ("bm25",), "stemmer": ("bm25",),
}


@click.command("index")
@click.option("--retriever", "kind", type=click.Choice(["bm25", "dense", "colbert"]), default=None,
              help="Retriever family.")
@click.option("--dataset", default=None, help="Local BEIR folder or hub name (e.g. BeIR/nfcorpus).")
@click.option("--split", default="test", show_default=True, help="Split whose queries measure ANN recall.")
@click.option("--model", default=None, help="Dense/ColBERT model: hub name or local path.")
@click.option("--out", default=None, type=click.Path(), help="Index directory to create.")
@click.option("--overwrite", is_flag=True, help="Replace an existing index directory.")
@click.option("--index-type", type=click.Choice(["flat", "hnsw", "ivfpq"]), default="flat", show_default=True,
              help="Dense: faiss index type.")
@click.option("--query-prompt", default=None, help="Dense: query prompt (default: as the model's authors intend).")
@click.option("--document-prompt", default=None, help="Dense: document prompt (default: as intended).")
@click.option("--nbits", type=int, default=2, show_default=True, help="ColBERT: bits per residual dimension.")
@click.option("--doc-maxlen", type=int, default=None, help="ColBERT: document length in tokens.")
@click.option("--max-seq-length", type=int, default=None, help="Dense: truncate documents to this many tokens.")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--device", default=None, help="cpu, cuda ... (default: CUDA when available).")
@click.option("--backend", type=click.Choice(["torch", "openvino"]), default=None,
              help="Dense/ColBERT: encoder engine [torch]; openvino needs colmed[openvino]. Searches reuse it.")
@click.option("--quantize", type=click.Choice(["none", "bf16", "int8"]), default=None,
              help="Dense/ColBERT, --backend openvino: int8 (NNCF static quantisation), bf16 (CPUs with AMX/AVX512-BF16) "
                   "or none (fp32) [none].")
@click.option("--k1", type=float, default=None, help="BM25: term-frequency saturation [1.5].")
@click.option("--b", "b", type=float, default=None, help="BM25: document-length normalisation, 0..1 [0.75].")
@click.option("--method", type=click.Choice(BM25_METHODS), default=None, help="BM25: bm25s variant [lucene].")
@click.option("--stopwords", default=None,
              help="BM25: stopword list, a bm25s language (en, en_plus, de, fr ...) or 'none' [en].")
@click.option("--stemmer", default=None,
              help="BM25: Snowball stemmer (PyStemmer: english, porter, french ...) or 'none' [english].")
@click.option("--verify", "verify_dir", default=None, type=click.Path(),
              help="Check an existing index directory's files against its manifest (sizes and sha256); build nothing.")
def command(kind, dataset, split, model, out, overwrite, index_type, query_prompt, document_prompt, nbits,
            doc_maxlen, max_seq_length, batch_size, device, backend, quantize, verify_dir, k1, b, method, stopwords,
            stemmer):
    """Build an index on disk (atomically; refuses to overwrite without --overwrite).

    \b
    colmed index --retriever bm25 --dataset ../shared/beir/nfcorpus --out idx/nfcorpus-bm25
    colmed index --retriever bm25 --k1 0.9 --b 0.4 --method robertson --dataset ... --out idx/nf-bm25-anserini
    colmed index --retriever dense --dataset BeIR/nfcorpus --model BAAI/bge-small-en-v1.5 --out idx/nf-bge
    colmed index --retriever dense --backend openvino --quantize int8 --dataset ... --model ... --out idx/nf-int8
    colmed index --retriever colbert --dataset ../shared/beir/nfcorpus --model ckpt/ --nbits 2 --out idx/nf-plaid
    colmed index --retriever colbert --backend openvino --dataset ... --model ckpt/ --out idx/nf-plaid-ov

    Benchmark an index as built (no re-encoding): colmed benchmark --retriever NAME=index:DIR --dataset ...
    """
    from pathlib import Path

    from colmed.commands._common import info, progress_wanted, quiet_libraries
    from colmed.core.errors import InputError

    quiet_libraries()
    if verify_dir is not None:
        from colmed.indexes.base import IndexManifest, verify_index

        manifest = IndexManifest.read(verify_dir)
        verify_index(verify_dir, manifest, hashes=True)
        click.echo(f"{verify_dir}: {len(manifest.files)} files match the manifest's sizes and sha256"
                   if manifest.files else f"{verify_dir}: built before file hashes were recorded; docs.jsonl "
                   "holds num_docs documents (rebuild it to record hashes)")
        return
    missing = [name for name, value in (("--retriever", kind), ("--dataset", dataset), ("--out", out)) if not value]
    if missing:
        raise InputError(f"missing {', '.join(missing)} (or give --verify DIR to check an index)", field=missing[0])
    from colmed.core.io import check_output

    # fail before loading anything heavy; build_index checks again under the output's writer lock
    check_output(out, overwrite=overwrite, kind="index", inputs=[dataset if Path(dataset).exists() else None])
    _refuse_options_of_other_retrievers(click.get_current_context(), kind)
    if kind != "bm25" and not model:
        raise InputError(f"--retriever {kind} needs --model (hub name or local path)", field="model")
    if backend or quantize:
        from colmed.bi_encoder.encoder import check_backend

        check_backend(backend, quantize)  # a missing extra is one line now, not after the corpus is read
    from colmed.data.datasets import load_dataset
    from colmed.indexes.base import build_index

    ds = load_dataset(dataset, split=split)
    options = {"bm25": dict(k1=k1, b=b, method=method, stopwords=_none_word(stopwords), stemmer=_none_word(stemmer),
                            progress=progress_wanted()),
               "dense": dict(model=model, index_type=index_type, query_prompt=query_prompt,
                             document_prompt=document_prompt, batch_size=batch_size, device=device,
                             max_seq_length=max_seq_length, backend=backend, quantize=quantize),
               "colbert": dict(model=model, nbits=nbits, batch_size=batch_size, device=device, backend=backend,
                               quantize=quantize, **({"doc_maxlen": doc_maxlen} if doc_maxlen else {}))}[kind]
    info(f"indexing {len(ds.corpus):,} documents of {ds.name} with {kind} ...")
    manifest = build_index(kind, ds, out, overwrite=overwrite, **options)
    stats = ", ".join(f"{k}={v}" for k, v in manifest.stats.items())
    click.echo(f"wrote {out} ({manifest.num_docs:,} docs; {stats})")


def _refuse_options_of_other_retrievers(ctx: click.Context, kind: str) -> None:
    from click.core import ParameterSource

    from colmed.core.errors import InputError

    for param in ctx.command.params:
        families = RETRIEVER_OPTIONS.get(param.name)
        if families and kind not in families and ctx.get_parameter_source(param.name) in (
                ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT):
            raise InputError(f"{param.opts[-1]} applies to --retriever {' or '.join(families)}, not {kind}",
                             field=param.opts[-1])


def _none_word(value: str | None) -> str | None | bool:
    """``'none'`` turns a BM25 default off (no stopwords, no stemming); None keeps the default."""
    if value is None:
        return None
    return False if value.lower() == "none" else value
