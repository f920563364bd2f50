import pytest
import torch

from xsteer.core.vectors import SteeringVectors
from xsteer.transfer.maps import TransferError, TransferMap, fit_transfer, fit_transfer_from_activations


def synthetic(n_p=6, n_c=4, d_p=48, d_c=32, n=400, noise=0.05, seed=0):
    """Child layer c = parent layer proportional(c) @ A_c + noise, with a planted parent direction."""
    g = torch.Generator().manual_seed(seed)
    xp = torch.randn(n_p, n, d_p, generator=g) @ torch.diag(torch.linspace(0.5, 2, d_p))
    A = torch.randn(n_c, d_p, d_c, generator=g) / d_p**0.5
    src = [round(c * (n_p - 1) / (n_c - 1)) for c in range(n_c)]
    yc = torch.stack([xp[src[c]] @ A[c] for c in range(n_c)]) + noise * torch.randn(n_c, n, d_c, generator=g)
    return xp, yc, A, src


def test_ridge_recovers_planted_direction_in_child_space():
    xp, yc, A, src = synthetic()
    tmap = fit_transfer_from_activations(
        xp, yc, parent_id="P", child_id="C", layer_map="proportional", width_map="ridge"
    )
    assert tmap.layer_map == dict(enumerate(src))
    u = torch.randn(6, 48, generator=torch.Generator().manual_seed(5))
    mapped = tmap.apply(SteeringVectors(u, "P", "pca", tuple(range(6))))
    for c in range(4):
        truth = u[src[c]] @ A[c]
        cos = torch.nn.functional.cosine_similarity(mapped.vectors[c], truth, dim=0)
        assert cos > 0.95, (c, cos)
        assert tmap.report[c]["r2"] > 0.9
    assert mapped.model_id == "C" and mapped.method == "transfer:proportional/ridge"
    torch.testing.assert_close(mapped.vectors.norm(dim=-1), torch.ones(4))


def test_cka_layer_map_finds_the_source_layers():
    xp, yc, _, src = synthetic(n_p=6, n_c=3, noise=0.01)
    tmap = fit_transfer_from_activations(
        xp, yc, parent_id="P", child_id="C", layer_map="cka", width_map="ridge"
    )
    assert tmap.layer_map == dict(enumerate(src))


def test_greedy_leaves_extra_child_layers_unsteered():
    xp, yc, _, _ = synthetic(n_p=3, n_c=5)
    tmap = fit_transfer_from_activations(
        xp, yc, parent_id="P", child_id="C", layer_map="greedy", width_map="procrustes"
    )
    v = torch.randn(3, 48)
    mapped = tmap.apply(SteeringVectors(v, "P", "pca", (0, 1, 2)))
    assert mapped.layers == (0, 1, 2)
    assert (mapped.vectors[3:] == 0).all()


def test_resid_mean_norm_convention():
    xp, yc, _, _ = synthetic()
    tmap = fit_transfer_from_activations(xp, yc, parent_id="P", child_id="C")
    mapped = tmap.apply(SteeringVectors(torch.randn(6, 48), "P", "pca", tuple(range(6))), norm="resid_mean")
    assert mapped.norm == "resid_mean"
    torch.testing.assert_close(mapped.vectors.norm(dim=-1), yc.norm(dim=-1).mean(-1))


def test_map_round_trip(tmp_path):
    xp, yc, _, _ = synthetic()
    tmap = fit_transfer_from_activations(
        xp, yc, parent_id="P", child_id="C", width_map="procrustes", info={"fit_text": "x"}
    )
    back = TransferMap.load(tmap.save(tmp_path / "m.safetensors"))
    v = SteeringVectors(torch.randn(6, 48), "P", "pca", tuple(range(6)))
    torch.testing.assert_close(back.apply(v).vectors, tmap.apply(v).vectors, atol=1e-5, rtol=1e-5)
    assert back.report.keys() == tmap.report.keys() and back.info["fit_text"] == "x"


def test_clear_errors():
    xp, yc, _, _ = synthetic()
    with pytest.raises(TransferError, match="options for unequal widths: ridge, procrustes"):
        fit_transfer_from_activations(xp, yc, parent_id="P", child_id="C", width_map="identity")
    with pytest.raises(TransferError, match="options: greedy"):
        fit_transfer_from_activations(xp, yc, parent_id="P", child_id="C", layer_map="nearest")
    with pytest.raises(ValueError, match="parent layer 9"):
        fit_transfer_from_activations(
            xp, yc, parent_id="P", child_id="C", layer_map="explicit", mapping="0:9"
        )
    tmap = fit_transfer_from_activations(xp, yc, parent_id="P", child_id="C")
    with pytest.raises(TransferError, match="fit a map for that parent"):
        tmap.apply(SteeringVectors(torch.randn(5, 48), "Q", "pca", (0,)))
    with pytest.raises(TransferError, match="targets child"):
        tmap.check_child("D", (4, 40))


def test_vectors_of_another_parent_are_refused_unless_allowed():
    """Same shape is not same space: a vector of another model of the parent's size is refused by id, in the
    map itself (so notebooks and every front end get the rule), with an explicit opt-out for fine-tunes."""
    from xsteer.app.steps import check_map

    xp, yc, _, _ = synthetic()
    tmap = fit_transfer_from_activations(xp, yc, parent_id="P", child_id="C")
    other = SteeringVectors(torch.randn(6, 48), "P-finetune", "pca", tuple(range(6)))
    for refuse in (
        lambda: tmap.apply(other),
        lambda: tmap.check(other),
        lambda: check_map(tmap, vectors=other),
    ):
        with pytest.raises(TransferError, match="'P'.*'P-finetune'.*allow_other_parent=True"):
            refuse()
    mapped = tmap.apply(other, allow_other_parent=True)
    own = tmap.apply(other.replace(model_id="P"))
    torch.testing.assert_close(mapped.vectors, own.vectors, rtol=0, atol=0)
    assert mapped.extra["parent"] == "P-finetune" and mapped.extra["map_parent"] == "P"
    assert "map_parent" not in own.extra
    # the opt-out loosens the id only: another shape is still refused
    with pytest.raises(TransferError, match="fit a map for that parent"):
        tmap.apply(SteeringVectors(torch.randn(5, 48), "Q", "pca", (0,)), allow_other_parent=True)


def test_fit_between_two_tiny_models():
    from conftest import tiny_model

    parent, child = (
        tiny_model("llama", d_model=64, n_layers=4),
        tiny_model("qwen2", d_model=32, n_layers=3, seed=1),
    )
    texts = [f"text number {i} about {'abc'[i % 3]}" * (1 + i % 3) for i in range(40)]
    tmap = fit_transfer(parent, child, texts, layer_map="proportional", width_map="ridge")
    assert tmap.parent_shape == (4, 64) and tmap.child_shape == (3, 32)
    assert set(tmap.report) == {0, 1, 2} and all("r2" in r for r in tmap.report.values())
