"""Interop with lm-evaluation-harness (``steered`` .pt files, HF model folders) and llama.cpp / repeng GGUFs.

Fast tests write files the way the other tools define them (gguf's GGUFWriter as repeng / llama.cpp's
cvector-generator do; torch.save dicts as lm-eval documents) and read them back. Tests that need lm-eval
itself skip without it; the parity test against lm-eval on a real model is ``slow``:

    HF_HUB_OFFLINE=1 .venv/bin/python -m pytest tests/test_interop.py -m slow -s
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from gguf import GGUFWriter

from xsteer.app.cli_interop import export_cmd, export_model_cmd, import_cmd
from xsteer.core.vectors import SteeringVectors
from xsteer.errors import InputError, ModelSpecError, VectorFileError
from xsteer.interop import (
    export_gguf,
    export_lmeval,
    export_model,
    load_gguf,
    load_lmeval,
    model_shape,
)


def vectors(n_layers=6, d=16, layers=(1, 3, 4), model_id="smollm2-135m", seed=0, **kw):
    v = torch.randn(n_layers, d, generator=torch.Generator().manual_seed(seed))
    return SteeringVectors(v / v.norm(dim=-1, keepdim=True), model_id, "pca", layers, pairs_hash="abc", **kw)


def repeng_gguf(path, directions, hint="llama"):
    """What repeng's ControlVector.export_gguf writes: HF model_type as hint, uint32 layer_count."""
    return _control_gguf(path, directions, hint, "add_uint32")


def llamacpp_gguf(path, directions, hint="llama"):
    """What llama.cpp's cvector-generator writes: llama.cpp architecture as hint, int32 layer_count."""
    return _control_gguf(path, directions, hint, "add_int32")


