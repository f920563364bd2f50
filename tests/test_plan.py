"""#27.1: one evaluation plan with one set of defaults. Every entry point's defaults are EvalPlan's (the CLI's
options, xs.evaluate's keywords, the grid config's keys), so the same evaluation asked for in two places gives
the same records; any default that drifts fails here by name."""

from __future__ import annotations

import inspect
import json
from dataclasses import MISSING, fields

import pytest

import xsteer as xs
from xsteer.app.cli import main
from xsteer.app.cli_common import parse_lambdas
from xsteer.app.config import (
    ControlsSpec,
    DatasetSpec,
    EvalSpec,
    ExperimentConfig,
    TransferSpec,
    parse_config,
)
from xsteer.errors import InputError
from xsteer.evaluation.plan import (
    DEFAULT_NORM_TEXT,
    PAPER_GRID,
    PRESETS,
    EvalConfig,
    EvalPlan,
    check_mode,
    check_positions,
)
from xsteer.transfer.maps import DEFAULT_FIT_TEXT

PLAN = {f.name: f.default for f in fields(EvalPlan)}

#: CLI parameter -> the plan field it sets.
CLI_FIELDS = {
    "mode": "mode",
    "lambdas": "lambdas",
    "positions": "positions",
    "shots": "shots",
    "max_new_tokens": "max_new_tokens",
    "val_items": "val_items",
    "test_items": "test_items",
    "batch_size": "batch_size",
    "seed": "seed",
    "random_control": "random",
    "self_consistency": "self_consistency",
}
#: Options that share a name with a plan field but mean something else, so their defaults are their own.
OTHER_MEANING = {
    ("ablate", "lambdas"): "the one λ every layer profile is scored at, not a grid to search",
    ("ablate", "batch_size"): "scored forward passes of layer profiles",
    ("extract", "batch_size"): "activation passes over the pairs",
    ("transfer", "batch_size"): "activation passes over the fit texts",
    ("similarity", "batch_size"): "activation passes over the texts",
    ("fidelity", "batch_size"): "dose-response passes over the probes",
    ("fidelity", "lambdas"): "the dose-response grid, signed and relative to the residual norm",
    ("check-model", "max_new_tokens"): "greedy tokens of the cache-vs-no-cache generation check",
}
#: Options whose default is the map fit texts.
FIT_TEXT = {("transfer", "fit_text"), ("similarity", "text_spec")}


def cli_default(name: str, value):
    return parse_lambdas(value) if name == "lambdas" else value


def test_every_cli_default_is_the_plans():
    checked, wrong = set(), []
    for command_name, command in main.commands.items():
        for param in command.params:
            key = (command_name, param.name)
            if key in OTHER_MEANING:
                continue
            if key in FIT_TEXT:
                checked.add(key)
                if param.default != DEFAULT_FIT_TEXT:
                    wrong.append(f"{command_name} --{param.name}: {param.default!r} != {DEFAULT_FIT_TEXT!r}")
            elif param.name in CLI_FIELDS:
                checked.add(key)
                want = PLAN[CLI_FIELDS[param.name]]
                if cli_default(param.name, param.default) != want:
                    wrong.append(f"{command_name} --{param.name}: {param.default!r} != EvalPlan's {want!r}")
    assert not wrong, "defaults that differ from EvalPlan's:\n" + "\n".join(wrong)
    # the walk saw the evaluation commands' options, so it cannot pass by finding nothing
    for command_name, names in {
        "evaluate": CLI_FIELDS,
        "tune": {k for k in CLI_FIELDS if k not in ("test_items", "random_control", "self_consistency")},
        "ablate": ("mode", "positions", "shots", "max_new_tokens", "seed"),
    }.items():
        assert {(command_name, n) for n in names} <= checked, command_name
    assert FIT_TEXT <= checked
    # every exception names an option that exists
    params = {(c, p.name) for c, cmd in main.commands.items() for p in cmd.params}
    assert set(OTHER_MEANING) <= params


def test_evaluate_measures_norms_on_the_documented_texts():
    [fit_text] = [p for p in main.commands["evaluate"].params if p.name == "fit_text"]
    assert fit_text.default is None and DEFAULT_NORM_TEXT.format(dataset="TASK") in (fit_text.help or "")


def test_python_api_defaults_are_the_plans():
    params = inspect.signature(xs.evaluate).parameters
    shared = [name for name in PLAN if name in params]
    assert set(shared) >= set(PLAN) - {"sc_temperature"}
    wrong = [f"{n}: {params[n].default!r} != {PLAN[n]!r}" for n in shared if params[n].default != PLAN[n]]
    assert not wrong, wrong


