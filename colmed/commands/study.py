"""``colmed study``: notes -> triplets -> bi-encoder + ColBERT trained -> benchmark -> report."""

from __future__ import annotations

import click


@click.command("study")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Study YAML (see bench/study_reference.yaml); flags override it.")
@click.option("--out", default=None, help="Study folder (config key: out).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override any config key, e.g. --set data.num_notes=50 --set colbert.args.max-steps=100.")
@click.option("--dry-run", is_flag=True, help="Print the stages, their keys and what is cached; run nothing.")
@click.option("--until", default=None, metavar="STAGE",
              help="Stop after this stage (generate, train-bi-encoder, train-colbert, benchmark); a later run "
                   "without it continues from there.")
def command(config_path, out, overrides, dry_run, until):
    """Run the whole study, resumably: finished stages whose inputs did not change are skipped.

    \b
    colmed study --config bench/study_reference.yaml --dry-run
    colmed study --config bench/study_reference.yaml --set data.generator=inverse_cloze --out runs/study-ict
    """
    from colmed.study import StudyConfig, apply_overrides, run_study

    overrides = [*overrides, *([f"out={out}"] if out else [])]
    # Unknown keys and wrong types fail here, naming the file (or --set) and the field, before any stage runs.
    cfg = (StudyConfig.from_yaml(config_path, overrides) if config_path
           else apply_overrides(StudyConfig(), overrides))
    run_study(cfg, dry_run=dry_run, echo=lambda m: click.echo(m, err=True), until=until)
