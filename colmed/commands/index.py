"""``colmed index``: build a BM25, dense (faiss) or ColBERT (PLAID) index directory."""

from __future__ import annotations

import click


@click.command("index")
@click.option("--retriever", "kind", type=click.Choice(["bm25", "dense", "colbert"]), required=True,
              help="Retriever family.")
@click.option("--dataset", required=True, help="Local BEIR folder or hub name (e.g. BeIR/nfcorpus).")
@click.option("--split", default="test", show_default=True, help="Split whose queries measure ANN recall.")
@click.option("--model", default=None, help="Dense/ColBERT model: hub name or local path.")
@click.option("--out", required=True, type=click.Path(), help="Index directory to create.")
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
def command(kind, dataset, split, model, out, overwrite, index_type, query_prompt, document_prompt, nbits,
            doc_maxlen, max_seq_length, batch_size, device):
    """Build an index on disk (atomically; refuses to overwrite without --overwrite).

    \b
    colmed index --retriever bm25 --dataset ../shared/beir/nfcorpus --out idx/nfcorpus-bm25
    colmed index --retriever dense --dataset BeIR/nfcorpus --model BAAI/bge-small-en-v1.5 --out idx/nf-bge
    colmed index --retriever colbert --dataset ../shared/beir/nfcorpus --model ckpt/ --nbits 2 --out idx/nf-plaid
    """
    from pathlib import Path

    from colmed.commands._common import quiet_libraries
    from colmed.core.errors import IndexExistsError, InputError

    quiet_libraries()
    if Path(out).exists() and not overwrite:  # fail before loading anything heavy
        raise IndexExistsError(f"{out}: already exists; pass --overwrite to replace it")
    if kind != "bm25" and not model:
        raise InputError(f"--retriever {kind} needs --model (hub name or local path)", field="model")
    from colmed.data.datasets import load_dataset
    from colmed.indexes.base import build_index

    ds = load_dataset(dataset, split=split)
    options = {"bm25": {},
               "dense": dict(model=model, index_type=index_type, query_prompt=query_prompt,
                             document_prompt=document_prompt, batch_size=batch_size, device=device,
                             max_seq_length=max_seq_length),
               "colbert": dict(model=model, nbits=nbits, batch_size=batch_size, device=device,
                               **({"doc_maxlen": doc_maxlen} if doc_maxlen else {}))}[kind]
    click.echo(f"indexing {len(ds.corpus):,} documents of {ds.name} with {kind} ...", err=True)
    manifest = build_index(kind, ds, out, overwrite=overwrite, **options)
    stats = ", ".join(f"{k}={v}" for k, v in manifest.stats.items())
    click.echo(f"wrote {out} ({manifest.num_docs:,} docs; {stats})")
