"""``xsteer grid`` (every job of an experiment config) and ``xsteer demo`` (the whole pipeline offline, then a
report)."""

from __future__ import annotations

import click

from xsteer.app.cli_common import check_output, device_option, friendly_errors
from xsteer.errors import InputError


@click.command("grid")
@click.argument("config_path", metavar="CONFIG", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--out",
    default=None,
    type=click.Path(file_okay=False),
    help="Output folder (default: runs/<config name>).",
)
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="local",
    default=None,
    help="Run each job as a Ray task; optional ADDRESS of a cluster.",
)
@click.option("--check", is_flag=True, help="Only validate the config (no model loads).")
@friendly_errors
def grid_cmd(config_path: str, out: str | None, ray_address: str | None, check: bool) -> None:
    """Run every (parent, child, task) job of an experiment config; finished work is skipped.

    \b
    Examples:
      xsteer grid experiments/zoo.yaml                 # sequential, in this process
      xsteer grid experiments/zoo.yaml --ray           # each job a task on a local Ray
      xsteer grid experiments/paper.yaml --ray auto    # on an existing Ray cluster
    """
    from xsteer.app.config import load_config
    from xsteer.app.grid import load_plan_status, run_grid

    cfg = load_config(config_path)
    out = out or f"runs/{cfg.name}"
    check_output(out, folder=True)
    status = load_plan_status(cfg, out)
    click.echo(f"{cfg.name}: {status['jobs']} jobs ({status['done']} done) -> {out}")
    if check:
        click.echo("config is valid")
        return
    use_ray = ray_address is not None
    run_grid(
        cfg,
        out,
        use_ray=use_ray,
        ray_address=None if ray_address in (None, "local") else ray_address,
        on_done=lambda p: click.echo(f"done: {p}"),
    )


@click.command("demo")
@click.option(
    "--out",
    default="runs/demo",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Run folder (reused on rerun).",
)
@click.option(
    "--benchmark",
    is_flag=True,
    help="Run the benchmark pipeline (Algorithms 1-3 with ITS and controls) instead.",
)
@click.option(
    "--judge",
    default=None,
    help="A third model (neither Gemma-3 nor SmolLM2) that reads the steered continuations: the second "
    "readout and the fluency cost (~13 min more on 2 CPU cores), e.g. qwen2.5-coder-0.5b.",
)
@device_option(help=None)
@friendly_errors
def demo_cmd(out: str, benchmark: bool, judge: str | None, device: str | None) -> None:
    """The whole pipeline offline on the embedded default, then a report.

    \b
    Examples:
      xsteer demo --out runs/demo                # then open the report.html it prints
      xsteer demo --judge qwen2.5-coder-0.5b     # with the judge readout (XSTEER_ZOO=full set-up)
      xsteer demo --benchmark --out runs/demo-b  # Gemma-3-270M -> SmolLM2-135M on built-in problems
    """
    from xsteer.app.demo import run_demo

    check_output(out, folder=True)
    if judge is not None and benchmark:
        raise InputError("--judge belongs to the fidelity demo; --benchmark reads no judge")
    run_demo(out, device=device, benchmark=benchmark, judge=judge)
