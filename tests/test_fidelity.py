"""Transfer fidelity: the estimator on planted effects, and the whole path on a parent that IS the child in
another basis (a wider, rotated copy), where a fitted map must carry the concept whole."""

from __future__ import annotations

import math

import pytest
import torch

from xsteer.core.vectors import SteeringVectors
from xsteer.errors import InputError, NormConventionError
from xsteer.evaluation.fidelity import (
    AnswerConcept,
    AnswerProbe,
    effect_ci,
    fidelity,
    fidelity_ci,
    monotone_lambdas,
    restrict,
    signed_effect,
)

LAMS = [-0.4, -0.2, 0.2, 0.4]


def _planted(f: float, n: int = 40, noise: float = 0.05, seed: int = 0):
    """Dose-responses Δ(λ, p) = λ·a_p·k + noise: native k = 1, mapped k = f."""
    g = torch.Generator().manual_seed(seed)
    a = 1.0 + 0.5 * torch.rand(n, generator=g)
    lam = torch.tensor(LAMS)[:, None]
    native = lam * a + noise * torch.randn(len(LAMS), n, generator=g)
    mapped = f * lam * a + noise * torch.randn(len(LAMS), n, generator=g)
    return signed_effect(mapped, LAMS), signed_effect(native, LAMS)


@pytest.mark.parametrize("f", [1.0, 0.5, 0.0, -0.7])
def test_fidelity_ci_covers_the_planted_share(f):
    """A calibrated 95% interval: over 40 independent studies it covers the planted fidelity ~95% of the time."""
    ests = [fidelity_ci(*_planted(f, seed=s), n_boot=400, seed=s) for s in range(40)]
    covered = sum(e.low <= f <= e.high for e in ests)
    assert covered >= 34, covered  # P(Binomial(40, 0.95) < 34) < 0.5%
    assert all(abs(e.estimate - f) < 0.1 and e.high - e.low < 0.25 for e in ests)


def test_monotone_lambdas_stop_where_the_native_curve_turns_over():
    lams = [-0.08, -0.04, -0.02, 0.02, 0.04, 0.08]

    def curve(*means):
        return torch.tensor(means)[:, None].repeat(1, 3)

    assert monotone_lambdas(lams, curve(-3.0, -2.0, -1.0, 1.0, 2.0, 3.0)) == lams
    # the Qwen 0.5B sentiment shape: +7.3 at 0.04, -0.5 at 0.08
    assert monotone_lambdas(lams, curve(-4.2, -1.6, -1.5, 4.2, 7.3, -0.5)) == [-0.04, -0.02, 0.02, 0.04]
    # the smallest pair is kept even when it is not monotone itself
    assert monotone_lambdas(lams, curve(0.2, 0.5, 0.3, 0.2, 0.1, 1.2)) == [-0.02, 0.02]


def test_restrict_rereads_a_stored_result_on_part_of_its_grid():
    doc = {
        "lambdas": [-0.4, -0.2, 0.2, 0.4],
        "conditions": ["native", "m"],
        "baseline": [0.0, 0.0],
        "readouts": {
            "native": [[-4.0, -4.0], [-2.0, -2.0], [2.0, 2.0], [6.0, 6.0]],
            "m": [[-1.0, -1.0], [-1.0, -1.0], [1.0, 1.0], [1.0, 1.0]],
        },
        "generations": [{"condition": "m"}],
        "meta": {},
    }
    small = restrict(doc, [-0.2, 0.2], n_boot=100)
    assert small["lambdas"] == [-0.2, 0.2] and small["readouts"]["m"] == [[-1.0, -1.0], [1.0, 1.0]]
    assert small["native_effect"] == [2.0, 2.0, 2.0] and small["fidelity"]["m"] == [0.5, 0.5, 0.5]
    assert small["generations"] == [] and doc["readouts"]["m"][0] == [-1.0, -1.0]  # the input is not changed
    whole = restrict(doc, doc["lambdas"], n_boot=100)
    assert whole["native_effect"][0] == pytest.approx(3.5) and whole["fidelity"]["m"][0] == pytest.approx(
        2 / 7
    )


