"""`xsteer check-model`: a sound model passes every check; a broken one fails the check that names its fault."""

from __future__ import annotations

import copy

import pytest
import torch
from click.testing import CliRunner
from conftest import tiny_hf

from xsteer.app.cli import main
from xsteer.core.models import check as check_mod
from xsteer.core.models import wrap
from xsteer.core.models.check import format_table, run_checks


def tiny_pair(dtype: torch.dtype = torch.float32):
    hf, tok = tiny_hf("llama", d_model=32, n_layers=3)
    hf = hf.to(dtype)
    reference = copy.deepcopy(hf)
    return wrap(hf, tok, model_id="tiny-llama", device="cpu"), reference


def offset_resid(model, layer: int, by: float = 0.5):
    """Break the bridge: every read of block `layer`'s output is off by a constant, which HF does not see."""
    model.hook_dict[f"blocks.{layer}.hook_resid_post"].add_hook(lambda x, hook: x + by, is_permanent=True)
    return model


def by_name(rows):
    return {r.check: r for r in rows}


def test_a_sound_model_passes_every_check():
    model, reference = tiny_pair()
    rows = run_checks(model, reference, max_new_tokens=8)
    assert all(r.ok for r in rows), format_table(rows)
    names = [r.check for r in rows]
    assert names == [
        "resid L0",
        "resid L1",
        "resid L2",
        "logits",
        "steer λ=0",
        "steer λ·v L1",
        "generate static cache",
        "generate dynamic cache",
    ]
    assert by_name(rows)["steer λ=0"].abs_err == 0.0


def test_an_offset_residual_fails_that_layer_and_what_follows():
    model, reference = tiny_pair()
    offset_resid(model, layer=1)
    rows = by_name(run_checks(model, reference, max_new_tokens=8))
    assert rows["resid L0"].ok
    assert not rows["resid L1"].ok and rows["resid L1"].abs_err == pytest.approx(0.5, rel=1e-3)
    assert not rows["resid L2"].ok and not rows["logits"].ok
    # steering and the caches are consistent with the (broken) forward they run through
    assert rows["steer λ=0"].ok and rows["steer λ·v L1"].ok and rows["generate static cache"].ok


def test_in_bf16_the_bridge_is_held_against_fp32_and_still_caught_when_broken():
    # The bridge and HF round differently in bf16, so neither is the other's reference there: both are
    # compared with the same weights in fp32, and the bridge may err at most LOW_PRECISION_FACTOR times as much.
    model, reference = tiny_pair(torch.bfloat16)
    rows = run_checks(model, reference, max_new_tokens=8)
    assert all(r.ok for r in rows), format_table(rows)
    assert "vs HF in fp32" in by_name(rows)["resid L0"].detail
    assert all(r.tol > check_mod.FORWARD_TOL[torch.float32] for r in rows if r.check.startswith("resid"))
    broken = by_name(run_checks(offset_resid(tiny_pair(torch.bfloat16)[0], 1), reference, max_new_tokens=8))
    assert broken["resid L0"].ok and not broken["resid L1"].ok and not broken["logits"].ok


def test_in_fp32_any_parting_of_the_generations_fails_and_in_bf16_only_a_far_one(monkeypatch):
    model, _ = tiny_pair()
    from xsteer.core import generate as gen_mod

    real = gen_mod.generate

    def one_token_off(*a, **k):  # the cached path's first token replaced by the no-cache path's runner-up
        out = real(*a, **k)
        return [gen_mod.Generation("~" + g.text[1:], g.n_tokens, g.finish) for g in out]

    monkeypatch.setattr(gen_mod, "generate", one_token_off)
    monkeypatch.setattr(check_mod, "_margin_at_divergence", lambda *a: 0.5)
    assert not by_name(check_mod.check_generation(model, max_new_tokens=4))["generate static cache"].ok
    near = by_name(check_mod.check_generation(model, max_new_tokens=4, tie=1.0))["generate static cache"]
    assert near.ok and "near tie" in near.detail
    assert not by_name(check_mod.check_generation(model, max_new_tokens=4, tie=0.25))[
        "generate static cache"
    ].ok


def test_steering_that_adds_the_wrong_amount_fails_the_planted_check(monkeypatch):
    from xsteer.core.inject import SteeringHandle

    model, reference = tiny_pair()
    hook = SteeringHandle.hook

    def off_by_one_percent(self, layer):
        add = hook(self, layer)
        return lambda resid, hook=None: resid + 1.01 * (add(resid, hook) - resid)

    monkeypatch.setattr(SteeringHandle, "hook", off_by_one_percent)
    rows = by_name(check_mod.check_steering(model))
    assert rows["steer λ=0"].ok and not rows["steer λ·v L1"].ok


def test_cli_passes_a_sound_local_model(tiny_dir):
    res = CliRunner().invoke(main, ["check-model", str(tiny_dir), "--device", "cpu", "--max-new-tokens", "6"])
    assert res.exit_code == 0, res.output
    assert "resid L2" in res.output and "generate static cache" in res.output
    assert "all 8 checks passed" in res.output


def test_cli_exits_nonzero_and_names_the_failing_check(tiny_dir, monkeypatch):
    model, reference = tiny_pair()
    monkeypatch.setattr(
        check_mod, "load_with_reference", lambda spec, device=None: (offset_resid(model, 1), reference)
    )
    res = CliRunner().invoke(main, ["check-model", str(tiny_dir), "--max-new-tokens", "6"])
    assert res.exit_code == 1, res.output
    fail_line = res.output.strip().splitlines()[-1]
    assert fail_line.startswith("Error:") and "resid L1" in fail_line and "resid L0" not in fail_line
    assert any(ln.startswith("resid L1") and "FAIL" in ln for ln in res.output.splitlines())


