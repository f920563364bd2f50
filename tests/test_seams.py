"""Seams between modules, pinned to exact values (#11.6)."""

import pytest
import torch
from test_inject import random_vectors

from xsteer.core.inject import steer
from xsteer.errors import XsteerError
from xsteer.evaluation.conditions import build_conditions


@pytest.mark.parametrize("layer, lam", [(0, 0.5), (1, -3.0), (2, 7.25)])
def test_the_next_block_reads_resid_post_plus_lambda_v(tiny, layer, lam):
    """resid_pre[l+1] == resid_post[l] (unsteered) + λ·v_l at every position: the hook adds exactly λ·v and
    nothing else reaches the next block."""
    sv = random_vectors(tiny, layers=[layer])
    ids = tiny.tokenizer(["steer me exactly"], return_tensors="pt").input_ids
    _, clean = tiny.run_with_cache(ids, names_filter=f"blocks.{layer}.hook_resid_post")
    with steer(tiny, sv, lam=lam):
        _, steered = tiny.run_with_cache(ids, names_filter=f"blocks.{layer + 1}.hook_resid_pre")
    want = clean[f"blocks.{layer}.hook_resid_post"] + lam * sv.vectors[layer]
    torch.testing.assert_close(steered[f"blocks.{layer + 1}.hook_resid_pre"], want, rtol=0, atol=1e-6)


def test_one_evaluation_never_mixes_norm_conventions(tiny):
    unit = random_vectors(tiny)
    scaled = unit.scaled_to(torch.full((tiny.cfg.n_layers,), 40.0), "resid_mean")
    with pytest.raises(XsteerError, match="norm"):
        build_conditions({"parent": scaled, "native": unit})
    conds = build_conditions(
        {"parent": scaled, "native": unit}, norm="resid_mean", norms=torch.full((tiny.cfg.n_layers,), 40.0)
    )
    # one convention: every vector condition, and the random control copying the first, has norm 40 per layer
    for name in ("parent", "native", "random"):
        assert conds[name].norm == "resid_mean"
        torch.testing.assert_close(conds[name].vectors.norm(dim=-1), torch.full((tiny.cfg.n_layers,), 40.0))


def test_one_definition_of_resid_mean_norms(tiny):
    """What λ means under ``resid_mean`` is defined once: the norms a transfer map stores for its child and the
    norms an evaluation reads off the child are the same numbers, bit for bit, on the same texts."""
    from conftest import tiny_model

    from xsteer.app import steps
    from xsteer.core.activations import last_token_resid, resid_norms
    from xsteer.transfer.maps import fit_transfer

    texts = [f"text number {i} about {'abc'[i % 3]}" * (1 + i % 3) for i in range(24)]
    parent = tiny_model("qwen2", d_model=32, n_layers=3, seed=1)
    tmap = fit_transfer(parent, tiny, texts)
    from_steps = steps.resid_norms(tiny, texts)
    assert torch.equal(tmap.child_resid_norm, from_steps)
    acts = last_token_resid(tiny, texts)
    assert torch.equal(resid_norms(acts), acts.norm(dim=-1).mean(dim=0))  # the text-major definition


def test_random_controls_are_the_stored_control(tiny):
    """The random control build_conditions adds is random_controls' first draw, which is today's
    ``random_like(seed)`` of the first vector condition: records stored before still resume."""
    from xsteer.evaluation.conditions import random_controls

    first, second = random_vectors(tiny, seed=1), random_vectors(tiny, seed=2)
    conds = build_conditions({"parent": first, "native": second}, seed=7)
    old = first.random_like(7)
    assert torch.equal(conds["random"].vectors, old.vectors) and conds["random"].method == old.method
    draws = random_controls(first, 3, seed=7)
    assert list(draws) == ["random", "random#1", "random#2"]
    assert torch.equal(draws["random"].vectors, old.vectors)
    assert torch.equal(draws["random#2"].vectors, first.random_like(9).vectors)
    with pytest.raises(XsteerError, match="at least 1"):
        random_controls(first, 0)


def test_vectors_apply_is_steer(tiny):
    """``with v.apply(model) as h`` is :func:`steer`'s context and hands out its handle."""
    from xsteer.core.inject import SteeringHandle

    sv = random_vectors(tiny, layers=[1])
    ids = tiny.tokenizer(["steer me exactly"], return_tensors="pt").input_ids
    with steer(tiny, sv, lam=2.0):
        want = tiny(ids)
    with sv.apply(tiny, lam=2.0, layers=[1]) as handle:
        got = tiny(ids)
    assert isinstance(handle, SteeringHandle)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_maps_fitted_on_the_same_texts_read_each_model_once(tiny, monkeypatch):
    """A cache shared by make_map calls (two width maps, then a second parent) reads each model's activations
    of the fit texts once, and fits the maps the uncached calls fit, bit for bit."""
    from conftest import tiny_model

    from xsteer.app import steps
    from xsteer.app.config import TransferSpec

    parents = [tiny_model("qwen2", d_model=32, n_layers=3, seed=s) for s in (1, 2)]
    ridge = TransferSpec("proportional", "ridge", "synthetic:train:12", "resid_mean")
    control = TransferSpec("proportional", "truncate_pad", "synthetic:train:12", "resid_mean")
    plain = [steps.make_map(p, tiny, s) for p in parents for s in (ridge, control)]
    from xsteer.transfer import maps

    reads: list[int] = []
    real = maps.last_token_resid
    monkeypatch.setattr(maps, "last_token_resid", lambda m, *a, **k: reads.append(id(m)) or real(m, *a, **k))
    cache: dict = {}
    cached = [steps.make_map(p, tiny, s, cache=cache) for p in parents for s in (ridge, control)]
    assert sorted(reads) == sorted([id(parents[0]), id(tiny), id(parents[1])])  # the child read once
    for a, b in zip(plain, cached, strict=True):
        assert a.width_map_name == b.width_map_name and a.report == b.report
        assert torch.equal(a.child_resid_norm, b.child_resid_norm)
        for c in a.width_maps:
            assert torch.equal(a.width_maps[c].weight, b.width_maps[c].weight)
            assert torch.equal(a.width_maps[c].bias, b.width_maps[c].bias)
