import json

import pytest
import torch
from click.testing import CliRunner

from xsteer.app.cli import main
from xsteer.core.vectors import SteeringVectors


def test_extract_from_user_pairs(tiny_dir, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("\n".join(json.dumps({"positive": f"yes {i}", "negative": f"no {i}"}) for i in range(5)))
    out = tmp_path / "v.safetensors"
    res = CliRunner().invoke(
        main, ["extract", "--parent", str(tiny_dir), "--pairs", str(pairs), "--out", str(out)]
    )
    assert res.exit_code == 0, res.output
    assert (
        "separation" in res.output
        and len([ln for ln in res.output.splitlines() if ln.strip()[:1].isdigit()]) >= 3
    )
    sv = SteeringVectors.load(out)
    assert sv.n_layers == 3 and sv.d_model == 32 and sv.extra["n_pairs"] == 5
    info = CliRunner().invoke(main, ["info", str(out)])
    assert info.exit_code == 0 and "pca" in info.output


def test_extract_from_synthetic_dataset(tiny_dir, tmp_path):
    out = tmp_path / "v.safetensors"
    res = CliRunner().invoke(
        main,
        [
            "extract",
            "--parent",
            str(tiny_dir),
            "--dataset",
            "synthetic",
            "--n-pairs",
            "6",
            "--method",
            "mean_diff",
            "--out",
            str(out),
        ],
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


# ------------------------------------------------------------------ evaluate / tune / ablate / similarity
def unit_vectors(n_layers, d, seed=0, layers=None, model_id="tiny"):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(n_layers, d, generator=g)
    return SteeringVectors(
        v / v.norm(dim=-1, keepdim=True), model_id, "random", tuple(layers or range(n_layers))
    )


@pytest.fixture(scope="module")
def tiny_vectors(tiny_dir, tmp_path_factory):
    """Unit vectors in the tiny child's space ([3 layers x 32]), one steering layer 1 only, one too narrow."""
    folder = tmp_path_factory.mktemp("vectors")
    good, narrow, one = folder / "v.safetensors", folder / "narrow.safetensors", folder / "one.safetensors"
    unit_vectors(3, 32, model_id=tiny_dir.name).save(good)
    unit_vectors(3, 16).save(narrow)
    unit_vectors(3, 32, layers=(1,), model_id=tiny_dir.name).save(one)
    return {"good": good, "narrow": narrow, "one": one}


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


FAST = ["--dataset", "synthetic", "--shots", "0", "--max-new-tokens", "4", "--batch-size", "8"]


def test_evaluate_still_runs_with_the_shared_options(tiny_dir, tiny_vectors, tmp_path):
    res = invoke(
        "evaluate",
        "--child",
        tiny_dir,
        "--vectors",
        f"parent={tiny_vectors['good']}",
        *FAST,
        "--val-items",
        2,
        "--test-items",
        2,
        "--lambdas",
        "0,4",
        "--no-self-consistency",
        "--out",
        tmp_path,
    )
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "summary.json").read_text())
    assert set(doc["lambda_star"]) == {"parent", "random"}
    assert doc["config"]["max_new_tokens"] == 4 and doc["config"]["lambdas"] == [0.0, 4.0]
    assert {r["condition"] for r in doc["summaries"]["correct"]["rows"]} >= {
        "baseline",
        "parent+ITS",
        "random+ITS",
    }


