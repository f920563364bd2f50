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
