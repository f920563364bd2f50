import json

import pytest
from click.testing import CliRunner

from xsteer.cli import main
from xsteer.vectors import SteeringVectors


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    from conftest import tiny_hf

    path = tmp_path_factory.mktemp("tiny-llama")
    hf, tok = tiny_hf("llama", d_model=32, n_layers=3)
    hf.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_extract_from_user_pairs(tiny_dir, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("\n".join(json.dumps({"positive": f"yes {i}", "negative": f"no {i}"}) for i in range(5)))
    out = tmp_path / "v.safetensors"
    res = CliRunner().invoke(main, ["extract", "--parent", str(tiny_dir), "--pairs", str(pairs), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "separation" in res.output and len([ln for ln in res.output.splitlines() if ln.strip()[:1].isdigit()]) >= 3
    sv = SteeringVectors.load(out)
    assert sv.n_layers == 3 and sv.d_model == 32 and sv.extra["n_pairs"] == 5
    info = CliRunner().invoke(main, ["info", str(out)])
    assert info.exit_code == 0 and "pca" in info.output


def test_extract_from_synthetic_dataset(tiny_dir, tmp_path):
    out = tmp_path / "v.safetensors"
    res = CliRunner().invoke(
        main, ["extract", "--parent", str(tiny_dir), "--dataset", "synthetic", "--n-pairs", "6", "--method", "mean_diff", "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert SteeringVectors.load(out).method == "mean_diff"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--parent", "no-such-model", "--dataset", "synthetic"], "unknown model spec"),
        (["--parent", "TINY", "--dataset", "nope"], "nope"),
        (["--parent", "TINY"], "exactly one of --dataset or --pairs"),
        (["--parent", "TINY", "--pairs", "EMPTY"], "empty"),
    ],
)
def test_bad_input_is_one_clear_error_and_no_file(tiny_dir, tmp_path, args, message):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    out = tmp_path / "v.safetensors"
    args = [str(tiny_dir) if a == "TINY" else str(empty) if a == "EMPTY" else a for a in args]
    res = CliRunner().invoke(main, ["extract", *args, "--out", str(out)])
    assert res.exit_code != 0 and message in res.output
    assert "Traceback" not in res.output
    assert not out.exists()