def test_tune_writes_best_lambda_and_table_and_resumes(tiny_dir, tiny_vectors, tmp_path):
    args = [
        "tune",
        "--child",
        tiny_dir,
        "--vectors",
        f"parent={tiny_vectors['good']}",
        *FAST,
        "--val-items",
        3,
        "--lambdas",
        "0,4,8",
        "--out",
        tmp_path,
    ]
    res = invoke(*args)
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "tune.json").read_text())
    assert doc["n_items"] == 3 and doc["split"] == "validation" and doc["child"] == str(tiny_dir)
    table = doc["accuracy_by_lambda"]["correct"]
    assert set(table) == {"parent", "baseline"} and set(table["parent"]) == {"0.0", "4.0", "8.0"}
    assert all(0.0 <= a <= 1.0 for a in table["parent"].values()) and set(table["baseline"]) == {"0.0"}
    assert set(doc["accuracy_by_lambda"]) == {"correct", "strict_correct"}
    # λ* is the argmax of the table, ties to the smallest λ
    top = max(table["parent"].values())
    assert doc["lambda_star"]["parent"] == min(float(k) for k, a in table["parent"].items() if a == top)
    # the printed table: one row per λ with the JSON's numbers, λ* starred, plus the baseline row
    for lam in ("0", "4", "8"):
        acc = 100 * table["parent"][str(float(lam))]
        star = "*" if float(lam) == doc["lambda_star"]["parent"] else ""
        assert f"| {lam} | {acc:.1f}{star} |" in res.output
    assert (
        "| baseline (λ = 0) |" in res.output
        and f"λ* (parent): {doc['lambda_star']['parent']:g}" in res.output
    )
    records = (tmp_path / "records.jsonl").read_text().splitlines()
    assert len(records) == 3 * 3 + 3  # 3 items x 3 λ, plus the baseline on the same 3 items
    # a rerun finds every record on disk: nothing is recomputed, the result is the same
    again = invoke(*args)
    assert again.exit_code == 0, again.output
    assert (tmp_path / "records.jsonl").read_text().splitlines() == records
    assert json.loads((tmp_path / "tune.json").read_text())["lambda_star"] == doc["lambda_star"]


@pytest.mark.parametrize(
    "vectors, extra, message",
    [
        ("narrow", [], "map them into the child's space"),
        ("good", ["--mode", "loglik"], "mode 'loglik' is for multiple-choice"),
        ("good", ["--val-items", "0"], "not in the range x>=1"),
        ("good", ["--lambdas", "0,nan"], "finite"),
    ],
)
def test_tune_bad_input_is_one_clear_error(tiny_dir, tiny_vectors, tmp_path, vectors, extra, message):
    res = invoke(
        "tune",
        "--child",
        tiny_dir,
        "--vectors",
        tiny_vectors[vectors],
        *FAST,
        *extra,
        "--out",
        tmp_path / "run",
    )
    assert res.exit_code != 0 and message in res.output, res.output
    assert "Traceback" not in res.output and not (tmp_path / "run" / "tune.json").exists()


def _csv_rows(path):
    import csv

    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_ablate_single_layer_with_accuracy(tiny_dir, tiny_vectors, tmp_path):
    res = invoke(
        "ablate",
        "--child",
        tiny_dir,
        "--vectors",
        tiny_vectors["good"],
        *FAST,
        "--study",
        "single",
        "--lambdas",
        "0.5,5",
        "--items",
        2,
        "--accuracy",
        "--out",
        tmp_path,
    )
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "ablate_single.json").read_text())
    assert doc["study"] == "single" and doc["n_items"] == 2 and doc["lambdas"] == [0.5, 5.0]
    rows = doc["rows"]
    assert [(r["layer"], r["lam"]) for r in rows] == [
        (layer, lam) for layer in range(3) for lam in (0.5, 5.0)
    ]
    for r in rows:
        assert r["profile"] == f"only {r['layer']}"
        assert (
            r["delta"] == pytest.approx(r["signal"] - doc["baseline"]) and r["signal"] < 0
        )  # a log-probability
        assert 0.0 <= r["accuracy"] <= 1.0
    assert any(abs(r["delta"]) > 1e-3 for r in rows if r["lam"] == 5.0)  # steering one layer moves the signal
    assert 0.0 <= doc["accuracy_baseline"] <= 1.0
    # accuracy went through the evaluator: baseline + 3 profiles x 2 λ, on 2 items each
    assert len((tmp_path / "records.jsonl").read_text().splitlines()) == 2 + 3 * 2 * 2
    csv_rows = _csv_rows(tmp_path / "ablate_single.csv")
    assert len(csv_rows) == 6 and float(csv_rows[-1]["delta"]) == pytest.approx(rows[-1]["delta"])
    for stem in ("ablate_single_heatmap", "ablate_single_layers"):
        assert (tmp_path / "figures" / f"{stem}.png").stat().st_size > 1000
        assert (tmp_path / "figures" / f"{stem}.svg").stat().st_size > 1000
    table = [ln.split() for ln in res.output.splitlines() if ln.strip()[:1].isdigit()]
    assert [int(t[0]) for t in table] == [0, 1, 2]
    assert float(table[2][-2]) == pytest.approx(rows[-1]["delta"], abs=1e-4)  # layer 2, Δ at λ = 5