def test_grid_config_defaults_are_the_plans():
    spec_fields = {
        DatasetSpec: ("mode", "val_items", "test_items"),
        EvalSpec: ("lambdas", "positions", "shots", "max_new_tokens", "batch_size"),
        ControlsSpec: ("random", "self_consistency"),
        ExperimentConfig: ("seed",),
    }
    for cls, names in spec_fields.items():
        defaults = {f.name: f.default for f in fields(cls) if f.default is not MISSING}
        for name in names:
            assert defaults[name] == PLAN[name], (
                f"{cls.__name__}.{name}: {defaults[name]!r} != {PLAN[name]!r}"
            )
    assert TransferSpec().fit_text == DEFAULT_FIT_TEXT
    # and a job of a config that leaves every key out runs exactly the default plan
    cfg = parse_config(
        {"name": "d", "parents": ["smollm2-135m"], "children": ["smollm2-135m"], "datasets": ["synthetic"]},
        check_data=False,
    )
    assert cfg.eval_plan("synthetic") == EvalPlan()


def test_the_defaults_themselves():
    plan = EvalPlan()
    assert plan.positions == "all" and plan.lambdas == PAPER_GRID and len(plan.lambdas) == 19
    assert (plan.val_items, plan.test_items, plan.shots, plan.max_new_tokens) == (32, None, 5, 256)
    assert DEFAULT_FIT_TEXT == "gsm8k:train:512" and DEFAULT_NORM_TEXT == "{dataset}:train:128"


def test_eval_config_is_the_plans_and_hashes_as_before():
    assert EvalPlan().config("gsm8k") == EvalConfig("gsm8k")
    # Hashes made before the plan existed: records written then must still be found (and resumed).
    assert EvalConfig("gsm8k").hash("m", None) == "8e987ab700a0f848"
    plan = EvalPlan(shots=2, lambdas=(0.01, 0.03), positions="generated", max_new_tokens=96, seed=3)
    assert plan.config("synthetic").hash("m", None) == "7618a890208cf45f"
    assert (
        EvalPlan(mode="loglik", lambdas=(0.1,)).config("arc_challenge").hash("m", None) == "9cc5026d79bc145e"
    )
    # A model in another dtype makes other records (greedy text differs); fp32 keeps the hashes above.
    assert EvalConfig("gsm8k").hash("m", None, dtype=None) == "8e987ab700a0f848"
    assert EvalConfig("gsm8k").hash("m", None, dtype="bfloat16") != "8e987ab700a0f848"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"lambdas": ()}, "empty"),
        ({"lambdas": (0.1, 0.1)}, "repeats"),
        ({"shots": -1}, "shots"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"sc_temperature": 0.0}, "sc_temperature"),
        ({"val_items": -1}, "val_items"),
        ({"test_items": 0}, "test_items"),
        ({"batch_size": 0}, "batch_size"),
        ({"seed": -1}, "seed"),
    ],
)
def test_plan_refuses_bad_settings_when_made(change, message):
    with pytest.raises(InputError, match=message):
        EvalPlan(**change)


def test_mode_and_positions_from_text_are_checked_once():
    # Text from the CLI, a config or a notebook becomes the plan's Literal types through these checks (the
    # plan runs them too, for callers without a type checker).
    assert check_mode("loglik") == "loglik" and check_positions("generated") == "generated"
    with pytest.raises(InputError, match="positions must be 'all' or 'generated'"):
        check_positions("prompt")
    with pytest.raises(InputError, match="unknown mode"):
        check_mode("sample")


def test_a_mode_the_task_lacks_is_refused_by_the_plans_config():
    plan = EvalPlan(mode="loglik")
    with pytest.raises(InputError, match="multiple-choice"):
        plan.config("gsm8k")


