"""``colmed serve``: put one or more indexes behind a FastAPI search endpoint (uvicorn)."""

from __future__ import annotations

import click


@click.command("serve")
@click.option("--index", "index_specs", multiple=True, required=True, metavar="[NAME=]DIR",
              help="Index directory to serve; repeat for several (named after the folder unless NAME= is given).")
@click.option("--fuse", type=click.Choice(["rrf"]), default=None,
              help="Fuse all indexes with reciprocal rank fusion when a request names no index.")
@click.option("--corpus", default=None, type=click.Path(),
              help="BEIR folder or corpus.jsonl for document texts, when the indexed dataset has moved.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; loopback unless you mean to expose the server.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--device", default=None, help="Device for dense and ColBERT query encoders (cpu, cuda).")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]),
              default="info", show_default=True)
def command(index_specs, fuse, corpus, host, port, device, log_level):
    """Serve indexes over HTTP: POST /search, GET /indexes, GET /health, OpenAPI at /docs.

    \b
    colmed serve --index runs/nfcorpus-bm25 --index dense=runs/nfcorpus-minilm --fuse rrf
    curl -s localhost:8000/search -H 'content-type: application/json' \\
         -d '{"query": "statins and breast cancer", "k": 5}'
    """
    from colmed.commands._common import quiet_libraries

    quiet_libraries()
    from colmed.serve import IndexPool, create_app, serve

    options = {"device": device} if device else {}
    pool = IndexPool.from_specs(list(index_specs), fuse=fuse, corpus=corpus, **options)
    click.echo(f"serving {', '.join(pool.indexes)} on http://{host}:{port} (OpenAPI: /docs)", err=True)
    serve(create_app(pool), host=host, port=port, log_level=log_level)
