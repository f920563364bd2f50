import json

import pytest
import yaml

from xsteer.app.config import ConfigError, load_config, parse_config
from xsteer.app.grid import DONE, job_dir, run_grid


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    from conftest import tiny_hf

    dirs = []
    for name, arch, d, n, seed in [("tparent", "llama", 48, 4, 0), ("tchild", "qwen2", 32, 3, 1)]:
        path = tmp_path_factory.mktemp(name)
        hf, tok = tiny_hf(arch, d_model=d, n_layers=n, seed=seed)
        hf.save_pretrained(path)
        tok.save_pretrained(path)
        dirs.append(str(path))
    return dirs


def tiny_config(parent, child, **over):
    cfg = {
        "name": "tiny",
        "parents": [parent],
        "children": [child],
        "datasets": [{"name": "synthetic", "val_items": 2, "test_items": 3}],
        "pairs": {"n": 6},
        "transfer": {"fit_text": "synthetic:train:24"},
        "eval": {"lambdas": [0.05, 0.2], "shots": 1, "max_new_tokens": 5, "batch_size": 8},
        "controls": {"self_consistency": False},
        "device": "cpu",
    }
    cfg.update(over)
    return cfg


def records(folder):
    return sorted(
        (r["split"], r["item"], r["condition"], r["lam"], r["completion"])
        for r in map(json.loads, (folder / "records.jsonl").read_text().splitlines())
    )


def test_grid_runs_and_resumes_without_redoing(tiny_dirs, tmp_path):
    cfg = parse_config(tiny_config(*tiny_dirs))
    [job] = run_grid(cfg, tmp_path)
    folder = job_dir(tmp_path.resolve(), *tiny_dirs, "synthetic")
    assert job == str(folder) and (folder / DONE).exists() and (folder / "report.html").exists()
    summ = json.loads((folder / "summary.json").read_text())["summaries"]["correct"]
    assert [r["condition"] for r in summ["rows"]][:1] == ["baseline"]
    stamp = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    run_grid(cfg, tmp_path)  # everything is done: nothing is rewritten
    assert all(p.stat().st_mtime_ns == t for p, t in stamp.items() if p.name != "config.json")