def test_python_api_and_cli_write_the_same_records_by_default(tiny_dir, tmp_path):
    """xs.evaluate and `xsteer evaluate` given only the same explicit settings (no positions, no random-control
    or self-consistency flags) make the same records: before the plan, the API steered generated tokens only."""
    from click.testing import CliRunner
    from test_cli import unit_vectors

    from xsteer.core.models import load_model
    from xsteer.core.vectors import SteeringVectors

    vec = tmp_path / "v.safetensors"
    unit_vectors(3, 32, model_id=tiny_dir.name).save(vec)
    lambdas = (0.0, 4.0)
    res = CliRunner().invoke(
        main,
        ["evaluate", "--child", str(tiny_dir), "--vectors", f"parent={vec}", "--dataset", "synthetic",
         "--shots", "0", "--max-new-tokens", "4", "--val-items", "2", "--test-items", "2",
         "--lambdas", "0,4", "--device", "cpu", "--out", str(tmp_path / "cli")],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    summary = xs.evaluate(
        load_model(str(tiny_dir), device="cpu"),
        {"parent": SteeringVectors.load(vec)},
        task="synthetic",
        lambdas=lambdas,
        shots=0,
        max_new_tokens=4,
        val_items=2,
        test_items=2,
        out=tmp_path / "api",
        progress=False,
    )

    def records(folder):
        rows = map(json.loads, (folder / "records.jsonl").read_text().splitlines())
        return sorted(
            (r["config"], r["split"], r["item"], r["condition"], r["lam"], r["completion"]) for r in rows
        )

    assert records(tmp_path / "cli") == records(summary.folder)
    assert {r[3] for r in records(summary.folder)} == {"baseline", "parent", "random", "self_consistency"}
    doc = json.loads((tmp_path / "cli" / "summary.json").read_text())
    assert doc["config"]["positions"] == "all" and doc["config_hash"] == summary.config_hash


# ---------------------------------------------------------------------------------------------- presets (#30)
def test_the_paper_preset_is_the_paper_as_written():
    from xsteer.extraction.methods import METHODS
    from xsteer.transfer.layermap import LAYER_MAPS
    from xsteer.transfer.widthmap import WIDTH_MAPS

    paper = PRESETS["paper"]
    # Algorithm 2 line 2 / Algorithm 3 line 3: λ ∈ {0.01, ..., 0.09} ∪ {0.1, ..., 1.0}, typed out
    assert paper.plan.lambdas == (
        0.01, 0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.09, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0
    )  # fmt: skip
    assert (paper.plan.positions, paper.plan.shots, paper.plan.mode) == ("all", 5, "generate")
    assert (paper.plan.random, paper.plan.self_consistency, paper.plan.test_items) == (False, False, None)
    assert (paper.norm, paper.method, paper.layer_map, paper.width_map) == (
        "unit",
        "pca",
        "greedy",
        "truncate_pad",
    )
    assert paper.method in METHODS and paper.layer_map in LAYER_MAPS and paper.width_map in WIDTH_MAPS
    assert EvalPlan.paper() == paper.plan and EvalPlan.paper(val_items=3).val_items == 3
    # options a user typed win; the front end's other values (its own defaults) do not
    plan = paper.plan_with({"shots": 2, "lambdas": (0.5,), "seed": 9}, explicit={"shots"})
    assert (plan.shots, plan.lambdas, plan.seed) == (2, PAPER_GRID, 0)
    with pytest.raises(InputError, match="not settings"):
        paper.plan_with({"norm": "unit"}, explicit={"norm"})


def test_the_paper_literal_config_is_the_preset():
    from pathlib import Path

    from xsteer.app.config import load_config

    cfg = load_config(Path(__file__).parents[1] / "experiments" / "paper_literal.yaml", check_data=False)
    paper = PRESETS["paper"]
    for d in cfg.datasets:  # the config's only changes: validation size, and the batch a CPU can hold
        assert cfg.eval_plan(d.name) == EvalPlan.paper(val_items=d.val_items, batch_size=cfg.eval.batch_size)
    t = cfg.transfer
    assert (t.layer_map, t.width_map, t.norm, cfg.pairs.method) == (
        paper.layer_map,
        paper.width_map,
        paper.norm,
        paper.method,
    )
    assert not (cfg.controls.native or cfg.controls.random or cfg.controls.self_consistency)


@pytest.mark.parametrize(
    "extra, want",
    [
        ([], {"lambdas": PAPER_GRID, "shots": 5, "max_new_tokens": 512, "random": False, "norm": "unit"}),
        (
            ["--lambdas", "0.1,0.2", "--shots", "2", "--random-control", "--norm", "keep"],
            {"lambdas": (0.1, 0.2), "shots": 2, "max_new_tokens": 512, "random": True, "norm": None},
        ),
    ],
)
def test_evaluate_preset_paper_and_explicit_options(tmp_path, monkeypatch, extra, want):
    from click.testing import CliRunner
    from test_cli import unit_vectors

    import xsteer.core.models
    from xsteer.app import steps

    class Captured(Exception):
        pass

    seen = {}

    def capture(model, vectors, plan, **kw):
        seen.update(plan=plan, norm=kw["norm"])
        raise Captured

    monkeypatch.setattr(xsteer.core.models, "load_model", lambda *a, **k: object())
    monkeypatch.setattr(steps, "run_evaluation", capture)
    monkeypatch.setattr(steps.NormSource, "norms", lambda self, child, **kw: None)  # no model to measure
    vec = tmp_path / "v.safetensors"
    unit_vectors(3, 32, model_id="smollm2-135m").save(vec)
    res = CliRunner().invoke(
        main,
        ["evaluate", "--preset", "paper", "--child", "smollm2-135m", "--vectors", f"parent={vec}",
         "--dataset", "synthetic", "--val-items", "2", "--test-items", "2", "--out", str(tmp_path / "o"),
         "--no-check-model", *extra],
    )  # fmt: skip
    assert isinstance(res.exception, Captured), res.output
    plan = seen["plan"]
    got = {k: getattr(plan, k) for k in ("lambdas", "shots", "max_new_tokens", "random")}
    assert {**got, "norm": seen["norm"]} == want
    assert (plan.positions, plan.val_items, plan.test_items, plan.self_consistency) == ("all", 2, 2, False)
