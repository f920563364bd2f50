import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType, GGUFWriter

from xsteer.core.models import ZOO
from xsteer.core.vectors import SteeringVectors, VectorFileError
from xsteer.interop.gguf import export_gguf, read_gguf_control_vector
from xsteer.interop.shapes import infer_model_hint


def make(layers=(1, 3, 4), n_layers=6, d=16, model_id="smollm2-135m", **kw):
    v = torch.randn(n_layers, d, generator=torch.Generator().manual_seed(0))
    return SteeringVectors(v, model_id, "pca", layers, pairs_hash="abc123", **kw)


def value(reader, key):
    """A scalar key read with gguf's own reader, independent of xsteer.interop.gguf."""
    f = reader.fields[key]
    part = f.parts[f.data[0]]
    return bytes(part).decode() if f.types[0] == GGUFValueType.STRING else part.tolist()[0]


def write_raw(path, tensors, arch="controlvector"):
    """A control-vector file written directly with gguf (as repeng does), without xsteer keys."""
    w = GGUFWriter(str(path), arch)
    w.add_string(f"{arch}.model_hint", "llama")
    for name, t in tensors.items():
        w.add_tensor(name, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_layout_as_llama_cpp_reads_it(tmp_path):
    sv = make()
    path = export_gguf(sv, tmp_path / "out" / "v.gguf")
    r = GGUFReader(str(path))
    assert value(r, "general.architecture") == "controlvector"
    assert value(r, "controlvector.model_hint") == "llama"
    # layer_count is the number of direction tensors, int32, as llama.cpp's cvector-generator writes it.
    assert value(r, "controlvector.layer_count") == 3
    assert r.fields["controlvector.layer_count"].types == [GGUFValueType.INT32]
    # direction.L is added to block L's output in llama.cpp = blocks.L.hook_resid_post: same index, no shift.
    assert [t.name for t in r.tensors] == ["direction.1", "direction.3", "direction.4"]
    for t in r.tensors:
        layer = int(t.name.split(".")[1])
        assert t.tensor_type == GGMLQuantizationType.F32 and list(t.shape) == [16]
        assert np.array_equal(np.asarray(t.data), sv.vectors[layer].numpy())  # exact, float32
    assert value(r, "xsteer.model_id") == "smollm2-135m"
    assert value(r, "xsteer.norm") == "unit" and value(r, "xsteer.method") == "pca"
    assert not list(path.parent.glob(".*tmp"))  # the atomic write left no temp file


def test_round_trip(tmp_path):
    sv = make(norm="resid_mean")
    back = read_gguf_control_vector(export_gguf(sv, tmp_path / "v.gguf"))
    assert back.model_hint == "llama" and back.layers == (1, 3, 4)
    assert back.vectors.shape == (6, 16)  # xsteer.n_layers restores the full depth
    idx = list(sv.layers)
    assert torch.equal(back.vectors[idx], sv.vectors[idx])
    assert not back.vectors[[0, 2, 5]].any()  # unsteered rows stay zero
    assert back.meta == {
        "model_id": "smollm2-135m",
        "method": "pca",
        "norm": "resid_mean",
        "hook": "hook_resid_post",
        "position": "last_token",
        "n_layers": 6,
        "scale": 1.0,
        "pairs_hash": "abc123",
    }
    assert read_gguf_control_vector(tmp_path / "v.gguf", n_layers=30).vectors.shape == (30, 16)


def test_scale_is_baked_in(tmp_path):
    sv = make()
    back = read_gguf_control_vector(export_gguf(sv, tmp_path / "v.gguf", scale=-2.5))
    assert torch.equal(back.vectors[[1, 3, 4]], sv.vectors[[1, 3, 4]] * -2.5)
    assert back.meta["scale"] == -2.5
    for bad in (0.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="scale"):
            export_gguf(sv, tmp_path / "bad.gguf", scale=bad)


@pytest.mark.parametrize(
    ("model", "hint"),
    [
        ("smollm2-135m", "llama"),
        ("HuggingFaceTB/SmolLM2-135M-Instruct", "llama"),
        ("SmolLM2-135M-Instruct.Q4_1", "llama"),
        ("meta-llama/Llama-3.2-1B", "llama"),
        ("mistralai/Mistral-7B-v0.1", "llama"),
        ("tiny-llama", "llama"),
        ("gemma3-270m", "gemma3"),
        ("google/gemma-3-270m", "gemma3"),
        ("google/gemma-2-2b", "gemma2"),
        ("qwen2.5-coder-0.5b", "qwen2"),
        ("Qwen2ForCausalLM", "qwen2"),
        ("Qwen/Qwen3-0.6B", "qwen3"),
        ("microsoft/Phi-3-mini-4k-instruct", "phi3"),
        # repeng writes the HF model_type as its hint; MoE variants are their own llama.cpp architectures.
        ("gemma3_text", "gemma3"),
        ("qwen2_moe", "qwen2moe"),
        ("Qwen3MoeForCausalLM", "qwen3moe"),
    ],
)
def test_model_hint_inferred(model, hint):
    assert infer_model_hint(model) == hint


def test_every_zoo_model_has_a_hint():
    for entry in ZOO.values():
        assert infer_model_hint(entry.name) == infer_model_hint(entry.architecture)


def test_model_hint_override_and_unknown(tmp_path):
    sv = make(model_id="my-finetune")
    with pytest.raises(ValueError, match=r"'my-finetune'.*model_hint="):
        export_gguf(sv, tmp_path / "v.gguf")
    assert not (tmp_path / "v.gguf").exists()
    back = read_gguf_control_vector(export_gguf(sv, tmp_path / "v.gguf", model_hint="qwen2"))
    assert back.model_hint == "qwen2"
    # The override wins over inference too.
    assert (
        read_gguf_control_vector(export_gguf(make(), tmp_path / "w.gguf", model_hint="gemma3")).model_hint
        == "gemma3"
    )


def test_other_hooks_refused(tmp_path):
    with pytest.raises(VectorFileError, match=r"'hook_resid_mid'.*block output"):
        export_gguf(make(hook="hook_resid_mid"), tmp_path / "v.gguf")
    assert not list(tmp_path.iterdir())


def test_layer_zero_refused(tmp_path):
    # llama.cpp rejects direction.0 and never steers block 0's output.
    with pytest.raises(VectorFileError, match=r"layer 0.*layers=\(2,\)"):
        export_gguf(make(layers=(0, 2)), tmp_path / "v.gguf")
    assert not list(tmp_path.iterdir())


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = export_gguf(make(), tmp_path / "v.gguf")
    before = path.read_bytes()

    def boom(self, **kw):
        raise OSError("disk full")

    monkeypatch.setattr(GGUFWriter, "write_tensors_to_file", boom)
    with pytest.raises(OSError, match="disk full"):
        export_gguf(make(layers=(2,)), path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["v.gguf"]


def test_reads_foreign_files(tmp_path):
    v = np.arange(8, dtype=np.float32)
    back = read_gguf_control_vector(write_raw(tmp_path / "r.gguf", {"direction.2": v, "direction.5": -v}))
    assert back.model_hint == "llama" and back.layers == (2, 5) and back.meta == {}
    assert back.vectors.shape == (6, 8)  # no xsteer.n_layers: one row past the last direction
    assert torch.equal(back.vectors[5], torch.from_numpy(-v))


@pytest.mark.parametrize(
    ("tensors", "arch", "match"),
    [
        ({"direction.0": np.ones(4, np.float32)}, "controlvector", "N >= 1"),
        ({"dir.1": np.ones(4, np.float32)}, "controlvector", "N >= 1"),
        ({"direction.1": np.ones(4, np.float16)}, "controlvector", "float32"),
        ({"direction.1": np.ones((2, 4), np.float32)}, "controlvector", "1-D"),
        (
            {"direction.1": np.ones(4, np.float32), "direction.2": np.ones(5, np.float32)},
            "controlvector",
            "lengths",
        ),
        ({"direction.1": np.ones(4, np.float32)}, "llama", "not a 'controlvector'"),
    ],
)
def test_reader_rejects_what_llama_cpp_rejects(tmp_path, tensors, arch, match):
    with pytest.raises(VectorFileError, match=match):
        read_gguf_control_vector(write_raw(tmp_path / "bad.gguf", tensors, arch))


def test_reader_errors(tmp_path):
    with pytest.raises(VectorFileError, match="no control-vector file"):
        read_gguf_control_vector(tmp_path / "missing.gguf")
    (tmp_path / "junk.gguf").write_bytes(b"not a gguf file at all")
    with pytest.raises(VectorFileError, match="not a readable GGUF"):
        read_gguf_control_vector(tmp_path / "junk.gguf")
    path = export_gguf(make(layers=(4,)), tmp_path / "v.gguf")
    with pytest.raises(VectorFileError, match="beyond a model of 3 layers"):
        read_gguf_control_vector(path, n_layers=3)