def test_killed_job_resumes_from_its_records(tiny_dirs, tmp_path):
    cfg = parse_config(tiny_config(*tiny_dirs))
    run_grid(cfg, tmp_path)
    folder = job_dir(tmp_path.resolve(), *tiny_dirs, "synthetic")
    full = records(folder)
    # Simulate a kill part-way through the job: no done-marker, half the records (and a torn line).
    (folder / DONE).unlink()
    lines = (folder / "records.jsonl").read_text().splitlines()
    (folder / "records.jsonl").write_text(
        "\n".join(lines[: len(lines) // 2]) + "\n" + lines[len(lines) // 2][:20]
    )
    run_grid(cfg, tmp_path)
    assert records(folder) == full


@pytest.mark.slow
def test_ray_grid_equals_sequential(tiny_dirs, shared_data, tmp_path):
    pytest.importorskip("ray")
    import ray

    raw = tiny_config(
        *tiny_dirs,
        datasets=[
            {"name": "synthetic", "val_items": 2, "test_items": 3},
            {"name": "gsm8k", "val_items": 0, "test_items": 2},
        ],
    )
    raw["data_dir"] = str(shared_data)
    cfg = parse_config(raw)
    seq = run_grid(cfg, tmp_path / "seq")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        par = run_grid(cfg, tmp_path / "ray", use_ray=True)
    finally:
        ray.shutdown()
    assert len(seq) == len(par) == 2
    from pathlib import Path

    for a, b in zip(seq, par, strict=True):
        assert records(Path(a)) == records(Path(b))


@pytest.mark.parametrize(
    "change, key",
    [
        ({"colour": "blue"}, "'colour'"),
        ({"parents": ["no-such-model"]}, "parents[0]"),
        ({"eval": {"lambdas": []}}, "eval.lambdas"),
        ({"eval": {"lambdas": [0.1, float("nan")]}}, "eval.lambdas"),
        ({"eval": {"lamdas": [0.1]}}, "'lamdas'"),
        ({"datasets": [{"name": "gsm9k"}]}, "datasets[0].name"),
        ({"datasets": [{"name": "arc_challenge", "mode": "loglik", "split": "dev"}]}, "'split'"),
        ({"transfer": {"width_map": "linear"}}, "transfer.width_map"),
        ({"pairs": {"split": "dev"}}, "pairs.split"),
    ],
)
def test_bad_configs_rejected_before_any_model_loads(tiny_dirs, change, key, monkeypatch):
    import xsteer.core.models

    monkeypatch.setattr(xsteer.core.models, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        parse_config(tiny_config(*tiny_dirs, **change))


def test_missing_dataset_split_is_named(shared_data, tmp_path):
    # Offline there is no MATH train split (only MATH-500's PRM800K split): the key and split are named.
    cfg = {
        "name": "x",
        "parents": ["smollm2-135m"],
        "children": ["smollm2-135m"],
        "datasets": [{"name": "math", "val_items": 0}],
        "data_dir": str(shared_data),
    }
    with pytest.raises(ConfigError, match="datasets: dataset 'math' split 'train' is not available"):
        parse_config(cfg)
    cfg["data_dir"] = str(tmp_path)
    with pytest.raises(ConfigError, match="transfer.fit_text: dataset 'gsm8k' split 'train'"):
        parse_config(cfg)


def test_shipped_configs_are_valid(shared_data, monkeypatch):
    from pathlib import Path

    monkeypatch.setenv("XSTEER_DATA_DIR", str(shared_data))
    root = Path(__file__).resolve().parents[1] / "experiments"
    for path in root.glob("*.yaml"):
        raw = yaml.safe_load(path.read_text())
        raw["data_dir"] = str(shared_data)
        cfg = parse_config(raw, where=str(path))
        assert cfg.parents and cfg.children and cfg.datasets
    assert load_config(root / "zoo.yaml", check_data=False).name == "zoo"


def test_cli_and_grid_build_the_same_conditions(tiny_dirs, tmp_path):
    """#11.6: the README's CLI recipe (transfer --norm resid_mean, then evaluate with the parent and native vectors,
    --norm resid_mean --map) on the grid's own vectors and map writes the same records as the grid job: both
    front ends build one set of conditions (same norm convention, same random control) through app.steps."""
    from click.testing import CliRunner

    from xsteer.app.cli import main
    from xsteer.app.grid import map_path, vectors_path

    parent, child = tiny_dirs
    cfg = parse_config(tiny_config(parent, child))
    out = tmp_path / "grid"
    [job] = run_grid(cfg, out)
    out = out.resolve()
    mapped = tmp_path / "mapped.safetensors"
    cli = CliRunner()
    pmap = map_path(out, parent, child, cfg)
    args = ["transfer", "--vectors", str(vectors_path(out, parent, "synthetic")), "--child", child]
    r = cli.invoke(main, [*args, "--map", str(pmap), "--norm", "resid_mean", "--out", str(mapped)])
    assert r.exit_code == 0, r.output
    e = cfg.eval
    r = cli.invoke(main, [
        "evaluate", "--child", child, "--vectors", f"parent={mapped}",
        "--vectors", f"native={vectors_path(out, child, 'synthetic')}", "--norm", "resid_mean", "--map", str(pmap),
        "--dataset", "synthetic", "--val-items", "2", "--test-items", "3", "--lambdas", ",".join(map(str, e.lambdas)),
        "--positions", e.positions, "--shots", str(e.shots), "--max-new-tokens", str(e.max_new_tokens),
        "--no-self-consistency", "--device", "cpu", "--out", str(tmp_path / "cli"),
    ])  # fmt: skip
    assert r.exit_code == 0, r.output
    grid_records = records(job_dir(out, parent, child, "synthetic"))
    assert {r[2] for r in grid_records} == {"baseline", "parent", "native", "random"}
    assert records(tmp_path / "cli") == grid_records


def test_cli_and_grid_make_the_same_evaluation_by_default(tiny_dirs, tmp_path, monkeypatch):
    """#27.1: when neither the config nor the command line names the λ grid, the steered positions, the item
    counts or the controls, both hand the one evaluation wiring the same plan (EvalPlan's defaults), the same
    conditions and the same items. (The test above shows the same inputs write the same records; running the
    19-λ default grid here would only make the test slow.)"""
    from click.testing import CliRunner

    from xsteer.app import steps
    from xsteer.app.cli import main
    from xsteer.app.grid import map_path, vectors_path
    from xsteer.evaluation.plan import EvalPlan
    from xsteer.evaluation.run import _conditions

    class Captured(Exception):
        pass

    seen = []

    def capture(child, conditions_or_vectors, plan, *, task, norm=None, norms=None, splits=None, **_):
        conditions = _conditions(conditions_or_vectors, plan, norm, norms)
        vectors = {k: None if v is None else v.vectors for k, v in conditions.items()}
        seen.append((plan, task, vectors, [[ex.id for ex in split] for split in splits]))
        raise Captured

    monkeypatch.setattr(steps, "run_evaluation", capture)
    parent, child = tiny_dirs
    raw = tiny_config(parent, child, datasets=["synthetic"], eval={}, controls={})
    cfg = parse_config(raw)
    out = tmp_path / "grid"
    with pytest.raises(Captured):
        run_grid(cfg, out)
    out = out.resolve()
    mapped = tmp_path / "mapped.safetensors"
    cli = CliRunner()
    pmap = map_path(out, parent, child, cfg)
    args = ["transfer", "--vectors", str(vectors_path(out, parent, "synthetic")), "--child", child]
    r = cli.invoke(main, [*args, "--map", str(pmap), "--norm", "resid_mean", "--out", str(mapped)])
    assert r.exit_code == 0, r.output
    r = cli.invoke(main, [
        "evaluate", "--child", child, "--vectors", f"parent={mapped}",
        "--vectors", f"native={vectors_path(out, child, 'synthetic')}", "--norm", "resid_mean", "--map", str(pmap),
        "--dataset", "synthetic", "--device", "cpu", "--out", str(tmp_path / "cli"),
    ])  # fmt: skip
    assert isinstance(r.exception, Captured), r.output
    (grid_plan, grid_task, grid_vectors, grid_items), (cli_plan, cli_task, cli_vectors, cli_items) = seen
    assert grid_plan == cli_plan == EvalPlan() and grid_task == cli_task == "synthetic"
    assert grid_items == cli_items and len(grid_items[0]) == EvalPlan.val_items
    assert list(grid_vectors) == list(cli_vectors) == ["baseline", "parent", "native", "random"]
    for name, v in grid_vectors.items():
        assert (v is None and cli_vectors[name] is None) or bool((v == cli_vectors[name]).all()), name