def test_ablate_leave_one_out_and_coordinate(tiny_dir, tiny_vectors, tmp_path):
    res = invoke(
        "ablate",
        "--child",
        tiny_dir,
        "--vectors",
        tiny_vectors["good"],
        *FAST,
        "--study",
        "leave_one_out",
        "--lambdas",
        "5",
        "--items",
        2,
        "--out",
        tmp_path,
    )
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "ablate_leave_one_out.json").read_text())
    assert [r["profile"] for r in doc["rows"]] == ["all but 0", "all but 1", "all but 2"]
    assert "accuracy" not in doc["rows"][0] and not (tmp_path / "records.jsonl").exists()
    assert (tmp_path / "figures" / "ablate_leave_one_out_heatmap.svg").exists()

    res = invoke(
        "ablate",
        "--child",
        tiny_dir,
        "--vectors",
        tiny_vectors["good"],
        *FAST,
        "--study",
        "coordinate",
        "--lambdas",
        "1,5",
        "--sweeps",
        1,
        "--items",
        2,
        "--out",
        tmp_path,
    )
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "ablate_coordinate.json").read_text())
    assert [r["layer"] for r in doc["rows"]] == [0, 1, 2] and all(
        r["lam"] in (0.0, 1.0, 5.0) for r in doc["rows"]
    )
    assert doc["best_delta"] >= 0 and doc["best_signal"] == pytest.approx(doc["baseline"] + doc["best_delta"])
    assert doc["profile"] == {str(r["layer"]): r["lam"] for r in doc["rows"] if r["lam"]}
    assert [t["signal"] for t in doc["trace"]] == sorted(
        t["signal"] for t in doc["trace"]
    )  # only improvements
    assert (tmp_path / "figures" / "ablate_coordinate_profile.png").stat().st_size > 1000
    assert (tmp_path / "ablate_leave_one_out.json").exists()  # studies do not overwrite each other


@pytest.mark.parametrize(
    "vectors, extra, message",
    [
        ("one", ["--study", "leave_one_out"], "at least 2 steered layers"),
        ("narrow", [], "map them into the child's space"),
        ("good", ["--items", "0"], "not in the range x>=1"),
        ("good", ["--split", "nope"], "nope"),
    ],
)
def test_ablate_bad_input_is_one_clear_error(tiny_dir, tiny_vectors, tmp_path, vectors, extra, message):
    res = invoke(
        "ablate", "--child", tiny_dir, "--vectors", tiny_vectors[vectors], *FAST, *extra, "--out", tmp_path
    )
    assert res.exit_code != 0 and message in res.output, res.output
    assert "Traceback" not in res.output and not list(tmp_path.glob("ablate_*"))