def test_signed_effect_counts_both_directions():
    delta = torch.tensor([[-2.0, -1.0], [2.0, 1.0]])  # λ = -1 then +1: a concept that moves both ways
    assert signed_effect(delta, [-1.0, 1.0]).tolist() == [2.0, 1.0]
    e = effect_ci(torch.tensor([1.0, 1.0, 1.0]), n_boot=100)
    assert (e.estimate, e.low, e.high) == (1.0, 1.0, 1.0)


# ---------------------------------------------------------------------------------------------- real path
CHILD_D, PARENT_D, LAYERS = 32, 48, 3


def _widened_copy(hf, q: torch.Tensor):
    """The same network in a wider residual basis: x' = x q with q [d, D] orthonormal rows (q qᵀ = I).

    Each RMSNorm gain is folded into the matrices reading its output and the √(D/d) change of the RMS is
    folded in too, so the copy computes exactly the same function (logits) as the original.
    """
    import copy

    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        **{
            **hf.config.to_dict(),
            "hidden_size": PARENT_D,
            "head_dim": hf.config.hidden_size // hf.config.num_attention_heads,
        }
    )
    wide = LlamaForCausalLM(cfg).eval()
    src = copy.deepcopy(hf.state_dict())
    r = math.sqrt(CHILD_D / PARENT_D)  # the RMS of x q over D dims is r times that of x over d dims
    out = {}
    out["model.embed_tokens.weight"] = src["model.embed_tokens.weight"] @ q
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        g1, g2 = src[p + "input_layernorm.weight"], src[p + "post_attention_layernorm.weight"]
        for name in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
            out[p + name + ".weight"] = (src[p + name + ".weight"] * g1[None, :] * r) @ q
        out[p + "self_attn.o_proj.weight"] = q.T @ src[p + "self_attn.o_proj.weight"]
        for name in ("mlp.gate_proj", "mlp.up_proj"):
            out[p + name + ".weight"] = (src[p + name + ".weight"] * g2[None, :] * r) @ q
        out[p + "mlp.down_proj.weight"] = q.T @ src[p + "mlp.down_proj.weight"]
        out[p + "input_layernorm.weight"] = torch.ones(PARENT_D)
        out[p + "post_attention_layernorm.weight"] = torch.ones(PARENT_D)
    out["model.norm.weight"] = torch.ones(PARENT_D)
    out["lm_head.weight"] = (src["lm_head.weight"] * src["model.norm.weight"][None, :] * r) @ q
    wide.load_state_dict(out, strict=False)
    return wide


@pytest.fixture(scope="module")
def child_and_widened_parent():
    from conftest import tiny_hf

    from xsteer.core.models import wrap

    hf, tok = tiny_hf("llama", d_model=CHILD_D, n_layers=LAYERS, seed=3)
    with torch.no_grad():  # RMSNorm gains that are not all 1, so folding them is tested too
        for i in range(LAYERS):
            hf.model.layers[i].input_layernorm.weight.uniform_(0.5, 1.5)
    g = torch.Generator().manual_seed(7)
    q = torch.linalg.qr(torch.randn(PARENT_D, CHILD_D, generator=g, dtype=torch.float64))[
        0
    ].T.float()  # [d, D]
    wide = _widened_copy(hf, q)
    child, parent = (
        wrap(hf, tok, model_id="tiny-child", device="cpu"),
        wrap(wide, tok, model_id="tiny-wide-parent", device="cpu"),
    )
    return child, parent, q


