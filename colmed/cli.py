"""The ``colmed`` command line: a thin click layer over the library.

Commands live in :mod:`colmed.commands` and are imported only when invoked, so ``colmed --help`` does
not import torch, faiss or colbert-ai. Every :class:`~colmed.core.errors.ColmedError` becomes one line on
stderr and exit code 2.
"""

from __future__ import annotations

import importlib
import sys

import click

from colmed.core.errors import ColmedError


class LazyGroup(click.Group):
    """A click group whose subcommands are ``"module:attr"`` strings imported on first use."""

    def __init__(self, *args, lazy: dict[str, tuple[str, str]] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = lazy or {}  # name -> (target, short help)

    def list_commands(self, ctx):
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx, name):
        if name in self.lazy:
            module, _, attr = self.lazy[name][0].partition(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)

    def format_commands(self, ctx, formatter):
        # Short help from the table, so --help imports nothing heavy.
        rows = [(n, self.lazy[n][1]) for n in self.list_commands(ctx) if n in self.lazy]
        rows += [(n, c.get_short_help_str()) for n, c in self.commands.items() if n not in self.lazy]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(sorted(rows))


def _exit_on_sigterm(signum, frame):
    # SystemExit unwinds context managers, so atomic writers remove their temp files and folders.
    sys.exit(128 + signum)


class ColmedGroup(LazyGroup):
    def main(self, *args, **kwargs):
        import signal

        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        try:
            return super().main(*args, standalone_mode=False, **kwargs)
        except ColmedError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except click.exceptions.Abort:
            click.echo("aborted", err=True)
            sys.exit(1)
        except click.ClickException as e:
            e.show()
            sys.exit(e.exit_code)
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)


@click.group(cls=LazyGroup, lazy={
    "bi-encoder": ("colmed.commands.train_bi_encoder:command", "Fine-tune a sentence-transformers model on triplets."),
    "colbert": ("colmed.commands.train_colbert:command", "Train a ColBERTv2 model with colbert-ai on triplets."),
})
def train():
    """Train a retriever on colmed triplets."""


@click.group(cls=ColmedGroup, lazy={
    "index": ("colmed.commands.index:command", "Build a BM25, dense or ColBERT index on disk."),
    "search": ("colmed.commands.search:command", "Search an index; write a TREC run or print hits."),
    "compare": ("colmed.commands.compare:command", "Evaluate and compare runs with ranx (tables, plot)."),
    "demo": ("colmed.commands.demo:command", "Offline demo: BM25 vs MiniLM on a bundled medical sample."),
    "generate": ("colmed.commands.generate:command", "Generate synthetic triplets from clinical notes."),
    "benchmark": ("colmed.commands.benchmark:command", "Run retrievers over a benchmark suite."),
    "study": ("colmed.commands.study:command", "Notes -> triplets -> both families trained -> report."),
    "serve": ("colmed.commands.serve:command", "Serve indexes over HTTP (FastAPI): search, fusion, manifests."),
    "export": ("colmed.commands.export:group", "Export a trained ColBERT as a Stanford (colbert-ai) checkpoint."),
})
@click.option("-q", "--quiet", is_flag=True, help="Results and errors only: no status lines, no progress bars.")
@click.option("-v", "--verbose", is_flag=True,
              help="Progress bars even when output goes to a file, and libraries' info messages.")
@click.version_option(package_name="colmed")
def main(quiet, verbose):
    """colmed: late-interaction and dense retrieval for medical search.

    Progress bars show on a terminal only; logs get one line per step and tables that do not wrap.
    """
    from colmed.commands._common import set_verbosity

    if quiet and verbose:
        raise click.UsageError("--quiet and --verbose exclude each other")
    set_verbosity("quiet" if quiet else "verbose" if verbose else None)


main.add_command(train)

if __name__ == "__main__":
    main()