@pytest.fixture(scope="module")
def similarity_inputs(tmp_path_factory):
    """A parent [4 x 24] and child [3 x 32] with child layer c a noisy linear image of parent layer SRC[c]."""
    from xsteer.transfer.maps import fit_transfer_from_activations

    folder = tmp_path_factory.mktemp("similarity")
    g = torch.Generator().manual_seed(0)
    xp = torch.randn(4, 60, 24, generator=g)
    yc = torch.stack(
        [xp[p] @ torch.randn(24, 32, generator=g) + 0.1 * torch.randn(60, 32, generator=g) for p in SRC]
    )
    torch.save((xp, yc), folder / "pair.acts.pt")
    tmap = fit_transfer_from_activations(
        xp,
        yc,
        parent_id="tiny-parent",
        child_id="tiny",
        layer_map="explicit",
        mapping={c: p for c, p in enumerate(SRC)},
        width_map="ridge",
    )
    tmap.save(folder / "p2c.map.safetensors")
    tmap.apply(unit_vectors(4, 24, seed=1, model_id="tiny-parent")).save(folder / "p2c.safetensors")
    native = unit_vectors(3, 32, seed=2)
    native.save(folder / "native.safetensors")
    close = native.vectors + 0.05 * torch.randn(3, 32, generator=g)
    native.replace(vectors=close).save(folder / "close.safetensors")
    unit_vectors(3, 16).save(folder / "narrow.safetensors")
    (folder / "not_acts.pt").write_text("hello")
    return folder


SRC = [0, 2, 3]


def test_similarity_vectors_and_cka(similarity_inputs, tmp_path):
    from xsteer.transfer.similarity import null_quantile

    f = similarity_inputs
    res = invoke(
        "similarity",
        "--vectors",
        f / "p2c.safetensors",
        "--vectors",
        f / "close.safetensors",
        "--map",
        f / "p2c.map.safetensors",
        "--reference",
        f / "native.safetensors",
        "--acts",
        f / "pair.acts.pt",
        "--out",
        tmp_path,
    )
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "similarity.json").read_text())
    mapped, close = doc["comparisons"]
    assert mapped["name"] == "tiny-parent" and close["name"] == "close" and doc["reference"] == "native"
    assert mapped["null"] == pytest.approx(null_quantile(32, 0.95))
    assert (
        len(mapped["cosine"]) == 3
        and len(mapped["mapped_null"]) == 3
        and all(0 < q < 1 for q in mapped["mapped_null"])
    )
    assert all(c > 0.95 for c in close["cosine"]) and close["above_null"] == 3 and "mapped_null" not in close
    assert len(close["cosine_matrix"]) == 3 and len(close["correlation_matrix"][0]) == 3
    (cka,) = doc["cka"]
    assert cka["shape"] == [3, 4] and cka["n_texts"] == 60
    assert [b["parent_layer"] for b in cka["best"]] == SRC
    m = torch.tensor(
        cka["matrix"]
    )  # the source layer stands out (a random linear image keeps CKA ~0.8, not 1)
    assert all(
        m[c, p] > 0.7 and m[c, p] > 2 * m[c, [q for q in range(4) if q != p]].max() for c, p in enumerate(SRC)
    )
    rows = _csv_rows(tmp_path / "similarity.csv")
    assert len(rows) == 6 and {r["comparison"] for r in rows} == {"tiny-parent", "close"}
    assert float(rows[3]["cosine"]) == pytest.approx(close["cosine"][0])
    assert [int(r["best_parent_layer"]) for r in _csv_rows(tmp_path / "cka.csv")] == SRC
    stems = [
        "cosine_tiny-parent",
        "corr_tiny-parent",
        "cosine_close",
        "corr_close",
        "cosine_per_layer",
        "cka_pair",
    ]
    for stem in stems:
        assert (tmp_path / "figures" / f"{stem}.png").stat().st_size > 1000
        assert (tmp_path / "figures" / f"{stem}.svg").stat().st_size > 1000
    assert (tmp_path / "report.html").read_text().count("data:image/png;base64") == len(stems)
    assert "3/3 layers above the random null" in res.output and "2<-3" in res.output