def _concept() -> AnswerConcept:
    """A toy concept read out on log p(" x") - log p(" z") after each probe (a character-level model has no
    words for a lexicon readout)."""
    pos = [
        f"the day was {w} and we {v}"
        for w in ("sunny", "bright", "warm", "lovely", "fine", "clear")
        for v in ("sang", "ran")
    ]
    neg = [t.replace("sang", "wept").replace("ran", "hid") for t in pos]
    probes = [
        f"{s} it was"
        for s in (
            "on monday",
            "at noon",
            "by the sea",
            "in june",
            "at home",
            "on the hill",
            "after tea",
            "at dawn",
        )
    ]
    return AnswerConcept(
        "toy", tuple(zip(pos, neg, strict=True)), tuple(AnswerProbe(p, " x", " z") for p in probes)
    )


def test_widened_parent_computes_the_same_function(child_and_widened_parent):
    child, parent, _ = child_and_widened_parent
    ids = child.tokenizer(["hello there, general"], return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(parent(ids), child(ids), atol=2e-4, rtol=2e-4)


def test_mapped_parent_vector_has_fidelity_one_and_random_zero(child_and_widened_parent):
    """Extract in the parent, fit a ridge map on shared texts, map: the concept crosses whole (CI covers 1),
    while a random direction of the same norm carries nothing (CI covers 0)."""
    from xsteer.core.activations import last_token_resid
    from xsteer.extraction.extract import extract
    from xsteer.extraction.pairs import concept_pairs
    from xsteer.transfer.maps import fit_transfer

    child, parent, _ = child_and_widened_parent
    concept = _concept()
    pairs = concept_pairs(concept)
    v_parent = extract(parent, pairs, method="mean_diff", progress=False)
    v_native = extract(child, pairs, method="mean_diff", progress=False)
    texts = [
        f"{a} {b} {c}"
        for a in ("we", "they", "the cat", "a man")
        for b in ("saw", "met", "took", "liked", "lost")
        for c in ("a dog", "the sea", "two hats", "my book", "it")
    ]
    tmap = fit_transfer(parent, child, texts, layer_map="greedy", width_map="ridge", alpha=1e-6)
    norms = last_token_resid(child, texts).norm(dim=-1).mean(0)
    native = v_native.scaled_to(norms, "resid_mean")
    mapped = tmap.apply(v_parent, norm="resid_mean")
    res = fidelity(
        child,
        concept,
        {"mapped": mapped, "random": native.random_like(0)},
        native=native,
        lambdas=LAMS,
        n_boot=1000,
        progress=False,
    )
    if (
        res.native_effect.estimate < 0
    ):  # a random model's " x" vs " z" has no preferred side: orient the concept
        native, mapped = -native, -mapped
        res = fidelity(
            child,
            concept,
            {"mapped": mapped, "random": native.random_like(0)},
            native=native,
            lambdas=LAMS,
            n_boot=1000,
            progress=False,
        )
    assert res.native_steers, res.native_effect
    f, r = res.fidelity["mapped"], res.fidelity["random"]
    # The map is exact up to float32 and a 1e-6 ridge penalty, so the interval is tight around 1.
    assert f.low - 1e-3 <= 1.0 <= f.high + 1e-3 and abs(f.estimate - 1.0) < 1e-2, f
    assert r.low <= 0.0 <= r.high or abs(r.estimate) < 0.2, r


def test_fidelity_refuses_mixed_norms_and_a_native_condition(child_and_widened_parent):
    child = child_and_widened_parent[0]
    v = SteeringVectors(torch.randn(LAYERS, CHILD_D), "tiny-child", "x", tuple(range(LAYERS)))
    with pytest.raises(NormConventionError, match="different norm conventions"):
        fidelity(
            child,
            _concept(),
            {"m": v.scaled_to(torch.ones(LAYERS) * 3, "resid_mean")},
            native=v,
            lambdas=LAMS,
            progress=False,
        )
    with pytest.raises(InputError, match="reference condition"):
        fidelity(child, _concept(), {"native": v}, native=v, lambdas=LAMS, progress=False)
    with pytest.raises(InputError, match="non-zero"):
        fidelity(child, _concept(), {"m": v}, native=v, lambdas=[0.0, 0.1], progress=False)


# ---------------------------------------------------------------------------------------------- the random null
def test_random_null_is_a_prediction_bound_over_the_draws_and_the_verdict_uses_it():
    from xsteer.app.fidelity_report import random_null, study_table, verdict

    result = {
        "conditions": ["native", "random", "random#2", "random#3", "p×ridge", "p×ridge/mapped-random"],
        "fidelity": {
            "native": [1.0, 1.0, 1.0],
            "random": [-0.1, -0.2, 0.0],
            "random#2": [0.2, 0.1, 0.3],
            "random#3": [0.05, -0.1, 0.2],
            "p×ridge": [0.6, 0.55, 0.8],
            "p×ridge/mapped-random": [0.0, -0.1, 0.1],
        },
        "native_effect": [2.0, 1.5, 2.5],
        "native_steers": True,
        "concept": "sentiment",
        "meta": {"parent": "p", "child": "c"},
    }
    null = random_null(result)
    # mean 0.05, sd 0.15, t(0.95, 2) = 2.919986: 0.05 + 2.919986 * 0.15 * sqrt(4 / 3)
    assert null.draws == (-0.1, 0.2, 0.05) and null.bound == pytest.approx(0.555756, abs=1e-6)
    # CI low 0.55 is above every draw (largest 0.2) but not above the bound for a fourth draw
    assert verdict(result, "p×ridge") == "weak"
    assert "+0.56 (3 draws: +0.05 ± 0.15)" in study_table([result])
    one = {**result, "conditions": result["conditions"][:2] + result["conditions"][4:]}
    assert str(random_null(one)) == "-0.10 (1 draw)" and verdict(one, "p×ridge") == "beats nulls"


def _result(parent, child, concept, fids, *, steers=True, fits=None):
    """A result document with one random draw at 0.1 and mapped-random nulls at 0 for every map; ``fits``
    gives each map's held-out fit on the one steered layer."""
    fidelity = {"native": [1.0, 1.0, 1.0], "random": [0.1, 0.0, 0.2]}
    for name, f in fids.items():
        fidelity |= {name: f, f"{name}/mapped-random": [0.0, -0.1, 0.1]}
    conditions = ["native", "random", *[c for n in fids for c in (n, f"{n}/mapped-random")]]
    return {
        "lambdas": [-0.1, 0.1],
        "baseline": [0.0, 0.0],  # readouts that give each condition its fidelity estimate on this grid
        "readouts": {c: [[-fidelity[c][0] * steers] * 2, [fidelity[c][0] * steers] * 2] for c in conditions},
        "conditions": conditions,
        "fidelity": fidelity if steers else {},
        "native_effect": [2.0, 1.5, 2.5] if steers else [0.1, -0.1, 0.3],
        "native_steers": steers,
        "concept": concept,
        "meta": {
            "parent": parent,
            "child": child,
            "steered_layers": [3],
            "maps": {
                n: {"heldout_cos_centred": {"2": -1.0, "3": f}, "std_cos_to_native": -f}
                for n, f in (fits or {}).items()
            },
        },
    }


def test_study_overview_and_scoreboard_name_the_best_map_that_beats_the_nulls(tmp_path):
    from xsteer.app.fidelity_report import overview, overview_figure, scoreboard, study_markdown

    results = [
        _result("a", "b", "sentiment", {"p×ridge": [0.9, 0.8, 1.0], "p×anchor": [1.2, 0.05, 2.0]}),
        _result("a", "b", "topic", {"p×ridge": [0.15, 0.05, 0.3], "p×anchor": [-0.2, -0.3, -0.1]}),
        _result("c", "b", "certainty", {"p×ridge": [0.0, 0.0, 0.0]}, steers=False),
    ]
    table = overview(results).splitlines()
    assert table[0] == "| parent → child | sentiment | topic | certainty |"
    # p×anchor has the larger estimate but its CI reaches down to 0.05 < the random draw's 0.1
    assert table[2] == "| a → b | **0.90** [0.80, 1.00] p×ridge | none beats nulls (best p×ridge +0.15) | · |"
    assert table[3] == "| c → b | · | · | undefined: native +0.10 [-0.10, +0.30] |"
    board = scoreboard(results).splitlines()
    assert board[2:] == [
        "| p×ridge | 1 of 2 | +0.53 | +0.15 … +0.90 |",
        "| p×anchor | 0 of 2 | +0.50 | -0.20 … +1.20 |",
    ]
    assert overview_figure(results, tmp_path / "overview").stat().st_size > 0
    assert "3 (pair, concept) measurements" in study_markdown(results)


def test_analysis_report_keeps_the_hand_written_reading_and_regenerates_the_rest(tmp_path):
    import importlib.util
    import json
    from pathlib import Path

    path = Path(__file__).parents[1] / "analysis" / "fidelity_report.py"
    spec = importlib.util.spec_from_file_location("fidelity_report_script", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)

    (tmp_path / "run" / "results").mkdir(parents=True)
    doc = _result("a", "b", "sentiment", {"p×ridge": [0.9, 0.8, 1.0]})
    (tmp_path / "run" / "results" / "a__b__sentiment.json").write_text(json.dumps(doc))
    out = tmp_path / "fidelity.md"
    script.main([str(tmp_path / "run"), "--out", str(out)])
    first = out.read_text()
    assert first.startswith("# Transfer fidelity\n\n" + script.MARKER) and "**0.90** [0.80, 1.00]" in first
    out.write_text(first.replace("# Transfer fidelity\n", "# Transfer fidelity\n\nRead by hand.\n"))
    doc = _result("a", "b", "sentiment", {"p×ridge": [0.5, 0.4, 0.6]})
    (tmp_path / "run" / "results" / "a__b__sentiment.json").write_text(json.dumps(doc))
    script.main([str(tmp_path / "run"), "--out", str(out)])
    second = out.read_text()
    assert "Read by hand." in second and "**0.50** [0.40, 0.60]" in second and "0.90" not in second
    assert second.count(script.MARKER) == 1 and (tmp_path / "fidelity_overview.png").exists()


def test_fit_vs_fidelity_ranks_each_width_map_on_the_steered_layers():
    from xsteer.app.fidelity_report import cos_to_native, fit_vs_fidelity, predicts_fidelity

    results = [
        _result(
            "a",
            "b",
            f"c{i}",
            {"p×ridge": [f, f - 0.1, f + 0.1], "p×anchor": [f, f - 0.1, f + 0.1]},
            fits={"p×ridge": 0.5 + 0.1 * i, "p×anchor": 0.1 - 0.01 * i},
        )
        for i, f in enumerate([0.2, 0.4, 0.5, 0.7, 0.9])
    ]
    rows = fit_vs_fidelity(results, n_boot=200).splitlines()[2:]
    # layer 2's fit (-1.0) is not steered and must not count
    assert rows[0] == "| ridge | 5 | +0.50 … +0.90 | +1.00 [+1.00, +1.00] |"
    assert rows[1] == "| anchor | 5 | +0.06 … +0.10 | -1.00 [-1.00, -1.00] |"
    assert fit_vs_fidelity(results[:4]).splitlines()[2] == "| ridge | 4 | +0.50 … +0.80 | — |"
    by_cos = predicts_fidelity(results, cos_to_native, "cos to native", n_boot=200).splitlines()
    assert by_cos[0].startswith("| width map | cells | cos to native |")
    assert by_cos[2] == "| ridge | 5 | -0.90 … -0.50 | -1.00 [-1.00, -1.00] |"