def _control_gguf(path, directions, hint, add_count):
    w = GGUFWriter(str(path), "controlvector")
    w.add_string("controlvector.model_hint", hint)
    getattr(w, add_count)("controlvector.layer_count", len(directions))
    for layer, v in directions.items():
        w.add_tensor(f"direction.{layer}", np.asarray(v, dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(path)


def model_gguf(path, arch="llama", n_layers=8, d=16):
    """A GGUF language-model header (no real weights) to read a target's shape from."""
    w = GGUFWriter(str(path), arch)
    w.add_block_count(n_layers)
    w.add_embedding_length(d)
    w.add_tensor("token_embd.weight", np.zeros((4, d), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(path)


def rand(d, seed):
    return torch.randn(d, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A tiny random Llama saved as an HF folder, with a chat template."""
    from conftest import tiny_hf

    path = tmp_path_factory.mktemp("tiny-llama")
    hf, tok = tiny_hf("llama", d_model=32, n_layers=3)
    tok.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    hf.save_pretrained(path)
    tok.save_pretrained(path)
    return path


# ------------------------------------------------------------------------------------------ GGUF in (repeng, llama.cpp)
@pytest.mark.parametrize("writer", [repeng_gguf, llamacpp_gguf])
def test_load_gguf_from_other_tools(tmp_path, writer):
    dirs = {layer: rand(16, layer) for layer in (1, 2, 5)}
    path = writer(tmp_path / "cv.gguf", {k: v.numpy() for k, v in dirs.items()})
    sv = load_gguf(path)
    # direction.L is added to block L's output by llama.cpp and repeng = xsteer layer L, no shift.
    assert sv.layers == (1, 2, 5) and sv.vectors.shape == (6, 16)  # no depth recorded: one past the last
    for layer, v in dirs.items():
        assert torch.equal(sv.vectors[layer], v)
    assert not sv.vectors[[0, 3, 4]].any()
    assert sv.hook == "hook_resid_post" and sv.model_id == "cv" and sv.method == "gguf"
    assert sv.extra["model_hint"] == "llama" and sv.extra["source"] == str(path)
    assert "not a fact" in " ".join(sv.extra["notes"])  # random lengths: the 'unit' label is flagged

    sized = load_gguf(path, n_layers=30, d_model=16, model_id="my-llama")
    assert sized.vectors.shape == (30, 16) and sized.model_id == "my-llama"
    assert torch.equal(sized.vectors[:6], sv.vectors)


def test_load_gguf_round_trips_xsteer_files(tmp_path):
    sv = vectors(norm="resid_mean")
    back = load_gguf(export_gguf(sv, tmp_path / "v.gguf"))
    assert torch.equal(back.vectors, sv.vectors * (back.vectors.any(dim=-1, keepdim=True)))
    assert back.layers == sv.layers and back.n_layers == 6
    assert (back.model_id, back.method, back.norm, back.pairs_hash, back.position) == (
        "smollm2-135m",
        "pca",
        "resid_mean",
        "abc",
        "last_token",
    )
    assert "notes" not in back.extra

    scaled = load_gguf(export_gguf(sv, tmp_path / "s.gguf", scale=2.0))
    assert torch.equal(scaled.vectors[1], 2.0 * sv.vectors[1])
    assert scaled.extra["file_meta"]["scale"] == 2.0 and "not a fact" in " ".join(scaled.extra["notes"])


@pytest.mark.parametrize(
    ("hint", "target"),
    [
        ("llama", "smollm2-135m"),
        ("mistral", "smollm2-135m"),
        ("gemma3_text", "gemma3-270m"),
        ("gemma3", "gemma3-270m"),
        ("qwen2", "qwen2.5-coder-0.5b"),
    ],
)
def test_model_hints_of_both_tools_match_their_targets(tmp_path, hint, target):
    from xsteer.core.models import ZOO

    d, n = ZOO[target].d_model, ZOO[target].n_layers
    sv = load_gguf(
        repeng_gguf(tmp_path / "cv.gguf", {1: np.ones(d), n - 1: np.ones(d)}, hint=hint), model=target
    )
    assert sv.vectors.shape == (n, d) and sv.layers == (1, n - 1) and sv.model_id == target


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"d_model": 32}, r"width 16 \(model hint 'llama'\).*'the target|width 16.*d_model 32"),
        ({"n_layers": 4}, r"steers layer 5.*4 layers"),
        ({"model": "gemma3-270m"}, r"width 16.*'gemma3-270m' has d_model 640"),
        ({"model_id": "google/gemma-3-270m"}, r"'llama' model.*'google/gemma-3-270m' is a 'gemma3' model"),
        ({"model_id": "Qwen/Qwen2.5-0.5B", "d_model": 16}, r"'llama'.*'qwen2'"),
    ],
)
def test_load_gguf_refuses_files_for_another_model(tmp_path, kwargs, match):
    path = repeng_gguf(tmp_path / "cv.gguf", {1: np.ones(16), 5: np.ones(16)})
    with pytest.raises(VectorFileError, match=match):
        load_gguf(path, **kwargs)


def test_load_gguf_against_loaded_models_and_model_files(tmp_path, tiny, tiny_dir):
    # tiny: TransformerLens Llama, 4 layers x 64; tiny_dir: HF folder, 3 layers x 32.
    ok = load_gguf(repeng_gguf(tmp_path / "a.gguf", {2: np.ones(64)}), model=tiny)
    assert ok.vectors.shape == (4, 64) and ok.model_id == "tiny-llama"
    with pytest.raises(VectorFileError, match=r"'qwen2' model.*'tiny-llama' is a 'llama' model"):
        load_gguf(repeng_gguf(tmp_path / "b.gguf", {2: np.ones(64)}, hint="qwen2"), model=tiny)
    with pytest.raises(VectorFileError, match=r"width 64.*d_model 32"):
        load_gguf(tmp_path / "a.gguf", model=str(tiny_dir))
    assert load_gguf(
        repeng_gguf(tmp_path / "c.gguf", {2: np.ones(32)}), model=str(tiny_dir)
    ).vectors.shape == (3, 32)
    target = model_gguf(tmp_path / "m.gguf", "gemma3", n_layers=8, d=16)
    assert model_shape(str(target)).n_layers == 8
    with pytest.raises(VectorFileError, match=r"'llama'.*'m' is a 'gemma3' model"):
        load_gguf(repeng_gguf(tmp_path / "d.gguf", {2: np.ones(16)}), model=str(target))
    # An xsteer file records its depth: a model of another depth is refused even where layers fit.
    with pytest.raises(VectorFileError, match=r"made for a model of 6 layers.*8 layers"):
        load_gguf(
            export_gguf(vectors(layers=(1,)), tmp_path / "x.gguf", model_hint="gemma3"), model=str(target)
        )


def test_load_gguf_notes_and_zero_directions(tmp_path):
    path = repeng_gguf(tmp_path / "cv.gguf", {1: np.ones(8), 2: np.zeros(8)}, hint="starcoder2")
    sv = load_gguf(path, model_id="bigcode/starcoder2-3b")  # an architecture neither side's name reveals
    assert sv.layers == (1,)
    notes = " ".join(sv.extra["notes"])
    assert "zero directions dropped: layers [2]" in notes and "not checked" in notes
    with pytest.raises(VectorFileError, match="every direction is zero"):
        load_gguf(repeng_gguf(tmp_path / "z.gguf", {1: np.zeros(8)}))


def test_target_arguments_are_checked(tmp_path):
    path = repeng_gguf(tmp_path / "cv.gguf", {1: np.ones(576)})
    with pytest.raises(InputError, match=r"n_layers=12 was given, but model 'smollm2-135m' has n_layers 30"):
        load_gguf(path, model="smollm2-135m", n_layers=12)
    with pytest.raises(InputError, match="positive integer"):
        load_gguf(path, n_layers=0)
    with pytest.raises(ModelSpecError, match="no GGUF file"):
        load_gguf(path, model=str(tmp_path / "missing.gguf"))


# ------------------------------------------------------------------------------------------ lm-eval .pt out and in
def test_export_lmeval_layout_as_lm_eval_reads_it(tmp_path):
    sv = vectors()
    path = export_lmeval(sv, tmp_path / "out" / "steer.pt", lam=2.5)
    config = torch.load(path, weights_only=True)  # lm-eval 0.4.8/0.4.9 load with weights_only=True
    assert list(config) == ["layers.1", "layers.3", "layers.4"]  # only the steered layers, xsteer index
    for layer in (1, 3, 4):
        e = config[f"layers.{layer}"]
        assert set(e) == {"steering_vector", "steering_coefficient", "action", "bias", "head_index"}
        assert e["action"] == "add" and e["steering_coefficient"] == 2.5
        assert e["bias"] is None and e["head_index"] is None  # 0.4.8/0.4.9 index "bias" unconditionally
        assert e["steering_vector"].dtype == torch.float32 and e["steering_vector"].shape == (1, 16)
        assert torch.equal(e["steering_vector"][0], sv.vectors[layer])
        assert e["steering_vector"].untyped_storage().nbytes() == 16 * 4  # not a view of the whole matrix
    assert not list(path.parent.glob(".*tmp"))

    only = torch.load(export_lmeval(sv, tmp_path / "one.pth", lam=-1.0, layers=[3]), weights_only=True)
    assert list(only) == ["layers.3"] and only["layers.3"]["steering_coefficient"] == -1.0


def test_lmeval_round_trip_keeps_vectors_and_lam(tmp_path):
    sv = vectors(n_layers=8, layers=(0, 2, 7))
    back = load_lmeval(export_lmeval(sv, tmp_path / "s.pt", lam=4.0), n_layers=8)
    assert torch.equal(back.vectors, sv.vectors * sv.vectors.new_tensor([1, 0, 1, 0, 0, 0, 0, 1])[:, None])
    assert back.layers == (0, 2, 7) and back.extra["lam"] == 4.0 and back.extra["folded"] is False
    assert back.extra["coefficients"] == {"0": 4.0, "2": 4.0, "7": 4.0} and back.model_id == "s"
    assert "notes" not in back.extra  # unit vectors: the 'unit' label holds


def test_load_lmeval_reads_files_as_lm_eval_documents_them(tmp_path):
    # lm-eval's README example (minus "bias": its own 'add' asserts bias is None), [1, d] vectors.
    v3, v5 = torch.randn(1, 768), torch.randn(768)
    torch.save(
        {
            "layers.3": {"steering_vector": v3, "steering_coefficient": 1, "action": "add"},
            "layers.5": {"steering_vector": v5, "steering_coefficient": 1, "action": "add"},
        },
        tmp_path / "s.pt",
    )
    sv = load_lmeval(tmp_path / "s.pt", model_id="EleutherAI/pythia-160m", n_layers=12)
    assert sv.layers == (3, 5) and sv.vectors.shape == (12, 768) and sv.model_id == "EleutherAI/pythia-160m"
    assert torch.equal(sv.vectors[3], v3[0]) and torch.equal(sv.vectors[5], v5) and sv.extra["lam"] == 1.0

    # No coefficient: lm-eval's default 1.0. Coefficients that differ by layer are folded in (λ = 1).
    torch.save(
        {
            "layers.1": {"steering_vector": v5, "action": "add"},
            "layers.2": {"steering_vector": v5, "steering_coefficient": -3.0, "action": "add"},
            "layers.4": {"steering_vector": v5, "steering_coefficient": 0.0, "action": "add"},
        },
        tmp_path / "f.pt",
    )
    f = load_lmeval(tmp_path / "f.pt")
    assert f.extra["folded"] is True and f.extra["lam"] == 1.0 and f.layers == (1, 2)
    assert torch.equal(f.vectors[1], v5) and torch.equal(f.vectors[2], -3.0 * v5)
    assert "layers [4] add nothing" in " ".join(f.extra["notes"])


@pytest.mark.parametrize(
    ("config", "match"),
    [
        ([1, 2], "holds a list, not lm-eval's dict"),
        ({}, "no steering entries"),
        ({"layers.1": {"steering_vector": torch.ones(4), "action": "clamp"}}, "action 'clamp'"),
        ({"layers.1": {"steering_vector": torch.ones(4), "action": "multiply"}}, "action 'multiply'"),
        ({"layers.1": {"steering_vector": torch.ones(4)}}, "action None"),
        (
            {"layers.1.mlp": {"steering_vector": torch.ones(4), "action": "add"}},
            "'layers.1.mlp' is not a block output",
        ),
        ({"model.layers.1": {"steering_vector": torch.ones(4), "action": "add"}}, "not a block output"),
        ({"embed_tokens": {"steering_vector": torch.ones(4), "action": "add"}}, "not a block output"),
        (
            {
                "layers.1": {"steering_vector": torch.ones(4), "action": "add"},
                "layers.2": {"steering_vector": torch.ones(5), "action": "add"},
            },
            r"different widths \{4: \[1\], 5: \[2\]\}",
        ),
        (
            {"layers.1": {"steering_vector": torch.ones(4), "action": "add", "bias": torch.ones(4)}},
            "sets 'bias'",
        ),
        (
            {"layers.1": {"steering_vector": torch.ones(4), "action": "add", "head_index": 2}},
            "sets 'head_index'",
        ),
        ({"layers.1": {"steering_vector": torch.ones(2, 4), "action": "add"}}, r"shape \(2, 4\)"),
        (
            {"layers.1": {"steering_vector": torch.ones(4, dtype=torch.long), "action": "add"}},
            "not a float type",
        ),
        ({"layers.1": {"steering_vector": [1.0, 2.0], "action": "add"}}, "no 'steering_vector' tensor"),
        (
            {
                "layers.1": {
                    "steering_vector": torch.ones(4),
                    "action": "add",
                    "steering_coefficient": math.inf,
                }
            },
            "not a finite number",
        ),
        ({"layers.1": "add"}, "not a dict"),
        ({"layers.1": {"steering_vector": torch.zeros(4), "action": "add"}}, "steers nothing"),
    ],
)
def test_load_lmeval_errors(tmp_path, config, match):
    torch.save(config, tmp_path / "bad.pt")
    with pytest.raises(VectorFileError, match=match):
        load_lmeval(tmp_path / "bad.pt")


def test_load_lmeval_refuses_files_for_another_model(tmp_path):
    torch.save({"layers.5": {"steering_vector": torch.ones(16), "action": "add"}}, tmp_path / "s.pt")
    with pytest.raises(VectorFileError, match=r"steers layer 5, beyond 'tiny'.*3 layers \(0..2\)"):
        load_lmeval(tmp_path / "s.pt", model_id="tiny", n_layers=3)
    with pytest.raises(VectorFileError, match=r"width 16, but 'smollm2-135m' has d_model 576"):
        load_lmeval(tmp_path / "s.pt", model="smollm2-135m")
    with pytest.raises(VectorFileError, match="no lm-eval steering file"):
        load_lmeval(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(VectorFileError, match="not a readable torch file"):
        load_lmeval(tmp_path / "junk.pt")
    torch.save(
        {"layers.1": {"steering_vector": torch.ones(4), "action": "add", "x": Path("/")}},
        tmp_path / "code.pt",
    )
    with pytest.raises(
        VectorFileError, match="not a readable torch file"
    ):  # weights_only: no arbitrary objects
        load_lmeval(tmp_path / "code.pt")


def test_export_lmeval_errors(tmp_path):
    with pytest.raises(VectorFileError, match=r"ending in \.pt or \.pth"):
        export_lmeval(vectors(), tmp_path / "s.safetensors", lam=1.0)
    with pytest.raises(VectorFileError, match="'hook_resid_mid'.*block outputs"):
        export_lmeval(vectors(hook="hook_resid_mid"), tmp_path / "s.pt", lam=1.0)
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(VectorFileError, match="finite number"):
            export_lmeval(vectors(), tmp_path / "s.pt", lam=bad)
    with pytest.raises(InputError, match=r"layers \[2\] carry no vector"):
        export_lmeval(vectors(), tmp_path / "s.pt", lam=1.0, layers=[2])
    assert not list(tmp_path.iterdir())


def test_lm_eval_steered_hooks_match_xsteer(tmp_path, tiny_dir):
    """lm-eval's own SteeredModel on a tiny model: each hook point adds its own λ·v (no late binding), and
    its steered logits equal xsteer's for a multi-layer vector."""
    pytest.importorskip("lm_eval")
    from lm_eval.models.hf_steered import SteeredModel, steer

    from xsteer.core.inject import steer as xsteer_steer
    from xsteer.core.models import load_model

    model = load_model(str(tiny_dir), device="cpu", dtype=torch.float32)
    sv = vectors(n_layers=3, d=32, layers=(0, 1, 2), model_id=model.cfg.model_name, seed=3)
    path = export_lmeval(sv, tmp_path / "s.pt", lam=3.0)
    lm = SteeredModel(
        pretrained=str(tiny_dir), steer_path=str(path), device="cpu", dtype="float32", batch_size=1
    )
    zeros = torch.zeros(1, 2, 32)
    for layer in (0, 1, 2):  # lm-eval 0.4.8/0.4.9 returned 3·v_2 for every hook point here
        torch.testing.assert_close(
            lm.hook_to_steer[f"layers.{layer}"](zeros)[0, 0], 3.0 * sv.vectors[layer], rtol=0, atol=0
        )

    ids = torch.tensor([model.tokenizer("Question: why?\nAnswer: because").input_ids])
    with torch.no_grad(), steer(lm.model, lm.hook_to_steer):
        theirs = lm.model(ids).logits
    with torch.no_grad(), xsteer_steer(model, sv, lam=3.0):
        ours = model(ids)
    with torch.no_grad():
        plain = model(ids)
    assert (theirs - plain).abs().max() > 1e-2  # the steering does something
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-4)


# ------------------------------------------------------------------------------------------ HF model folders
def test_export_model_writes_a_folder_transformers_loads_offline(tmp_path, tiny_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = export_model(str(tiny_dir), tmp_path / "hf")
    names = {p.name for p in out.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "xsteer_export.json",
    } <= names
    assert "chat_template.jinja" in names or "chat_template" in (out / "tokenizer_config.json").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left
    info = json.loads((out / "xsteer_export.json").read_text())
    assert info["n_layers"] == 3 and info["d_model"] == 32 and info["kind"] == "local"
    assert info["lm_eval_model_args"] == f"pretrained={out},dtype=float32,add_bos_token=True"

    hf = AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    src = AutoModelForCausalLM.from_pretrained(tiny_dir, local_files_only=True)
    assert hf.dtype == torch.float32
    for (name, a), (_, b) in zip(hf.state_dict().items(), src.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    tok = AutoTokenizer.from_pretrained(out, local_files_only=True)
    assert (
        tok.chat_template and tok("ab").input_ids == AutoTokenizer.from_pretrained(tiny_dir)("ab").input_ids
    )
    assert model_shape(str(out)).n_layers == 3 and model_shape(str(out)).architecture == "LlamaForCausalLM"


def test_export_model_refuses_to_overwrite(tmp_path, tiny_dir, monkeypatch):
    out = tmp_path / "hf"
    out.mkdir()
    export_model(str(tiny_dir), out)  # an empty folder is fine
    with pytest.raises(InputError, match="exists and is not empty.*overwrite=True"):
        export_model(str(tiny_dir), out)
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        export_model(str(tiny_dir), tmp_path / "file")

    (out / "mine.txt").write_text("keep me")
    from transformers import PreTrainedModel

    def boom(self, *a, **k):
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(PreTrainedModel, "save_pretrained", boom)
        with pytest.raises(OSError, match="disk full"):
            export_model(str(tiny_dir), out, overwrite=True)
    assert (out / "mine.txt").read_text() == "keep me"  # a failed export leaves the old folder alone
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "hf"]
    export_model(str(tiny_dir), out, overwrite=True)
    assert not (out / "mine.txt").exists() and (out / "config.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file", "hf"]


# ------------------------------------------------------------------------------------------ CLI
def invoke(cmd, *args):
    return CliRunner().invoke(cmd, [str(a) for a in args])


def test_cli_export_gguf_as_export_gguf_did(tmp_path):
    from xsteer.interop.gguf import read_gguf_control_vector

    src = tmp_path / "v.safetensors"
    sv = vectors(n_layers=4, d=8, layers=(0, 1, 2, 3), model_id="HuggingFaceTB/SmolLM2-135M-Instruct")
    sv.save(src)
    res = invoke(export_cmd, src, "--format", "gguf", "--out", tmp_path / "v.gguf")
    assert res.exit_code == 0, res.output
    assert "layer 0 left out" in res.output and "3 directions" in res.output
    back = read_gguf_control_vector(tmp_path / "v.gguf", n_layers=4)
    assert back.model_hint == "llama" and back.layers == (1, 2, 3)
    torch.testing.assert_close(back.vectors[1:], sv.vectors[1:], rtol=0, atol=0)

    res = invoke(
        export_cmd,
        src,
        "--format",
        "gguf",
        "--out",
        tmp_path / "v.gguf",
        "--layers",
        "2-3",
        "--scale",
        "0.5",
        "--model-hint",
        "qwen2",
    )
    assert res.exit_code == 0, res.output
    back = read_gguf_control_vector(tmp_path / "v.gguf", n_layers=4)
    assert back.model_hint == "qwen2" and back.layers == (2, 3)
    torch.testing.assert_close(back.vectors[2:], 0.5 * sv.vectors[2:], rtol=0, atol=0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "gguf", "--layers", "0-2"], "layer 0"),
        (["--format", "gguf", "--layers", "7"], "outside 0..3"),
        (["--format", "gguf", "--layers", "a-b"], "cannot read layers"),
        (["--format", "gguf", "--lam", "2"], "--control-vector-scaled"),
        (["--format", "lm-eval"], "give --lam"),
        (["--format", "lm-eval", "--lam", "1", "--model-hint", "llama"], "--format gguf only"),
        (["--format", "lm-eval", "--lam", "1", "--scale", "2"], "--format gguf only"),
        (["--format", "lm-eval", "--lam", "nan"], "finite number"),
    ],
)
def test_cli_export_errors_are_one_line(tmp_path, args, message):
    src = tmp_path / "v.safetensors"
    vectors(n_layers=4, d=8, layers=(0, 1, 2, 3), model_id="HuggingFaceTB/SmolLM2-135M-Instruct").save(src)
    out = tmp_path / ("v.pt" if "lm-eval" in args else "v.gguf")
    res = invoke(export_cmd, src, *args, "--out", out)
    assert res.exit_code != 0 and message in res.output and "Traceback" not in res.output, res.output
    assert not out.exists()


def test_cli_export_refuses_to_overwrite_its_input(tmp_path):
    src = tmp_path / "v.safetensors"
    vectors().save(src)
    before = src.read_bytes()
    os.symlink(src, tmp_path / "link.pt")
    for out in (src, tmp_path / "link.pt", tmp_path / "." / "v.safetensors"):
        res = invoke(export_cmd, src, "--format", "lm-eval", "--lam", "1", "--out", out)
        assert res.exit_code != 0 and "also an input" in res.output, res.output
    assert src.read_bytes() == before


def test_cli_export_and_import_lmeval(tmp_path):
    src = tmp_path / "v.safetensors"
    sv = vectors(n_layers=4, d=8, layers=(0, 2))
    sv.save(src)
    res = invoke(export_cmd, src, "--format", "lm-eval", "--lam", "6", "--out", tmp_path / "s.pt")
    assert res.exit_code == 0 and "2 vectors (layers 0..2" in res.output and "λ=6" in res.output, res.output
    config = torch.load(tmp_path / "s.pt", weights_only=True)
    assert list(config) == ["layers.0", "layers.2"] and config["layers.0"]["steering_coefficient"] == 6.0

    res = invoke(import_cmd, tmp_path / "s.pt", "--format", "lm-eval", "--out", tmp_path / "back.safetensors")
    assert (
        res.exit_code == 0 and "λ that reproduces the file: 6" in res.output and "no --model" in res.output
    ), res.output
    back = SteeringVectors.load(tmp_path / "back.safetensors")
    assert back.layers == (0, 2) and back.n_layers == 3 and back.extra["lam"] == 6.0
    assert torch.equal(back.vectors, sv.vectors[:3] * torch.tensor([1.0, 0, 1])[:, None])


def test_cli_import_gguf(tmp_path, tiny_dir):
    path = repeng_gguf(tmp_path / "cv.gguf", {1: np.ones(32), 2: -np.ones(32)})
    res = invoke(
        import_cmd, path, "--format", "gguf", "--model", tiny_dir, "--out", tmp_path / "v.safetensors"
    )
    assert (
        res.exit_code == 0
        and "2 vectors (layers 1..2)" in res.output
        and "[3 layers x d_model 32]" in res.output
    ), res.output
    sv = SteeringVectors.load(tmp_path / "v.safetensors")
    assert (
        sv.model_id == tiny_dir.name and sv.layers == (1, 2) and torch.equal(sv.vectors[2], -torch.ones(32))
    )

    res = invoke(
        import_cmd, path, "--format", "gguf", "--model", "gemma3-270m", "--out", tmp_path / "w.safetensors"
    )
    assert res.exit_code == 1 and "d_model 640" in res.output and "Traceback" not in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "w.safetensors").exists()
    res = invoke(import_cmd, path, "--format", "lm-eval", "--out", tmp_path / "w.safetensors")
    assert res.exit_code == 1 and "not a readable torch file" in res.output, res.output
    res = invoke(import_cmd, path, "--format", "gguf", "--out", path)
    assert res.exit_code != 0 and "also an input" in res.output


def test_cli_export_model(tmp_path, tiny_dir):
    out = tmp_path / "hf"
    res = invoke(export_model_cmd, tiny_dir, "--out", out)
    assert (
        res.exit_code == 0 and "3 layers x d_model 32" in res.output and "add_bos_token=True" in res.output
    ), res.output
    assert (out / "model.safetensors").is_file()
    res = invoke(export_model_cmd, tiny_dir, "--out", out)
    assert res.exit_code == 1 and "--overwrite" in res.output and "Traceback" not in res.output, res.output
    assert invoke(export_model_cmd, tiny_dir, "--out", out, "--overwrite").exit_code == 0
    res = invoke(export_model_cmd, "no-such-model", "--out", tmp_path / "x")
    assert res.exit_code == 1 and "unknown model spec" in res.output


# ------------------------------------------------------------------------------------------ parity with lm-eval (slow)
N_ITEMS = 20  # the shortest ARC-Challenge test items: enough choices to compare, cheap on a CPU
LAM = 40.0  # unit vectors; the residual norm at layers 10-20 of SmolLM2-135M is ~110-210
LAYERS_MULTI = (10, 15, 20)
TOL = 1e-3  # max |Δ loglik| per choice; float32 on both sides, different batching and padding

TASK_YAML = """\
# lm-eval's arc_challenge.yaml (arc_easy.yaml + overrides), from a local JSON Lines copy of the test split.
task: arc_challenge_xsteer_local
dataset_path: json
dataset_name: null
dataset_kwargs:
  data_files:
    test: {data}
  cache_dir: {cache}
output_type: multiple_choice
test_split: test
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_target: "{{{{choices.label.index(answerKey)}}}}"
doc_to_choice: "{{{{choices.text}}}}"
should_decontaminate: true
doc_to_decontamination_query: "Question: {{{{question}}}}\\nAnswer:"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


@pytest.fixture(scope="module")
def parity(tmp_path_factory, shared_data):
    """Everything both sides need: the exported HF folder, xsteer's model, vectors, items and lm-eval task."""
    pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager

    from xsteer.core.io import read_jsonl
    from xsteer.core.models import ZOO, load_model
    from xsteer.extraction.extract import extract
    from xsteer.extraction.pairs import build_pairs
    from xsteer.tasks.data import load_examples

    if not ZOO["smollm2-135m"].installed():
        pytest.skip("zoo model smollm2-135m not installed")
    test_file = shared_data / "arc_challenge" / "test.jsonl"
    if not test_file.is_file():
        pytest.skip(f"no ARC-Challenge test split at {test_file}")
    root = tmp_path_factory.mktemp("lmeval-parity")
    hf_dir = export_model("smollm2-135m", root / "smollm2-hf")
    model = load_model("smollm2-135m", device="cpu", dtype=torch.float32)

    def size(row):
        return len(row["question"]) + sum(len(t) for t in row["choices"]["text"])

    rows = sorted(read_jsonl(test_file), key=size)[:N_ITEMS]
    # The fields lm-eval's arc YAML reads, in the hub dataset's shape.
    data = root / "arc_challenge_test.jsonl"
    data.write_text(
        "".join(
            json.dumps({k: r[k] for k in ("id", "question", "choices", "answerKey")}) + "\n" for r in rows
        )
    )
    (root / "tasks").mkdir()
    (root / "tasks" / "arc_local.yaml").write_text(TASK_YAML.format(data=data, cache=root / "datasets-cache"))
    by_id = {e.id: e for e in load_examples("arc_challenge", "test", data_dir=shared_data)}
    items = [by_id[r["id"]] for r in rows]

    train = sorted(
        load_examples("arc_challenge", "train", data_dir=shared_data), key=lambda e: len(e.question)
    )[:16]
    pairs = build_pairs("corrupted_answer", train, model.tokenizer, task="arc_challenge")
    sv = extract(model, pairs, layers=list(LAYERS_MULTI), batch_size=len(pairs) * 2, progress=False)
    # include_defaults=False: indexing lm-eval's thousands of built-in task YAMLs costs ~15 s a run.
    tasks = TaskManager(include_path=str(root / "tasks"), include_defaults=False)
    return {"root": root, "hf_dir": hf_dir, "model": model, "items": items, "vectors": sv, "tasks": tasks}


def _lmeval_run(parity, steer_path):
    import lm_eval

    from xsteer.interop.hf import lmeval_model_args

    args = lmeval_model_args(parity["hf_dir"], parity["model"].tokenizer)  # float32 and BOS, as xsteer scores
    assert args == {"pretrained": str(parity["hf_dir"]), "dtype": "float32", "add_bos_token": True}
    if steer_path is not None:
        args["steer_path"] = str(steer_path)
    out = lm_eval.simple_evaluate(
        model="hf" if steer_path is None else "steered",
        model_args=args,
        tasks=["arc_challenge_xsteer_local"],
        task_manager=parity["tasks"],
        log_samples=True,
        limit=N_ITEMS,
        batch_size=32,
        device="cpu",
        bootstrap_iters=0,
    )
    samples = sorted(out["samples"]["arc_challenge_xsteer_local"], key=lambda s: s["doc_id"])
    assert [s["doc"]["id"] for s in samples] == [e.id for e in parity["items"]]
    res = out["results"]["arc_challenge_xsteer_local"]
    return {
        "logprobs": [[float(r[0]) for r in s["filtered_resps"]] for s in samples],
        "acc_items": [float(s["acc"]) for s in samples],
        "acc_norm_items": [float(s["acc_norm"]) for s in samples],
        "acc": res["acc,none"],
        "acc_norm": res["acc_norm,none"],
    }


def _xsteer_run(parity, steering):
    from xsteer.core.likelihood import continuation_logprobs
    from xsteer.tasks import get_task
    from xsteer.tasks.arc_scoring import arc_loglik_choice

    task = get_task("arc_challenge")
    contexts, conts, owner = [], [], []
    for i, ex in enumerate(parity["items"]):
        ctx, choices = task.loglik_request(ex)  # lm-eval's "Question: …\nAnswer:" and " {choice}"
        contexts += [ctx] * len(choices)
        conts += choices
        owner += [i] * len(choices)
    # One batch: on a CPU, fewer and larger forward passes are much faster (~20 s vs ~45 s at batch 32).
    lps = continuation_logprobs(parity["model"], contexts, conts, steering=steering, batch_size=len(contexts))
    per_item = [[lp for lp, o in zip(lps, owner, strict=True) if o == i] for i in range(len(parity["items"]))]
    picks = [
        arc_loglik_choice(lp, list(ex.choices)) for lp, ex in zip(per_item, parity["items"], strict=True)
    ]
    acc = [float(a == ex.answer_index) for (a, _), ex in zip(picks, parity["items"], strict=True)]
    acc_norm = [float(n == ex.answer_index) for (_, n), ex in zip(picks, parity["items"], strict=True)]
    return {
        "logprobs": per_item,
        "acc_items": acc,
        "acc_norm_items": acc_norm,
        "acc": sum(acc) / len(acc),
        "acc_norm": sum(acc_norm) / len(acc_norm),
    }


def _max_gap(a, b):
    return max(abs(x - y) for ra, rb in zip(a, b, strict=True) for x, y in zip(ra, rb, strict=True))


def _report(name, theirs, ours, **more):
    from importlib.metadata import version

    gap = _max_gap(theirs["logprobs"], ours["logprobs"])
    line = {
        "condition": name,
        "lm_eval_version": version("lm_eval"),
        "max_abs_dloglik": gap,
        "n_choices": sum(map(len, ours["logprobs"])),
        "lm_eval": {"acc": theirs["acc"], "acc_norm": theirs["acc_norm"]},
        "xsteer": {"acc": ours["acc"], "acc_norm": ours["acc_norm"]},
        **more,
    }
    print(json.dumps(line))
    return gap


def _assert_parity(theirs, ours):
    assert _max_gap(theirs["logprobs"], ours["logprobs"]) <= TOL
    assert theirs["acc_items"] == ours["acc_items"] and theirs["acc_norm_items"] == ours["acc_norm_items"]
    assert theirs["acc"] == ours["acc"] and theirs["acc_norm"] == ours["acc_norm"]


@pytest.mark.slow
def test_lmeval_parity_unsteered(parity):
    theirs, ours = _lmeval_run(parity, None), _xsteer_run(parity, None)
    _report("unsteered", theirs, ours)
    _assert_parity(theirs, ours)
    parity["unsteered"] = ours


@pytest.mark.slow
@pytest.mark.parametrize("layers", [(15,), LAYERS_MULTI], ids=["single-layer", "multi-layer"])
def test_lmeval_parity_steered(parity, layers):
    from xsteer.core.generate import Steering

    sv = parity["vectors"]
    path = export_lmeval(sv, parity["root"] / f"steer-{len(layers)}.pt", lam=LAM, layers=list(layers))
    theirs = _lmeval_run(parity, path)
    ours = _xsteer_run(parity, Steering(sv, LAM, list(layers)))
    base = parity.get("unsteered") or _xsteer_run(parity, None)
    effect = _max_gap(ours["logprobs"], base["logprobs"])
    more = {
        "layers": list(layers),
        "lam": LAM,
        "max_abs_effect_of_steering": effect,
        "unsteered_xsteer": {"acc": base["acc"], "acc_norm": base["acc_norm"]},
    }
    if len(layers) > 1:
        # What lm-eval 0.4.8/0.4.9 computed (late binding): the last entry's vector at every hook point.
        last = sv.vectors.clone()
        last[list(layers)] = sv.vectors[layers[-1]]
        late = _xsteer_run(parity, Steering(sv.replace(vectors=last), LAM, list(layers)))
        more["max_abs_dloglik_vs_late_binding"] = _max_gap(theirs["logprobs"], late["logprobs"])
    _report(f"steered {len(layers)} layer(s)", theirs, ours, **more)
    assert (
        effect > 100 * TOL
    )  # the steering moves log-likelihoods far beyond the tolerance: parity is not vacuous
    _assert_parity(theirs, ours)
    if len(layers) > 1:
        assert (
            more["max_abs_dloglik_vs_late_binding"] > 100 * TOL
        )  # the late-binding bug would have been caught