def test_similarity_of_a_model_with_itself_by_cka(tiny_dir, tmp_path):
    res = invoke(
        "similarity", "--models", tiny_dir, tiny_dir, "--text", "synthetic:train:8", "--out", tmp_path
    )
    assert res.exit_code == 0, res.output
    (cka,) = json.loads((tmp_path / "similarity.json").read_text())["cka"]
    m = torch.tensor(cka["matrix"])
    assert m.shape == (3, 3) and cka["n_texts"] == 8
    torch.testing.assert_close(m.diagonal(), torch.ones(3, dtype=m.dtype))
    assert [b["parent_layer"] for b in cka["best"]] == [0, 1, 2]
    xp, yc = torch.load(next((tmp_path / "acts").glob("*.acts.pt")))  # saved for reuse with --acts
    assert xp.shape == yc.shape == (3, 8, 32)
    assert (tmp_path / "figures" / f"cka_{tiny_dir.name}_to_{tiny_dir.name}.svg").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ["--vectors", "narrow.safetensors", "--reference", "native.safetensors"],
            "compare vectors in one space",
        ),
        (["--vectors", "close.safetensors"], "compared with a --reference"),
        ([], "nothing to compare"),
        (["--acts", "not_acts.pt"], "not a readable activation file"),
        (
            [
                "--vectors",
                "close.safetensors",
                "--reference",
                "native.safetensors",
                "--map",
                "p2c.map.safetensors",
                "--map",
                "p2c.map.safetensors",
            ],
            "2 --map files for 1 --vectors",
        ),
    ],
)
def test_similarity_bad_input_is_one_clear_error(similarity_inputs, tmp_path, args, message):
    args = [str(similarity_inputs / a) if a.endswith((".safetensors", ".pt")) else a for a in args]
    res = invoke("similarity", *args, "--out", tmp_path)
    assert res.exit_code != 0 and message in res.output, res.output
    assert "Traceback" not in res.output and not (tmp_path / "similarity.json").exists()


# ------------------------------------------------------------------ demo
@pytest.mark.parametrize(
    "args, message",
    [
        (["--judge", "smollm2-135m"], "a judge must be neither"),
        (["--judge", "gemma3-270m"], "a judge must be neither"),
        (["--judge", "no-such-model"], "unknown model spec"),
        (["--judge", "qwen2.5-coder-0.5b", "--benchmark"], "--judge belongs to the fidelity demo"),
    ],
)
def test_demo_judge_bad_input_is_one_clear_error_before_any_model_loads(tmp_path, monkeypatch, args, message):
    import xsteer.app.fidelity as fidelity

    monkeypatch.setattr(fidelity, "run_study", lambda *a, **k: pytest.fail("the study ran"))
    res = CliRunner().invoke(main, ["demo", "--out", str(tmp_path / "d"), *args])
    assert res.exit_code != 0 and message in res.output
    assert "Traceback" not in res.output


def test_demo_judge_reaches_the_study_and_is_stated(tmp_path, monkeypatch):
    import xsteer.app.fidelity as fidelity
    import xsteer.app.fidelity_tables as tables
    from xsteer.core.models import ZOO

    specs = []  # the study itself runs (its checks), each pair's measurement does not
    monkeypatch.setattr(fidelity, "run_pair", lambda spec, parent, child, out, log: specs.append(spec) or [])
    monkeypatch.setattr(fidelity, "load_results", lambda out: [])
    monkeypatch.setattr(tables, "study_markdown", lambda results: "(report)")
    entry = type(ZOO["qwen2.5-coder-0.5b"])
    monkeypatch.setattr(entry, "installed", lambda self: self.name == "qwen2.5-coder-0.5b")
    res = CliRunner().invoke(main, ["demo", "--out", str(tmp_path / "d"), "--judge", "qwen2.5-coder-0.5b"])
    assert res.exit_code == 0, res.output
    assert [s.judge for s in specs] == ["qwen2.5-coder-0.5b"] and specs[0].judge_placebos == 10
    assert "judge readout and fluency cost: qwen2.5-coder-0.5b, 10 placebos a map" in res.output

    res = CliRunner().invoke(main, ["demo", "--out", str(tmp_path / "e")])
    assert res.exit_code == 0 and specs[-1].judge is None
    assert "judge readout and fluency cost: not run (they need a third model" in res.output

    monkeypatch.setattr(entry, "installed", lambda self: False)
    res = CliRunner().invoke(main, ["demo", "--out", str(tmp_path / "f"), "--judge", "qwen2.5-coder-0.5b"])
    assert res.exit_code != 0 and "is not installed" in res.output and len(specs) == 2