def test_cli_refuses_an_unknown_spec_in_one_line_before_loading(monkeypatch):
    def never(*a, **k):
        raise AssertionError("loaded a model for a bad spec")

    monkeypatch.setattr(check_mod, "load_with_reference", never)
    res = CliRunner().invoke(main, ["check-model", "no-such-model"])
    assert res.exit_code == 1
    assert res.output.strip().count("\n") == 0 and "unknown model spec 'no-such-model'" in res.output


def _zoo_model_passes_every_check(name: str) -> None:
    from xsteer.errors import ModelSpecError

    try:
        model, reference = check_mod.load_with_reference(name, device="cpu")
    except ModelSpecError as e:
        if "not installed" in str(e):
            pytest.skip(f"zoo model {name} not installed: {e}")
        raise
    rows = run_checks(model, reference)
    print(f"\n{name}\n{format_table(rows)}")  # the table a user would see (-s shows it)
    assert len(rows) == model.cfg.n_layers + 5
    assert all(r.ok for r in rows), format_table(rows)


def test_smollm2_passes_every_check():
    """The real thing: SmolLM2-135M from the offline zoo (~30 s on a loaded 2-core CPU, load included)."""
    _zoo_model_passes_every_check("smollm2-135m")


@pytest.mark.slow
def test_smollm2_passes_every_check_in_bf16():
    """bf16 on a CPU (XSTEER_DTYPE=bfloat16, what a CUDA load gets by default): the low-precision rules."""
    from xsteer.errors import ModelSpecError

    try:
        model, reference = check_mod.load_with_reference("smollm2-135m", device="cpu", dtype=torch.bfloat16)
    except ModelSpecError as e:
        pytest.skip(f"zoo model smollm2-135m not installed: {e}")
    rows = run_checks(model, reference)
    print(f"\nsmollm2-135m, bf16\n{format_table(rows)}")
    assert all(r.ok for r in rows), format_table(rows)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gemma3-270m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"])
def test_every_other_zoo_model_passes_every_check(name):
    """The rest of the zoo (SmolLM2 runs in the default set); each holds its weights twice while it runs."""
    _zoo_model_passes_every_check(name)


def test_new_weights_are_checked_once_and_a_failing_model_is_not_stamped(tiny_dir, tmp_path, monkeypatch):
    from xsteer.core.inject import SteeringHandle
    from xsteer.core.models import load_model
    from xsteer.core.models.check import ensure_checked
    from xsteer.errors import ModelCheckError

    model = load_model(str(tiny_dir), device="cpu")
    said: list[str] = []
    ran = []
    real = check_mod.run_checks
    monkeypatch.setattr(check_mod, "run_checks", lambda *a, **k: ran.append(1) or real(*a, **k))
    stamp = ensure_checked(str(tiny_dir), model, log=said.append, max_new_tokens=4, cache=tmp_path)
    assert stamp.is_file() and len(ran) == 1 and "new weights" in said[0]
    # The same weights loaded again: no second check.
    again = load_model(str(tiny_dir), device="cpu")
    assert ensure_checked(str(tiny_dir), again, log=said.append, cache=tmp_path) == stamp and len(ran) == 1

    # Other weights that steer wrong: refused with the table, and nothing stamped so the next load checks again.
    import torch

    with torch.no_grad():
        next(iter(again.parameters())).mul_(1.0001)  # a new fingerprint; the model itself stays sound
    hook = SteeringHandle.hook
    monkeypatch.setattr(
        SteeringHandle,
        "hook",
        lambda self, layer: (lambda add: lambda resid, hook=None: resid + 1.01 * (add(resid, hook) - resid))(
            hook(self, layer)
        ),
    )
    from xsteer.core.models.fingerprint import _CACHE

    _CACHE.pop(again, None)
    # (The edited weights also differ from the checkpoint the reference reloads: the residual checks fail too.)
    with pytest.raises(ModelCheckError, match=r"fails \d of 8 model checks \(.*steer λ·v L1\)"):
        ensure_checked(str(tiny_dir), again, log=said.append, max_new_tokens=4, cache=tmp_path)
    assert len(list((tmp_path / "checks").glob("*.json"))) == 1


def test_extract_checks_new_weights_once_and_can_be_told_not_to(tiny_dir, tmp_path, monkeypatch):
    import json

    monkeypatch.setenv("XSTEER_CACHE", str(tmp_path / "cache"))
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        "\n".join(json.dumps({"positive": f"yes {i}", "negative": f"no {i}"}) for i in range(5)) + "\n"
    )
    ran = []
    real = check_mod.run_checks
    monkeypatch.setattr(check_mod, "run_checks", lambda *a, **k: ran.append(1) or real(*a, **k))

    def extract(*extra):
        args = [
            "extract",
            "--parent",
            str(tiny_dir),
            "--pairs",
            str(pairs),
            "--out",
            str(tmp_path / "v.safetensors"),
        ]
        return CliRunner().invoke(main, [*args, *extra])

    res = extract("--no-check-model")
    assert res.exit_code == 0 and not ran and "new weights" not in res.output, res.output
    res = extract()
    assert res.exit_code == 0 and ran == [1] and "new weights, checking" in res.output, res.output
    res = extract()
    assert res.exit_code == 0 and ran == [1] and "new weights" not in res.output, res.output
