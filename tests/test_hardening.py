"""Bad input never costs a user a run: each class of input from the hardening review, reproduced.

Every case is one clear line (no traceback, no raw exception name), exit code != 0, and no file written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from xsteer.app.cli import main
from xsteer.core.vectors import SteeringVectors


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_clean_error(res, message: str) -> None:
    assert res.exit_code not in (0, None), res.output
    assert message in res.output, res.output
    assert "Traceback" not in res.output
    for raw in ("KeyError", "TypeError:", "JSONDecodeError", "UnicodeDecodeError", "AttributeError"):
        assert raw not in res.output, res.output


def vectors(n_layers=3, d=32, model_id="tiny-llama0", layers=None, seed=0) -> SteeringVectors:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(n_layers, d, generator=g)
    return SteeringVectors(
        v / v.norm(dim=-1, keepdim=True), model_id, "random", tuple(layers or range(n_layers))
    )


# ------------------------------------------------------------------ 5: an output equal to an input
def test_output_equal_to_an_input_is_refused(tiny_dir, tmp_path):
    v = tmp_path / "v.safetensors"
    vectors(model_id=tiny_dir.name).save(v)
    before = v.read_bytes()
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        json.dumps({"positive": "yes a", "negative": "no b"})
        + "\n"
        + json.dumps({"positive": "yes c", "negative": "no d"})
    )
    link = tmp_path / "link.jsonl"
    link.symlink_to(pairs)
    assert_clean_error(
        run("extract", "--parent", tiny_dir, "--pairs", pairs, "--out", link), "would destroy the input"
    )
    assert_clean_error(
        run("transfer", "--vectors", v, "--child", tiny_dir, "--out", v), "would destroy the input"
    )
    assert v.read_bytes() == before and json.loads(pairs.read_text().splitlines()[0])["positive"] == "yes a"


# ------------------------------------------------------------------ 6: numeric options at the boundary
@pytest.mark.parametrize("option, value", [("--batch-size", "-1"), ("--batch-size", "0"), ("--n-pairs", "0")])
def test_numeric_options_are_validated_before_anything_runs(tiny_dir, tmp_path, option, value):
    out = tmp_path / "v.safetensors"
    res = run("extract", "--parent", tiny_dir, "--dataset", "synthetic", option, value, "--out", out)
    assert_clean_error(res, "is not in the range")
    assert not out.exists()


def test_library_refuses_nonpositive_batch_sizes(tiny_dir):
    from xsteer.core.activations import last_token_resid
    from xsteer.core.models import load_model
    from xsteer.errors import InputError

    model = load_model(str(tiny_dir), device="cpu")
    with pytest.raises(InputError, match="batch_size"):
        last_token_resid(model, ["a", "b"], batch_size=-1)


# ------------------------------------------------------------------ 7: a map for another child
def test_map_for_another_child_is_refused(tmp_path):
    from xsteer.transfer.maps import fit_transfer_from_activations

    g = torch.Generator().manual_seed(0)
    tmap = fit_transfer_from_activations(
        torch.randn(4, 40, 24, generator=g),
        torch.randn(3, 40, 32, generator=g),
        parent_id="tiny-parent",
        child_id="smollm2-135m",
        width_map="ridge",
    )
    tmap.save(tmp_path / "p2c.map.safetensors")
    vectors(4, 24, model_id="tiny-parent").save(tmp_path / "p.safetensors")
    res = run(
        "transfer",
        "--vectors",
        tmp_path / "p.safetensors",
        "--child",
        "gemma3-270m",
        "--map",
        tmp_path / "p2c.map.safetensors",
        "--out",
        tmp_path / "out.safetensors",
    )
    assert_clean_error(res, "fitted for child 'smollm2-135m', not 'gemma3-270m'")
    assert not (tmp_path / "out.safetensors").exists()


# ------------------------------------------------------------------ 8: pairs without contrast
def test_identical_pairs_are_refused_by_name(tiny_dir, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    rows = [
        {"positive": "same text", "negative": "same text", "id": "twins"},
        {"positive": "yes", "negative": "no"},
    ]
    pairs.write_text("\n".join(json.dumps(r) for r in rows))
    assert_clean_error(
        run("extract", "--parent", tiny_dir, "--pairs", pairs, "--out", tmp_path / "v.safetensors"), "twins"
    )
    # Texts that differ only in surrounding whitespace carry no contrast either.
    rows = [{"positive": "hello ", "negative": "hello", "id": "ws"}, {"positive": "yes", "negative": "no"}]
    pairs.write_text("\n".join(json.dumps(r) for r in rows))
    assert_clean_error(
        run("extract", "--parent", tiny_dir, "--pairs", pairs, "--out", tmp_path / "v.safetensors"), "ws"
    )
    assert not (tmp_path / "v.safetensors").exists()


def test_effect_size_of_a_spreadless_layer_is_undefined_not_huge():
    from xsteer.extraction.extract import fit_directions

    pos = torch.zeros(4, 1, 8)
    neg = torch.zeros(4, 1, 8)
    pos[:, 0, 0] = 1.0  # every pair differs by exactly the same vector: no spread at all
    _, stats = fit_directions(pos, neg, method="mean_diff")
    assert stats[0]["separation"] == 1.0 and stats[0]["effect_size"] != stats[0]["effect_size"]  # NaN


# ------------------------------------------------------------------ 9: the device is applied, checked, recorded
def test_device_that_does_not_exist_fails_before_loading(monkeypatch, tiny_dir, tmp_path):
    from xsteer.core import models
    from xsteer.errors import DeviceError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(models.load, "load_hf", lambda *a, **k: pytest.fail("weights were loaded"))
    with pytest.raises(DeviceError, match="no usable CUDA GPU"):
        models.load_model(str(tiny_dir), device="cuda")
    with pytest.raises(DeviceError, match="unknown device .tpu."):
        models.resolve_device("tpu")
    res = run(
        "extract",
        "--parent",
        tiny_dir,
        "--dataset",
        "synthetic",
        "--device",
        "cuda",
        "--out",
        tmp_path / "v.safetensors",
    )
    assert_clean_error(res, "no usable CUDA GPU")


def test_model_is_moved_to_the_device_and_checked(tiny_dir):
    """A model handed to the bridge is moved explicitly (TransformerLens does not move it); the placement
    check fails loudly when any parameter is elsewhere. 'meta' stands in for a GPU on this CPU machine."""
    from conftest import tiny_hf

    from xsteer.core.models import check_placement, runtime, wrap
    from xsteer.errors import DeviceError

    hf, tok = tiny_hf("llama", d_model=32, n_layers=2)
    model = wrap(hf, tok, model_id="tiny", device="meta")
    assert {p.device.type for p in model.parameters()} == {"meta"} and runtime(model)["device"] == "meta"
    cpu = wrap(*tiny_hf("llama", d_model=32, n_layers=2), model_id="tiny", device="cpu")
    with pytest.raises(DeviceError, match="not on the requested device"):
        check_placement(cpu, "cuda")


def test_device_and_dtype_are_recorded_in_outputs(tiny_dir, tmp_path):
    res = run(
        "extract",
        "--parent",
        tiny_dir,
        "--dataset",
        "synthetic",
        "--n-pairs",
        4,
        "--out",
        tmp_path / "v.safetensors",
    )
    assert res.exit_code == 0, res.output
    extra = SteeringVectors.load(tmp_path / "v.safetensors").extra
    assert extra["device"] == "cpu" and extra["dtype"] == "float32"


# ------------------------------------------------------------------ 10: reserved names, duplicate λ, cheap checks first
@pytest.mark.parametrize(
    "args, message",
    [
        (["--vectors", "random=V"], "reserved"),
        (["--vectors", "baseline=V"], "reserved"),
        (["--vectors", "parent=V", "--lambdas", "0.1,0.1"], "repeats [0.1]"),
        (["--vectors", "parent=V", "--test-items", "0"], "is not in the range"),
    ],
)
def test_evaluate_refuses_before_loading(tiny_dir, tmp_path, monkeypatch, args, message):
    from xsteer.core import models

    v = tmp_path / "v.safetensors"
    vectors(model_id=tiny_dir.name).save(v)
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    args = [a.replace("=V", f"={v}") for a in args]
    res = run("evaluate", "--child", tiny_dir, "--dataset", "synthetic", *args, "--out", tmp_path / "run")
    assert_clean_error(res, message)
    assert not (tmp_path / "run" / "records.jsonl").exists()


def test_huge_pair_texts_are_refused(tiny_dir, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(
        json.dumps({"positive": "a" * 100_000, "negative": "b"})
        + "\n"
        + json.dumps({"positive": "x", "negative": "y"})
    )
    assert_clean_error(
        run("extract", "--parent", tiny_dir, "--pairs", pairs, "--out", tmp_path / "v.safetensors"),
        "characters",
    )


# ------------------------------------------------------------------ 11: tracebacks
def test_output_under_a_regular_file_is_one_line(tiny_dir, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for args in (
        ["extract", "--parent", tiny_dir, "--dataset", "synthetic", "--out", blocker / "v.safetensors"],
        ["evaluate", "--child", tiny_dir, "--dataset", "synthetic", "--out", blocker / "run"],
    ):
        assert_clean_error(run(*args), "is a file")


def test_offline_hub_ids_and_datasets_are_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("XSTEER_DATA_DIR", raising=False)
    assert_clean_error(
        run(
            "extract",
            "--parent",
            "nosuchorg/nosuchmodel",
            "--dataset",
            "synthetic",
            "--out",
            tmp_path / "v.safetensors",
        ),
        "could not load 'nosuchorg/nosuchmodel'",
    )
    res = run(
        "extract", "--parent", "smollm2-135m", "--dataset", "gsm8k", "--out", tmp_path / "v.safetensors"
    )
    assert_clean_error(res, "--data-dir")


@pytest.mark.parametrize("content", [b"", b"junk junk junk", b'\x08\x00\x00\x00\x00\x00\x00\x00{"a"'])
def test_junk_or_truncated_map_is_one_line(tmp_path, content):
    bad = tmp_path / "bad.map.safetensors"
    bad.write_bytes(content)
    vectors(4, 24, model_id="p").save(tmp_path / "p.safetensors")
    res = run(
        "transfer",
        "--vectors",
        tmp_path / "p.safetensors",
        "--child",
        "smollm2-135m",
        "--map",
        bad,
        "--out",
        tmp_path / "o.safetensors",
    )
    assert_clean_error(res, "transfer map")


# ------------------------------------------------------------------ 12: raw exception names
def _vector_file_with_meta(path: Path, meta: str) -> Path:
    from safetensors.torch import save_file

    save_file({"vectors": torch.ones(3, 4)}, str(path), metadata={"xsteer": meta})
    return path


@pytest.mark.parametrize(
    "meta, message",
    [
        ('{"model_id": "m", "method": "x"}', "lacks layers"),
        ('{"model_id": "m", "method": "x", "layers": [0], "colour": 1}', "unknown key(s) colour"),
        ('{"model_id": "m", "method": ', "not valid JSON"),
    ],
)
def test_bad_vector_metadata_is_named(tmp_path, meta, message):
    path = _vector_file_with_meta(tmp_path / "v.safetensors", meta)
    assert_clean_error(run("info", path), message)


def test_data_row_without_its_answer_names_file_and_line(tmp_path):
    from xsteer.errors import InputError
    from xsteer.tasks import get_task

    (tmp_path / "gsm8k").mkdir()
    (tmp_path / "gsm8k" / "test.jsonl").write_text(
        '{"question": "q", "answer": "x #### 1"}\n{"question": "q2"}\n'
    )
    with pytest.raises(InputError, match=r"test\.jsonl:2: the row has no 'answer' field"):
        get_task("gsm8k").load("test", data_dir=tmp_path)


def test_non_utf8_files_are_named(tiny_dir, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_bytes('{"positive": "caf\u00e9", "negative": "tea"}\n'.encode("latin-1"))
    assert_clean_error(
        run("extract", "--parent", tiny_dir, "--pairs", pairs, "--out", tmp_path / "v.safetensors"),
        "not UTF-8",
    )
    cfg = tmp_path / "c.yaml"
    cfg.write_bytes("name: caf\u00e9\n".encode("latin-1"))
    assert_clean_error(run("grid", cfg, "--check"), "not UTF-8")


# ------------------------------------------------------------------ 13: grid --check catches what the run would reject
@pytest.mark.parametrize(
    "change, key",
    [
        ({"pairs": {"n": "ten"}}, "pairs.n"),
        ({"datasets": [{"name": "synthetic", "val_items": -1}]}, "val_items"),
        ({"datasets": [{"name": "synthetic", "test_items": -5}]}, "test_items"),
        ({"eval": {"max_new_tokens": "64"}}, "eval.max_new_tokens"),
        ({"eval": {"lambdas": 0.1}}, "eval.lambdas"),
        ({"eval": {"batch_size": 0}}, "eval.batch_size"),
        ({"seed": "abc"}, "seed"),
        ({"device": "tpu"}, "device"),
        ({"transfer": {"layer_map": "explicit"}}, "transfer.mapping"),
        ({"controls": {"random": "yes"}}, "controls.random"),
    ],
)
def test_grid_check_rejects_what_the_run_would(tiny_dir, tmp_path, change, key):
    import yaml

    cfg = {
        "name": "t",
        "parents": [str(tiny_dir)],
        "children": [str(tiny_dir)],
        "datasets": [{"name": "synthetic"}],
        "transfer": {"fit_text": "synthetic:train:24"},
    }
    cfg.update(change)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    res = run("grid", path, "--check", "--out", tmp_path / "runs")
    assert_clean_error(res, key)


# ------------------------------------------------------------------ 15: messages that say what is wrong
@pytest.mark.parametrize(
    "spec, message", [("-40", "layer -40 is outside"), ("5-3", "runs backwards"), ("7", "layer 7 is outside")]
)
def test_layer_specs_name_the_real_problem(spec, message):
    import click

    from xsteer.app.cli_common import parse_layers

    with pytest.raises(click.BadParameter, match=message):
        parse_layers(spec, 30 if spec != "7" else 4)
    assert parse_layers("-1,2-3", 30) == [2, 3, 29]


def test_extract_creates_a_missing_output_folder(tiny_dir, tmp_path):
    out = tmp_path / "new" / "deeper" / "v.safetensors"
    res = run("extract", "--parent", tiny_dir, "--dataset", "synthetic", "--n-pairs", 4, "--out", out)
    assert res.exit_code == 0, res.output
    assert out.exists()


def test_shared_files_get_ordinary_permissions(tmp_path):
    from xsteer.core.io import write_text_atomic

    old = os.umask(0o022)
    try:
        p = write_text_atomic(tmp_path / "report.html", "<html></html>")
    finally:
        os.umask(old)  # the process's umask is every later test's too
    assert oct(p.stat().st_mode & 0o777) == oct(0o644)


# ------------------------------------------------------------------ checked before a model loads
@pytest.fixture
def no_model_loads(monkeypatch):
    import xsteer.app.fidelity as fidelity
    import xsteer.core.models as models

    def fail(*a, **k):
        pytest.fail("a model was loaded")

    monkeypatch.setattr(models, "load_model", fail)
    monkeypatch.setattr(fidelity, "run_pair", fail)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--lambdas", "0.02,0.04"], "has one sign only"),
        (["--lambdas", "-0.04,-0.02"], "has one sign only"),
        (["--layers", "40-50"], "layers '40-50' are outside 0..2 for child"),
    ],
)
def test_fidelity_refuses_before_loading(tiny_dir, tmp_path, no_model_loads, args, message):
    out = tmp_path / "fid"
    res = run("fidelity", "--parent", "smollm2-135m", "--child", tiny_dir, *args, "--out", out)
    assert_clean_error(res, message)
    assert not out.exists()


def test_failed_fidelity_leaves_no_spec(tiny_dir, tmp_path, monkeypatch):
    import xsteer.app.fidelity as fidelity
    from xsteer.errors import ModelSpecError

    def fail(*a, **k):
        raise ModelSpecError("cannot load the parent")

    monkeypatch.setattr(fidelity, "run_pair", fail)
    out = tmp_path / "fid"
    res = run("fidelity", "--parent", "smollm2-135m", "--child", tiny_dir, "--out", out)
    assert_clean_error(res, "cannot load the parent")
    assert not out.exists()
    out.mkdir()  # an existing folder stays, without a spec.json that says a study was started
    res = run("fidelity", "--parent", "smollm2-135m", "--child", tiny_dir, "--out", out)
    assert_clean_error(res, "cannot load the parent")
    assert out.is_dir() and not (out / "spec.json").exists()


def test_failed_tune_leaves_no_run_folder(tiny_dir, tmp_path):
    vectors(n_layers=4, d=16).save(tmp_path / "v.safetensors")  # another model's vectors
    out = tmp_path / "run"
    res = run(
        "tune", "--child", tiny_dir, "--vectors", tmp_path / "v.safetensors", "--dataset", "synthetic",
        "--val-items", 2, "--lambdas", "0.1", "--out", out,
    )  # fmt: skip
    assert_clean_error(res, "map them into the child's space first")
    assert not out.exists()


def test_lmeval_export_refuses_lambda_zero(tmp_path):
    from xsteer.core.vectors import VectorFileError
    from xsteer.interop.lmeval import export_lmeval

    src = vectors().save(tmp_path / "v.safetensors")
    res = run("export", src, "--format", "lm-eval", "--lam", 0, "--out", tmp_path / "v.pt")
    assert_clean_error(res, "must not be 0")
    with pytest.raises(VectorFileError, match="must not be 0"):
        export_lmeval(vectors(), tmp_path / "v.pt", lam=0.0)
    assert not (tmp_path / "v.pt").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--scale", "nan"], "must be a finite, non-zero number, got nan"),
        (["--scale", "0"], "must be a finite, non-zero number, got 0.0"),
        (["--model-hint", ""], "must be a llama.cpp architecture name"),
    ],
)
def test_gguf_export_options_are_one_line(tmp_path, monkeypatch, args, message):
    import xsteer.core.vectors as cv

    src = vectors().save(tmp_path / "v.safetensors")
    monkeypatch.setattr(cv.SteeringVectors, "load", lambda *a: pytest.fail("the vectors were read"))
    res = run("export", src, "--format", "gguf", *args, "--out", tmp_path / "v.gguf")
    assert_clean_error(res, message)
    assert not (tmp_path / "v.gguf").exists()


def test_yaml_key_given_twice_is_named_with_its_line(tmp_path):
    from xsteer.app.config import load_config
    from xsteer.errors import ConfigError

    path = tmp_path / "grid.yaml"
    path.write_text("name: t\nparents: [a]\nchildren: [b]\nparents: [c]\ndatasets: [gsm8k]\n")
    with pytest.raises(ConfigError, match=r"grid.yaml:4: key 'parents' is given twice \(first on line 2\)"):
        load_config(path)
