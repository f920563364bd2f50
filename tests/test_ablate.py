import pytest
import torch

from xsteer.core.inject import steer
from xsteer.core.vectors import SteeringVectors
from xsteer.evaluation.ablate import (
    coordinate_search,
    leave_one_out_profiles,
    reweight,
    run_profiles,
    single_layer_profiles,
)


def unit_vectors(n_layers, d, seed=0):
    v = torch.randn(n_layers, d, generator=torch.Generator().manual_seed(seed))
    return SteeringVectors(v / v.norm(dim=-1, keepdim=True), "tiny-llama", "random", tuple(range(n_layers)))


def test_one_layer_ablation_steers_exactly_that_layer(tiny):
    sv = unit_vectors(tiny.cfg.n_layers, tiny.cfg.d_model)
    only2 = reweight(sv, single_layer_profiles(sv)["only 2"])
    assert only2.layers == (2,)
    ids = tiny.tokenizer(["hello"], return_tensors="pt").input_ids
    seen = {}

    def spy(layer):
        def f(x, hook):
            seen[layer] = x[0].clone()
            return x

        return f

    spies = [(f"blocks.{i}.hook_resid_post", spy(i)) for i in range(tiny.cfg.n_layers)]
    with torch.inference_mode(), tiny.hooks(fwd_hooks=spies):
        tiny(ids)
    base = dict(seen)
    with torch.inference_mode(), steer(tiny, only2, lam=3.0), tiny.hooks(fwd_hooks=spies):
        tiny(ids)
    for layer in (0, 1):
        torch.testing.assert_close(seen[layer], base[layer])
    torch.testing.assert_close(
        seen[2] - base[2], (3.0 * sv.vectors[2]).expand_as(base[2]), atol=1e-5, rtol=1e-5
    )


def test_profiles_and_reweight_errors():
    sv = unit_vectors(4, 8)
    loo = leave_one_out_profiles(sv)
    assert set(loo["all but 1"]) == {0, 2, 3}
    w = reweight(sv, {0: 2.0, 3: 0.5})
    torch.testing.assert_close(w.vectors[0], 2 * sv.vectors[0])
    assert w.layers == (0, 3)
    with pytest.raises(ValueError, match="no vector"):
        reweight(sv.replace(layers=(0, 1)), {3: 1.0})
    with pytest.raises(ValueError, match="no layer"):
        reweight(sv, {0: 0.0})


def fake_signal(sv, target):
    """A signal peaked at a known per-layer λ profile: -Σ (λ_l - target_l)², read off the vectors' norms."""

    def signal(vectors, lam):
        got = torch.zeros(sv.n_layers)
        if vectors is not None:
            got = vectors.vectors.norm(dim=-1) * lam
        return -float(((got - target) ** 2).sum())

    return signal


def test_coordinate_search_finds_a_planted_profile():
    sv = unit_vectors(4, 8)
    target = torch.tensor([0.0, 0.5, 0.0, 1.0])
    profile, best, trace = coordinate_search(
        fake_signal(sv, target), sv, grid=[0.25, 0.5, 1.0], progress=False
    )
    assert profile == {1: 0.5, 3: 1.0} and best == pytest.approx(0.0)
    assert trace[0]["signal"] < trace[-1]["signal"]


def test_run_profiles_on_real_signal(tiny):
    from xsteer.evaluation.ablate import gold_logprob_signal

    sv = unit_vectors(tiny.cfg.n_layers, tiny.cfg.d_model)
    signal = gold_logprob_signal(tiny, ["Question: 1+1\nAnswer:", "Question: 2+2\nAnswer:"], [" 2", " 4"])
    res = run_profiles(signal, sv, single_layer_profiles(sv), [0.0, 5.0], progress=False)
    assert set(res) == {"baseline"} | {f"only {i}" for i in range(tiny.cfg.n_layers)}
    for name, curve in res.items():
        if name != "baseline":
            assert curve[0.0] == pytest.approx(res["baseline"][0.0], abs=1e-4)  # λ = 0 is the baseline
    assert any(abs(c[5.0] - res["baseline"][0.0]) > 1e-3 for n, c in res.items() if n != "baseline")
