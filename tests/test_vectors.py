import json

import pytest
import torch
from conftest import bad_shapes

from xsteer.core.vectors import SteeringVectors, VectorFileError


def make(n_layers=4, d=8, layers=(0, 1, 2, 3)):
    v = torch.randn(n_layers, d, generator=torch.Generator().manual_seed(0))
    return SteeringVectors(
        v, "m", "pca", layers, layer_stats=tuple({"separation": 0.9} for _ in range(n_layers))
    )


def test_round_trip_without_pickle(tmp_path):
    sv = make()
    path = sv.save(tmp_path / "v.safetensors")
    back = SteeringVectors.load(path)
    torch.testing.assert_close(back.vectors, sv.vectors)
    assert back.metadata() == sv.metadata()
    # The metadata is plain JSON in the safetensors header; no pickle anywhere.
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["xsteer"])
    assert meta["n_layers"] == 4 and meta["d_model"] == 8 and meta["hook"] == "hook_resid_post"
    assert not list(tmp_path.glob(".*tmp"))  # the atomic write left no temp file


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_vectors_rejected(bad):
    v = torch.ones(3, 4)
    v[1, 2] = bad
    with pytest.raises(VectorFileError, match=r"NaN or infinite values at layers \[1\]"):
        SteeringVectors(v, "m", "pca", (0, 1, 2))


def test_zero_vector_on_a_steered_layer_rejected():
    v = torch.ones(3, 4)
    v[2] = 0
    with pytest.raises(VectorFileError, match=r"zero vectors"):
        SteeringVectors(v, "m", "pca", (0, 1, 2))
    SteeringVectors(v, "m", "pca", (0, 1))  # an unsteered zero row is fine


def test_other_bad_inputs():
    with pytest.raises(VectorFileError, match="at least one layer"):
        SteeringVectors(torch.ones(3, 4), "m", "pca", ())
    with pytest.raises(VectorFileError, match="outside"):
        SteeringVectors(torch.ones(3, 4), "m", "pca", (3,))
    with pytest.raises(VectorFileError, match="norm convention"):
        SteeringVectors(torch.ones(3, 4), "m", "pca", (0,), norm="weird")
    with bad_shapes(r"\[n_layers, d_model\]"):
        SteeringVectors(torch.ones(4), "m", "pca", (0,))


def test_load_errors(tmp_path):
    with pytest.raises(VectorFileError, match="no vector file"):
        SteeringVectors.load(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file")
    with pytest.raises(VectorFileError, match="not a readable"):
        SteeringVectors.load(junk)
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"vectors": torch.ones(2, 3)}, str(foreign))
    with pytest.raises(VectorFileError, match="without xsteer metadata"):
        SteeringVectors.load(foreign)


def test_failed_save_leaves_previous_file(tmp_path, monkeypatch):
    sv = make()
    path = sv.save(tmp_path / "v.safetensors")
    before = path.read_bytes()
    import safetensors.torch

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(OSError):
        make(d=16).save(path)
    assert path.read_bytes() == before and len(list(tmp_path.iterdir())) == 1


def test_norm_conventions():
    sv = make()
    unit = sv.unit()
    torch.testing.assert_close(unit.vectors.norm(dim=-1), torch.ones(4))
    scaled = sv.scaled_to(torch.tensor([1.0, 2.0, 3.0, 4.0]), "resid_mean")
    torch.testing.assert_close(scaled.vectors.norm(dim=-1), torch.tensor([1.0, 2.0, 3.0, 4.0]))
    assert scaled.norm == "resid_mean"
