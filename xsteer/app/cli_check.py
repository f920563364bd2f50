"""``xsteer check-model``: is this model safe to steer? (see :mod:`xsteer.core.models.check`).

A plain ``click`` command; :mod:`xsteer.app.cli` registers it on the ``xsteer`` group.
"""

from __future__ import annotations

import click

from xsteer.app.cli_common import check_spec, device_option, friendly_errors


@click.command("check-model")
@click.argument("model_spec", metavar="MODEL")
@device_option()
@click.option(
    "--max-new-tokens",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="Tokens per generation.",
)
@friendly_errors
def check_model_cmd(model_spec: str, device: str | None, max_new_tokens: int) -> None:
    """Check that MODEL is read and steered right: per-layer residuals and logits against plain Hugging Face,
    λ = 0 and a planted λ·v, and KV-cached generation against a no-cache reference. Exits 1 on any mismatch.

    MODEL is a zoo name, a .gguf file, a local Hugging Face folder or a hub id. The check holds a second,
    untouched copy of the weights in memory.

    \b
    Examples:
      xsteer check-model smollm2-135m
      xsteer check-model ./my-finetune --device cuda
    """
    from xsteer.core.models import model_id, resolve_device
    from xsteer.core.models.check import format_table, load_with_reference, run_checks

    check_spec(model_spec)
    resolve_device(device)
    model, reference = load_with_reference(model_spec, device=device)
    param = next(model.parameters())
    click.echo(
        f"{model_id(model)}: {model.cfg.n_layers} layers x d_model {model.cfg.d_model}, "
        f"{str(param.dtype).removeprefix('torch.')} on {param.device}"
    )
    rows = run_checks(model, reference, max_new_tokens=max_new_tokens)
    click.echo(format_table(rows))
    failed = [r.check for r in rows if not r.ok]
    if failed:
        raise click.ClickException(f"{len(failed)} of {len(rows)} checks failed: {', '.join(failed)}")
    click.echo(f"all {len(rows)} checks passed")
