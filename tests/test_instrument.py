"""The fidelity instrument: placebo nulls built like a concept, many vectors per batched pass, verdicts on
planted readouts, and the whole path on a parent that IS the child in another basis."""

from __future__ import annotations

import einops
import numpy as np
import pytest
import torch
from test_fidelity import LAMS, _concept, child_and_widened_parent  # noqa: F401 (a fixture)

from xsteer.core.vectors import SteeringVectors
from xsteer.errors import InputError
from xsteer.evaluation.fidelity import AnswerLogOdds, signed_effect
from xsteer.evaluation.instrument import (
    InstrumentSpec,
    ModelActs,
    analyze,
    build_cell,
    mean_diff,
    read_cell,
    reference_check,
    scaled,
)
from xsteer.evaluation.nulls import (
    covariance_directions,
    flip_placebos,
    max_threshold,
    neutral_placebos,
    placebo_threshold,
)


# ---------------------------------------------------------------------------------------------- nulls
def test_balanced_flips_cancel_the_concept_exactly():
    # Every pair differs by the concept a plus its own noise: flipping exactly half cancels a.
    g = torch.Generator().manual_seed(0)
    n, d = 12, 16
    a = torch.zeros(d)
    a[0] = 5.0
    noise = 0.1 * torch.randn(n, 2, d, generator=g)
    noise[:, :, 0] = 0.0
    neg = torch.randn(n, 2, d, generator=g)
    pos = neg + a + noise
    placebos = flip_placebos(pos, neg, 20, seed=1)
    assert placebos.shape == (20, 2, d)
    assert torch.allclose(placebos.norm(dim=-1), torch.ones(20, 2), atol=1e-5)
    assert placebos[..., 0].abs().max() < 1e-5  # no component along the concept is left
    assert mean_diff(pos, neg)[:, 0].min() > 0.99  # while the concept's own vector is almost all a
    assert len({tuple(p.flatten().tolist()) for p in placebos}) == 20  # fresh flips each time


def test_neutral_placebos_pair_texts_of_matched_length():
    n, d = 40, 8
    acts = torch.zeros(n, 1, d)
    lengths = list(range(n))
    acts[:, 0, 0] = torch.tensor(lengths, dtype=torch.float32)  # coordinate 0 = length
    acts[:, 0, 1:] = 10 * torch.randn(n, d - 1, generator=torch.Generator().manual_seed(0))
    placebos = neutral_placebos(acts, lengths, 10, 8, seed=0)
    # Neighbours in length differ by 1 in coordinate 0, a small part of each pair's difference (texts
    # paired at random would differ by ~13 there, as much as in any other coordinate).
    assert placebos[..., 0].abs().max() < 0.15
    assert torch.equal(placebos, neutral_placebos(acts, lengths, 10, 8, seed=0))
    with pytest.raises(InputError, match="need 81 texts"):
        neutral_placebos(acts, lengths, 10, 40, seed=0)
    with pytest.raises(InputError, match="need 41 texts"):  # no spare text for a pairing that starts at 1
        neutral_placebos(acts, lengths, 10, 20, seed=0)


def test_a_placebos_replicate_resamples_its_own_pairs_as_a_concepts_replicate_does():
    # Used as a concept, a placebo is its own set of pairs: a pipeline replicate resamples those pairs, so it stays
    # near that placebo (a concept's replicate stays near the concept), not a fresh draw of the recipe.
    g = torch.Generator().manual_seed(0)
    n, d = 40, 64
    a = torch.zeros(d)
    a[0] = 5.0  # a concept in every pair, as in the test above
    neg = torch.randn(n, 1, d, generator=g)
    noise = torch.randn(n, 1, d, generator=g)
    noise[..., 0] = 0.0
    pos = neg + a + noise
    fit = torch.randn(2 * n + 1, 1, d, generator=g)
    lengths = list(range(2 * n + 1))
    for build in (
        lambda r: flip_placebos(pos, neg, 6, seed=3, resample=r),
        lambda r: neutral_placebos(fit, lengths, 6, n, seed=3, resample=r),
    ):
        base, rep = build(None), build(7)
        cos = einops.einsum(base[:, 0], rep[:, 0], "i d, j d -> i j")
        assert cos.diagonal().min() > 0.5  # each replicate near its own placebo, nearer than to any other
        assert torch.equal(cos.argmax(dim=0), torch.arange(6))
        assert torch.equal(build(7), rep) and not torch.equal(build(8), rep)  # a seed per replicate
    # A balanced flip stays balanced in its replicates: the concept does not come back, with either sign.
    assert flip_placebos(pos, neg, 6, seed=3, resample=7)[..., 0].abs().max() < 1e-5


def test_covariance_directions_live_in_the_activations_spread():
    g = torch.Generator().manual_seed(0)
    n, d = 30, 10
    acts = torch.zeros(n, 2, d)
    acts[:, 0, 3] = 100.0 + torch.randn(n, generator=g)  # a massive mean, one direction of spread
    acts[:, 1] = torch.randn(n, d, generator=g) * torch.linspace(0.01, 3.0, d)
    dirs = covariance_directions(acts, 50, seed=0)
    assert torch.allclose(dirs[:, 0, 3].abs(), torch.ones(50), atol=1e-5)
    # Draws weigh each coordinate by its spread: the widest coordinate dominates on average.
    share = (dirs[:, 1] ** 2).mean(dim=0)
    assert share.argmax() == d - 1 and share[0] < 1e-3


def test_placebo_bars():
    vals = [float(x) for x in range(100)]
    assert placebo_threshold(vals) == pytest.approx(94.05)
    with pytest.raises(InputError, match="at least 10 placebos"):
        placebo_threshold(vals[:9])
    # The family-wise bar is the quantile of each placebo's maximum over the maps.
    assert max_threshold({"a": vals, "b": vals[::-1]}) == pytest.approx(
        np.quantile(np.maximum(vals, vals[::-1]), 0.95)
    )


def test_spec_refuses_what_cannot_make_a_verdict():
    with pytest.raises(InputError, match="at least 10 placebos"):
        InstrumentSpec(placebos=9)
    with pytest.raises(InputError, match="at least 2 replicates"):
        InstrumentSpec(replicates=1)
    with pytest.raises(InputError, match="both signs"):
        InstrumentSpec(lambdas=(0.02, 0.04))
    with pytest.raises(InputError, match="unknown norm convention 'l2'; options: resid_mean, whitened"):
        InstrumentSpec(norm="l2")


def test_norm_conventions_set_what_lambda_is_a_share_of():
    # Activations with one massive coordinate (spread 100) among quiet ones (spread 1), over 2 layers.
    g = torch.Generator().manual_seed(0)
    spread = torch.ones(8)
    spread[0] = 100.0
    fit = torch.randn(4000, 2, 8, generator=g) * spread
    massive, quiet = torch.zeros(2, 8), torch.zeros(2, 8)
    massive[:, 0], quiet[:, 3] = 1.0, 1.0
    stack = torch.stack([massive, quiet, massive + quiet])

    # resid_mean: every vector gets the mean residual norm on the steered layer 1, layer 0 stays zero.
    out = scaled(stack, [1], fit, "resid_mean")
    assert torch.equal(out[:, 0], torch.zeros(3, 8))
    mean_norm = fit[:, 1].norm(dim=-1).mean()
    torch.testing.assert_close(out[:, 1].norm(dim=-1), mean_norm.expand(3))

    # whitened: each vector is √d spreads long in the child's own units, so a push along the massive coordinate
    # is ~100x longer than one along a quiet coordinate, and the direction is kept.
    out = scaled(stack, [1], fit, "whitened")
    sigma = fit[:, 1].std(dim=0)
    torch.testing.assert_close((out[:, 1] / sigma).norm(dim=-1), torch.full((3,), 8**0.5))
    assert torch.equal(out[:, 0], torch.zeros(3, 8))
    ratio = out[0, 1].norm() / out[1, 1].norm()
    assert 95 < ratio < 105
    torch.testing.assert_close(out[2, 1] / out[2, 1].norm(), stack[2, 1] / stack[2, 1].norm())


# ---------------------------------------------------------------------------------------------- verdicts
def _readouts(
    f_mapped: float, *, native_sign: float = 1.0, n_probes: int = 36, seed: int = 0, off: float = 0.0
):
    """Planted readouts: Δ(λ, p) = k·λ·a_p + noise, native k = 1, mapped k = f, placebos k ~ N(0, 0.1)."""
    g = torch.Generator().manual_seed(seed)
    lams = torch.tensor(LAMS)[:, None]
    a = 1.0 + 0.5 * torch.rand(n_probes, generator=g)

    def dose(k: float) -> torch.Tensor:
        return k * lams * a + 0.02 * torch.randn(len(LAMS), n_probes, generator=g)

    target = {"native": dose(native_sign), "p×ridge/mapped": dose(f_mapped)}
    for i in range(20):
        target[f"p×ridge/placebo:{'neutral' if i < 10 else 'flip'}#{i}"] = dose(
            0.1 * float(torch.randn(1, generator=g))
        )
    for i in range(4):
        target[f"p×ridge/random-parent#{i}"] = dose(0.05 * float(torch.randn(1, generator=g)))
    for r in range(5):
        target[f"native@{r}"] = dose(native_sign)
        target[f"p×ridge/mapped@{r}"] = dose(f_mapped * (1 + 0.02 * r))
    other = {"native": dose(1.0), "target-native": dose(0.05), "p×ridge/mapped": dose(off)}
    zero = torch.zeros(n_probes)
    return {"target": target, "formality": other}, {"target": zero, "formality": zero}


def test_a_planted_transfer_crosses_and_is_specific():
    readouts, base = _readouts(0.9)
    spec = InstrumentSpec(placebos=20, replicates=5, random_draws=4, lambdas=tuple(LAMS))
    res = analyze(readouts, base, maps=[("p", "ridge")], spec=spec)
    row = res["maps"]["p×ridge"]
    assert res["reference"] == "valid"
    assert row["fidelity"] == pytest.approx(0.9, abs=0.02)
    assert row["pipeline_ci"][0] < 0.9 < row["pipeline_ci"][1] + 0.1
    assert row["beats_placebo"] and res["crosses"] == ["p×ridge"]
    assert row["specificity"]["index"] == pytest.approx(0.9, abs=0.05)
    assert res["verdict"] == "crosses, as specific as the child's own vector"
    assert res["calibration"]["random_parent"][1] == 4


def test_the_control_is_judged_by_the_candidates_rule_and_never_enters_the_verdict():
    readouts, base = _readouts(0.9)
    target = readouts["target"]
    # A control whose point value clears its placebos while its replicates scatter around 0: a false pass by the
    # point value, none by the candidates' rule; and a second control that passes by both.
    for m, point, reps in (
        ("p×truncate_pad", "p×ridge/mapped", None),
        ("q×truncate_pad", "p×ridge/mapped", 1),
    ):
        target[f"{m}/mapped"] = target[point]
        for name in [n for n in list(target) if n.startswith("p×ridge/placebo:")]:
            target[name.replace("p×ridge", m)] = target[name]
        for r in range(5):
            target[f"{m}/mapped@{r}"] = target[f"p×ridge/mapped@{r}"] * (reps or (1 - 2 * (r % 2)))
        readouts["formality"][f"{m}/mapped"] = readouts["formality"]["p×ridge/mapped"]
    maps = [("p", "ridge"), ("p", "truncate_pad"), ("q", "truncate_pad")]
    spec = InstrumentSpec(placebos=20, replicates=5, random_draws=4, lambdas=tuple(LAMS))
    res = analyze(readouts, base, maps=maps, spec=spec)
    scattered, passing = res["maps"]["p×truncate_pad"], res["maps"]["q×truncate_pad"]
    assert scattered["control"] and scattered["replicates"] == 5
    assert scattered["pipeline_ci"][0] < 0 < scattered["fidelity"] - scattered["placebo_q95"]
    assert not scattered["beats_placebo"] and passing["beats_placebo"]
    assert res["calibration"]["control"] == [1, 2] and res["calibration"]["control_point"] == [2, 2]
    # The passing control moves formality no more than the child's own vector: it passes the whole verdict too.
    assert passing["specificity"]["specific"] and res["calibration"]["control_specific"] == [1, 2]
    assert res["crosses"] == ["p×ridge"]  # the controls are never candidates


def test_a_push_that_moves_every_readout_is_named_so():
    readouts, base = _readouts(0.9, off=1.2)  # the mapped vector moves formality more than the child's own
    spec = InstrumentSpec(placebos=20, replicates=5, random_draws=4, lambdas=tuple(LAMS))
    res = analyze(readouts, base, maps=[("p", "ridge")], spec=spec)
    assert res["maps"]["p×ridge"]["specificity"]["index"] < 0
    assert res["verdict"] == "crosses, less specific than the child's own vector (a push)"


def test_no_fidelity_where_the_childs_own_vector_does_not_steer_both_ways():
    readouts, base = _readouts(0.9, native_sign=-1.0)
    spec = InstrumentSpec(placebos=20, replicates=5, random_draws=4, lambdas=tuple(LAMS))
    res = analyze(readouts, base, maps=[("p", "ridge")], spec=spec)
    assert res["reference"].startswith("undefined: the child's own vector does not raise")
    assert res["maps"] == {}
    # One sign only (breaking the child at −λ, as Qwen 0.5B's answer vector does) is undefined as well.
    delta = torch.ones(len(LAMS), 12)
    assert "does not lower" in reference_check(delta, LAMS)


# ---------------------------------------------------------------------------------------------- real path
def test_a_stack_reads_as_each_vector_alone(child_and_widened_parent):  # noqa: F811
    child = child_and_widened_parent[0]
    readout = AnswerLogOdds(_concept().probes[:3])
    g = torch.Generator().manual_seed(0)
    stack = torch.randn(3, 3, child.cfg.d_model, generator=g) * 4
    together = readout.read_stack(child, stack, LAMS, layers=[1, 2], batch_size=7)
    for i in range(3):
        alone = readout(child, SteeringVectors(stack[i], "tiny-child", "x", (1, 2)), LAMS)
        torch.testing.assert_close(together[i], alone, atol=2e-4, rtol=1e-4)


def test_the_instrument_carries_a_concept_whole_through_an_exact_map(child_and_widened_parent):  # noqa: F811
    """Parent = the child in a wider rotated basis: the ridge map is exact, so the mapped vector and every
    pipeline replicate carry the concept whole (fidelity 1), while its placebos carry no concept direction."""
    from xsteer.core.activations import last_token_resid

    child, parent, _ = child_and_widened_parent
    concept = _concept()
    texts = [
        f"{a} {b} {c}"
        for a in ("we", "they", "the cat", "a man")
        for b in ("saw", "met", "took", "liked", "lost")
        for c in ("a dog", "the sea", "two hats", "my book", "it")
    ]

    def acts(model):
        pos = last_token_resid(model, [p for p, _ in concept.pairs])
        neg = last_token_resid(model, [n for _, n in concept.pairs])
        return ModelActs(pos, neg, last_token_resid(model, texts))

    spec = InstrumentSpec(placebos=10, replicates=3, random_draws=2, lambdas=tuple(LAMS), n_boot=500)
    cells = build_cell(
        acts(parent),
        acts(child),
        lengths=[len(t) for t in texts],
        maps=[("greedy", "ridge")],
        layers=[1, 2],
        ids=("tiny-wide-parent", "tiny-child"),
        spec=spec,
    )
    cell = cells["target"]
    assert cell.names[:2] == ["native", "greedy×ridge/mapped"]
    torch.testing.assert_close(cell.vectors[1], cell.vectors[0], atol=2e-3, rtol=1e-3)  # the exact map
    readout = AnswerLogOdds(concept.probes)
    store: dict = {}
    reads = read_cell(
        cell,
        lambda s, lams: readout.read_stack(child, s, lams, layers=[1, 2]),
        LAMS,
        store=store,
        chunk=8,
        progress=False,
    )
    assert set(store) == set(cell.names)
    base = readout.read_stack(child, cell.vectors[:1], [0.0], layers=[1, 2])[0, 0]
    if signed_effect(reads["native"] - base, LAMS).mean() < 0:
        # A random model's " x" vs " z" has no preferred side: orient the concept.
        reads = {n: 2 * base - r for n, r in reads.items()}
    res = analyze({"target": reads}, {"target": base}, maps=[("greedy", "ridge")], spec=spec)
    if res["reference"] != "valid":
        pytest.skip(f"the toy readout does not steer at the smallest λ here: {res['reference']}")
    row = res["maps"]["greedy×ridge"]
    assert row["fidelity"] == pytest.approx(1.0, abs=0.02)
    assert row["pipeline_ci"][0] > 0.9 and row["pipeline_ci"][1] < 1.1
    # The placebos are not the concept: the balanced flips keep none of the native direction.
    flips = [i for i, n in enumerate(cell.names) if "placebo:flip" in n]
    cos = torch.nn.functional.cosine_similarity(cell.vectors[flips][:, 1:], cell.vectors[:1, 1:], dim=-1)
    assert cos.abs().max() < 0.5, cos
    assert row["placebo"]["n"] == 10


# ---------------------------------------------------------------------------------------------- the study
@pytest.fixture(scope="module")
def two_tiny_dirs(tmp_path_factory, tiny_dir):
    from conftest import tiny_hf

    other = tmp_path_factory.mktemp("tiny-qwen2")
    hf, tok = tiny_hf("qwen2", d_model=48, n_layers=4, seed=1)
    hf.save_pretrained(other)
    tok.save_pretrained(other)
    return str(other), str(tiny_dir)


def _answer_study(child: str, shared_data, **fields) -> dict:
    """The fields of a small corrupted_answer study into ``child``: the char tokenizer of
    the tiny models gives lexicon poles no distinct first tokens."""
    return (
        dict(
            children=(child,),
            concepts=("corrupted_answer",),
            lambdas=(-0.5, 0.5),
            data_dir=str(shared_data),
            generic_texts=16,
            placebos=10,
            replicates=2,
            random_draws=1,
            n_boot=200,
        )
        | fields
    )


def _small_answer_concept(monkeypatch) -> None:
    """corrupted_answer on 8 pairs and 3 probes of the short synthetic problems (a character model reads GSM8K
    contexts as ~300 tokens)."""
    from xsteer.evaluation.fidelity import answer_concept
    from xsteer.tasks.concepts import registry

    monkeypatch.setitem(
        registry._NAMES,
        "corrupted_answer",
        registry.ConceptEntry(
            lambda name, o: answer_concept(
                n_pairs=8, n_probes=3, data_dir=o.data_dir, seed=o.seed, task="synthetic"
            )
        ),
    )


def test_a_study_resumes_after_a_kill_and_its_tables_regenerate_from_the_file(
    two_tiny_dirs, tmp_path, shared_data, monkeypatch
):
    import json

    from xsteer.app import fidelity as study
    from xsteer.app.fidelity import FidelitySpec, reanalyze, run_study
    from xsteer.evaluation import instrument
    from xsteer.evaluation.fidelity import AnswerLogOdds

    _small_answer_concept(monkeypatch)
    monkeypatch.setattr(instrument, "CHUNK", 8)
    # The tiny child's own vector does not steer its answer readout (the next test): a reference planted valid
    # makes the study read every vector, as it does on a real child.
    for module in (instrument, study):
        monkeypatch.setattr(module, "reference_check", lambda *a, **k: None)
    parent, child = two_tiny_dirs
    spec = FidelitySpec(**_answer_study(child, shared_data, parents=(parent,)))
    [path] = run_study(spec, tmp_path / "whole", log=lambda *_: None)
    doc = json.loads(path.read_text())
    assert doc["format"] == "xsteer.fidelity/2" and not list(path.parent.glob("*.partial.json"))
    names = list(doc["readouts"]["target"])
    assert "native" in names and "proportional×ridge/mapped" in names and "native@1" in names
    assert sum("placebo:" in n and "@" not in n for n in names) == 20  # 10 per map, the control included
    # 5 placebos of each kind get the 2 pipeline replicates on the candidate map, none on the control.
    assert sum("placebo:" in n and "@" in n for n in names) == 2 * 5 * 2
    assert "proportional×ridge/placebo:flip#4@1" in names and not any(
        "truncate_pad/placebo:" in n and "@" in n for n in names
    )
    lows = doc["result"]["maps"]["proportional×ridge"]
    assert len(lows["placebo_neutral_pipeline_low"]) == len(lows["placebo_flip_pipeline_low"]) == 5
    assert doc["result"]["calibration"]["placebo_cross_kind_pipeline"][1] == 10
    assert doc["spec"]["pipeline_placebos"] == 5
    # The control gets replicates too: it is judged by the candidates' rule.
    assert "proportional×truncate_pad/mapped@1" in names and "proportional×truncate_pad/mapped@2" not in names
    # The verdicts come back from the stored readouts alone (what regeneration runs).
    assert json.dumps(reanalyze(doc), sort_keys=True) == json.dumps(doc["result"], sort_keys=True)
    # Where its time went: the phases add up to its wall time (the character child reads no off-target concept).
    assert set(doc["phases"]) == {"setup", "vectors", "reference", "target"}
    assert abs(sum(doc["phases"].values()) - doc["seconds"]) < 0.3 and doc["phases"]["target"] > 0

    # Killed during its second chunk of vectors (ctrl-C), then run again: nothing lost, nothing read twice,
    # and the same file as the uninterrupted run.
    real, calls = AnswerLogOdds.read_stack, []

    def counted(self, *args, **kwargs):
        calls.append(1)
        if kill and len(calls) == 4:  # the baseline, the reference's 3 vectors, one chunk, then out
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    kill = True
    monkeypatch.setattr(AnswerLogOdds, "read_stack", counted)
    with pytest.raises(KeyboardInterrupt):
        run_study(spec, tmp_path / "cut", log=lambda *_: None)
    [partial] = (tmp_path / "cut" / "results").glob("*.partial.json")
    assert len(json.loads(partial.read_text())["readouts"]["target"]) == 1 + 3 + 8
    kill, calls[:] = False, []
    [again] = run_study(spec, tmp_path / "cut", log=lambda *_: None)
    resumed = json.loads(again.read_text())
    assert resumed["readouts"] == doc["readouts"] and resumed["result"] == doc["result"]
    assert len(calls) == -(-(len(names) - 3 - 8) // 8)  # only the chunks not read before
    assert not partial.exists()

    # A measurement stored before the control had replicates gets only those read, and then is the same file.
    old = {**doc, "readouts": {k: dict(v) for k, v in doc["readouts"].items()}}
    for r in range(2):
        del old["readouts"]["target"][f"proportional×truncate_pad/mapped@{r}"]
    again.write_text(json.dumps(old))
    calls[:] = []
    [again] = run_study(spec, tmp_path / "cut", log=lambda *_: None)
    supplemented = json.loads(again.read_text())
    assert len(calls) == 1  # one chunk: the two control replicates
    assert supplemented["readouts"] == doc["readouts"] and supplemented["result"] == doc["result"]

    # One stored before placebos had replicates gets only those read (3 chunks of 8 for 20), and is the same file:
    # the placebos' intervals draw from their own generator, so no other number moves.
    old = {**doc, "readouts": {k: dict(v) for k, v in doc["readouts"].items()}}
    old["spec"] = {k: v for k, v in doc["spec"].items() if k != "pipeline_placebos"}
    for n in [n for n in names if "placebo:" in n and "@" in n]:
        del old["readouts"]["target"][n]
    bare = reanalyze(old)
    assert "placebo_flip_pipeline_low" not in bare["maps"]["proportional×ridge"]
    assert {k: v for k, v in bare.items() if k not in ("maps", "calibration")} == {
        k: v for k, v in doc["result"].items() if k not in ("maps", "calibration")
    }
    again.write_text(json.dumps(old))
    calls[:] = []
    [again] = run_study(spec, tmp_path / "cut", log=lambda *_: None)
    supplemented = json.loads(again.read_text())
    assert len(calls) == 3
    assert supplemented["readouts"] == doc["readouts"] and supplemented["result"] == doc["result"]
    assert supplemented["spec"] == doc["spec"]


def test_an_undefined_reference_reads_nothing_but_the_reference(
    two_tiny_dirs, tmp_path, shared_data, monkeypatch
):
    import json

    from xsteer.app.fidelity import FidelitySpec, reanalyze, run_study
    from xsteer.evaluation.fidelity import AnswerLogOdds

    _small_answer_concept(monkeypatch)
    real, calls = AnswerLogOdds.read_stack, []

    def counted(self, model, stack, *args, **kwargs):
        calls.append(len(stack))
        return real(self, model, stack, *args, **kwargs)

    monkeypatch.setattr(AnswerLogOdds, "read_stack", counted)
    parent, child = two_tiny_dirs
    spec = FidelitySpec(**_answer_study(child, shared_data, parents=(parent,)))
    [path] = run_study(spec, tmp_path, log=lambda *_: None)
    doc = json.loads(path.read_text())
    # The tiny child's own vector does not steer its answer readout, so the baseline and the three vectors the
    # reader is shown (native, each map's mapped) are all that is read: no placebo, replicate or off-target.
    assert doc["result"]["reference"].startswith("undefined: the child's own vector does not")
    assert calls == [1, 3]
    assert list(doc["readouts"]) == ["target"]
    assert set(doc["readouts"]["target"]) == {
        "native",
        "proportional×ridge/mapped",
        "proportional×truncate_pad/mapped",
    }
    assert set(doc["result"]["curves"]) == set(doc["readouts"]["target"]) and doc["result"]["maps"] == {}
    assert set(doc["phases"]) == {"setup", "vectors", "reference"}
    assert json.dumps(reanalyze(doc), sort_keys=True) == json.dumps(doc["result"], sort_keys=True)
    # Run again: an undefined measurement lacks no replicate; nothing is read and the file stays as it is.
    calls[:] = []
    before = path.read_text()
    run_study(spec, tmp_path, log=lambda *_: None)
    assert calls == [] and path.read_text() == before


def test_a_maps_fit_texts_do_not_depend_on_the_concepts_measured_beside_it():
    from types import SimpleNamespace

    from xsteer.app.fidelity import _fit_concepts

    def names(*ns):
        return [SimpleNamespace(name=n) for n in ns]

    builtins = ("sentiment", "topic", "formality", "certainty")
    alone = [c.name for c in _fit_concepts("ab:refusal", names("ab:refusal", *builtins))]
    beside = [
        c.name
        for c in _fit_concepts("ab:refusal", names("ab:sycophancy", "ab:refusal", "certainty", *builtins[:3]))
    ]
    assert alone == beside == list(builtins)  # the other A/B sets never enter it, and the order is fixed
    assert [c.name for c in _fit_concepts("topic", names(*reversed(builtins)))] == [
        "sentiment",
        "formality",
        "certainty",
    ]


def test_the_cost_table_shows_each_files_wall_time_and_the_phases_it_recorded():
    from xsteer.app.fidelity_tables import cost_table

    def doc(concept, seconds, phases=None, reference="valid"):
        d = {
            "parent": "p",
            "child": "c",
            "concept": concept,
            "seconds": seconds,
            "result": {"reference": reference},
        }
        return d | ({"phases": phases} if phases else {})

    table = cost_table(
        [
            doc(
                "a",
                3600.0,
                {"setup": 900.0, "vectors": 0.0, "reference": 300.0, "target": 1800.0, "judge": 600.0},
            ),
            doc("b", 7200.0),  # measured before the phases were recorded
            doc("u", 360.0, {"setup": 300.0, "vectors": 0.0, "reference": 60.0}, reference="undefined: …"),
            # Measured before, completed since: its phases cover the completion only, so they are not shown.
            doc("d", 1800.0, {"setup": 5.0, "vectors": 10.0, "target": 300.0}),
        ]
    )
    assert table.startswith(
        "4 measurements, 3.6 h of wall time on this CPU (0.1 h in the ones whose reference"
    )
    # Shares over the files that recorded phases: 1200 s of set-up in 3960 s.
    assert (
        "set-up 30%, vectors 0%, reference 9%, target readout 45%, off-target readouts 0%, judge 15%."
        in table
    )
    rows = table.splitlines()[-4:]
    assert rows[0] == "| p → c | b | valid | 2.00 | — | — | — | — | — | — |"  # the longest first
    assert rows[1] == "| p → c | a | valid | 1.00 | 25% | 0% | 8% | 50% | — | 17% |"
    assert rows[2] == "| p → c | d | valid | 0.50 | — | — | — | — | — | — |"
    assert rows[3] == "| p → c | u | undefined | 0.10 | 83% | 0% | 17% | — | — | — |"
    # Once one measurement ran in another dtype, every row says which it ran in.
    mixed = cost_table([doc("a", 3600.0), doc("b", 1800.0) | {"spec": {"dtype": "bfloat16"}}])
    assert mixed.splitlines()[-4].startswith(
        "| parent → child | concept | reference | wall, h | dtype | set-up"
    )
    assert mixed.splitlines()[-2:] == [
        "| p → c | a | valid | 1.00 | float32 | — | — | — | — | — | — |",
        "| p → c | b | valid | 0.50 | bfloat16 | — | — | — | — | — | — |",
    ]


def test_a_measurement_stored_with_other_settings_is_refused_not_returned(tmp_path, monkeypatch):
    import json

    from xsteer.app import fidelity as study
    from xsteer.app.fidelity import FidelitySpec, _measured, run_pair

    monkeypatch.setattr(study, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    spec = FidelitySpec(parents=("gemma3-270m",), children=("smollm2-135m",), concepts=("sentiment",))
    path = tmp_path / "results" / "gemma3-270m__smollm2-135m__sentiment.json"
    path.parent.mkdir()
    stored = {**json.loads(json.dumps(_measured(spec))), "placebos": 20, "data_dir": "/elsewhere"}
    path.write_text(json.dumps({"spec": stored, "judged": {"x": 1}, "readouts": {"target": {}}}))
    with pytest.raises(InputError, match=r"placebos=20 \(now 50\)\); give another --out"):
        run_pair(spec, "gemma3-270m", "smollm2-135m", tmp_path)
    # The same settings (the data folder is a place, not a setting) return the stored file as it is.
    path.write_text(
        json.dumps({"spec": {**stored, "placebos": 50}, "judged": {"x": 1}, "readouts": {"target": {}}})
    )
    assert run_pair(spec, "gemma3-270m", "smollm2-135m", tmp_path) == [path]
    # A non-default norm is a setting.
    with pytest.raises(InputError, match=r"norm=None \(now 'whitened'\)"):
        run_pair(
            FidelitySpec(**{**spec.__dict__, "norm": "whitened"}), "gemma3-270m", "smollm2-135m", tmp_path
        )


def test_a_finished_measurement_is_kept_in_another_dtype_but_not_completed_in_it(tmp_path, monkeypatch):
    import json

    from xsteer.app import fidelity as study
    from xsteer.app.fidelity import FidelitySpec, _measured, run_pair

    monkeypatch.setattr(study, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    monkeypatch.delenv("XSTEER_DTYPE", raising=False)
    spec = FidelitySpec(parents=("gemma3-270m",), children=("smollm2-135m",), concepts=("sentiment",))
    fp32 = json.loads(json.dumps(_measured(spec)))
    assert "dtype" not in fp32  # the keys of every measurement made in fp32 stay as they were
    path = tmp_path / "results" / "gemma3-270m__smollm2-135m__sentiment.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"spec": fp32, "judged": {"x": 1}, "readouts": {"target": {}}}))
    monkeypatch.setenv("XSTEER_DTYPE", "bfloat16")
    assert _measured(spec)["dtype"] == "bfloat16"
    assert run_pair(spec, "gemma3-270m", "smollm2-135m", tmp_path) == [path]  # finished: kept as made
    # One that lacks its placebos' pipeline replicates is kept without them, and the log says how to add them.
    target = {"proportional×ridge/mapped": [], **{f"proportional×ridge/mapped@{r}": [] for r in range(20)}}
    path.write_text(json.dumps({"spec": fp32, "judged": {"x": 1}, "readouts": {"target": target}}))
    said: list[str] = []
    assert run_pair(spec, "gemma3-270m", "smollm2-135m", tmp_path, log=said.append) == [path]
    assert said == [
        f"{path.name}: made in float32, kept without its placebos' pipeline replicates (set "
        "XSTEER_DTYPE=float32 to add them)"
    ]
    # Adding a judge readout to it would read in bf16 beside fp32 readouts: refused, with the way out.
    path.write_text(json.dumps({"spec": fp32, "readouts": {"target": {}}}))
    judged = FidelitySpec(**{**spec.__dict__, "judge": "qwen2.5-coder-0.5b"})
    with pytest.raises(InputError, match=r"sentiment: made in float32, .* set XSTEER_DTYPE=float32"):
        run_pair(judged, "gemma3-270m", "smollm2-135m", tmp_path)


def test_bad_instrument_settings_are_one_line_before_any_model_loads(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from xsteer.app import fidelity as study
    from xsteer.app.cli import main

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded: the bad setting was not refused first")

    monkeypatch.setattr(study, "load_model", no_model)
    from xsteer.core.models import ZOO

    # A judge is loaded hours into a study, so a missing one must be refused with the rest.
    monkeypatch.setattr(
        type(ZOO["qwen2.5-coder-1.5b"]), "installed", lambda self: self.name != "qwen2.5-coder-1.5b"
    )

    for args, msg in (
        (["--placebos", "5"], "at least 10 placebos"),
        (["--replicates", "1"], "at least 2 replicates"),
        (["--lambdas", "0.02,0.04"], "one sign only"),
        (["--judge", "smollm2-135m"], "must be neither"),
        (["--judge", "qwen2.5-coder-0.5b", "--judge-placebos", "5"], "judge_placebos must be between 10"),
        (["--judge", "qwen2.5-coder-1.5b"], "the judge 'qwen2.5-coder-1.5b' is not installed"),
    ):
        res = CliRunner().invoke(
            main,
            [
                "fidelity",
                "--parent",
                "gemma3-270m",
                "--child",
                "smollm2-135m",
                "--out",
                str(tmp_path / "o"),
                *args,
            ],
        )
        assert res.exit_code != 0 and msg in res.output, res.output
        assert "Traceback" not in res.output
    monkeypatch.setenv("XSTEER_DTYPE", "bf16")
    args = ["fidelity", "--parent", "gemma3-270m", "--child", "smollm2-135m", "--out", str(tmp_path / "o")]
    res = CliRunner().invoke(main, args)
    assert res.exit_code != 0 and "XSTEER_DTYPE='bf16'" in res.output and "Traceback" not in res.output


def test_a_missing_judge_is_refused_by_the_study_itself_before_any_model_loads(tmp_path, monkeypatch):
    # The API door, which no CLI check guards: the refusal lives in run_study.
    from xsteer.app import fidelity as study
    from xsteer.core.models import ZOO

    monkeypatch.setattr(study, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    monkeypatch.setattr(type(ZOO["qwen2.5-coder-1.5b"]), "installed", lambda self: False)
    spec = study.FidelitySpec(
        parents=("gemma3-270m",), children=("smollm2-135m",), judge="qwen2.5-coder-1.5b"
    )
    with pytest.raises(InputError, match="the judge 'qwen2.5-coder-1.5b' is not installed"):
        study.run_study(spec, tmp_path / "o")
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------------- the judge readout
def test_steered_continuations_are_the_generators_text(child_and_widened_parent):  # noqa: F811
    from xsteer.core.generate import Steering, generate
    from xsteer.evaluation.judge import steered_continuations

    child = child_and_widened_parent[0]
    prompts = ["the day was", "at noon we", "by the sea it"]
    plain = steered_continuations(child, prompts, None, [], [], layers=[1], max_new_tokens=6)
    assert plain == [g.text for g in generate(child, prompts, max_new_tokens=6)]
    g = torch.Generator().manual_seed(1)
    stack = torch.randn(2, 3, child.cfg.d_model, generator=g) * 3
    lams = [0.5, -0.5, 1.0]
    steered = steered_continuations(child, prompts, stack, [1, 1, 1], lams, layers=[1, 2], max_new_tokens=6)
    sv = SteeringVectors(stack[1], "tiny-child", "x", (1, 2))
    ref = generate(child, prompts, max_new_tokens=6, steering=Steering(sv, lams, None, "all"))
    assert steered == [r.text for r in ref]
    assert steered != plain  # the push is large enough to change the text


def test_the_judge_reads_fidelity_and_fluency_from_planted_scores():
    from xsteer.evaluation.judge import judge_analysis

    g = torch.Generator().manual_seed(0)
    n = 30
    base = torch.zeros(n)

    def scored(k: float) -> torch.Tensor:
        return torch.stack([k + 0.1 * torch.randn(n, generator=g), -k + 0.1 * torch.randn(n, generator=g)])

    scores = {"native": scored(1.0), "m/mapped": scored(0.8)}
    scores |= {f"m/placebo:neutral#{i}": scored(0.05 * i) for i in range(10)}
    nll = {k: torch.full((2, n), 3.0 + (0.5 if k == "m/mapped" else 0.0)) for k in scores}
    res = judge_analysis(scores, nll, base, torch.full((n,), 3.0), maps=["m"], n_boot=500)
    row = res["maps"]["m"]
    assert res["reference"] == "valid" and row["fidelity"] == pytest.approx(0.8, abs=0.05)
    assert row["beats_placebo"] and row["placebo_q95"] < 0.5
    assert res["fluency_cost"]["m/mapped"] == pytest.approx(0.5) and res["fluency_cost"]["native"] == 0.0


@pytest.mark.parametrize("own_effect", [1.0, 0.0])
def test_the_judge_continues_placebos_only_where_its_reference_is_valid(monkeypatch, own_effect):
    # The judge's placebos are most of its cost and change nothing when its reference is undefined: they are
    # continued only after the native vector has moved the judge's score, by the rule the analysis applies.
    from types import SimpleNamespace

    import xsteer.evaluation.judge as judge_mod
    from xsteer.app.fidelity import FidelitySpec, _judge_cell
    from xsteer.evaluation.instrument import _judge
    from xsteer.tasks.concepts import load_lexicon

    names = ["native", "proportional×ridge/mapped", "proportional×truncate_pad/mapped"]
    names += [f"proportional×ridge/placebo:{k}#{i}" for k in ("neutral", "flip") for i in range(6)]
    names += ["proportional×ridge/placebo:neutral#0@0"]  # a replicate: never judged
    cell = SimpleNamespace(names=names, vectors=torch.zeros(len(names), 2, 4))
    concept = load_lexicon("sentiment")
    n = len(concept.probes)
    continued: list[str] = []

    def conts(model, prompts, stack, which, lam, **kw):
        if stack is None:
            return ["plain"] * len(prompts)
        return [f"{w}|{x:+}" for w, x in zip(which, lam, strict=True)]

    def fake_judge(model, probes, texts, poles, **kw):
        # Stage one (with the unsteered rows) stacks [native, mapped, control]: the native vector moves the
        # score by own_effect a sign; every other condition by 0.3, plus a little noise.
        g = torch.Generator().manual_seed(len(texts))
        first, out = "plain" in texts, []
        continued.extend(texts)
        for t in texts:
            w, _, lam = t.partition("|")
            k = own_effect if first and w == "0" else 0.3
            out.append(k * (1 if lam.startswith("+") else -1) if lam else 0.0)
        score = torch.tensor(out, dtype=torch.float64) + 0.01 * torch.randn(len(out), generator=g)
        return judge_mod.Judged(score=score, nll=torch.full((len(out),), 2.0))

    monkeypatch.setattr(judge_mod, "steered_continuations", conts)
    monkeypatch.setattr(judge_mod, "judge", fake_judge)
    spec = FidelitySpec(
        parents=("gemma3-270m",), children=("smollm2-135m",), judge="qwen2.5-coder-0.5b", judge_placebos=10
    )
    doc = _judge_cell(None, None, concept, cell, [1], spec)
    placebos = [n for n in doc["scores"] if "placebo" in n]
    ispec = spec.instrument()
    res = _judge(doc, {"maps": {}}, spec.maps, ispec)
    if own_effect:
        assert len(placebos) == 10 and "@" not in "".join(placebos)
        assert {p.split(":")[1].split("#")[0] for p in placebos} == {"neutral", "flip"}
        assert res["reference"] == "valid" and res["maps"]["proportional×ridge"]["placebos"]
        # Stage one (three conditions at ±λ, and the unsteered rows), then the ten placebos at ±λ.
        assert len(continued) == 3 * 2 * n + n + 10 * 2 * n
    else:
        assert placebos == [] and doc["placebos_not_read"] == res["reference"]
        assert res["reference"].startswith("undefined") and set(res["fluency_cost"]) == set(names[:3])
        assert len(continued) == 3 * 2 * n + n


def test_a_judge_that_is_the_parent_or_child_is_refused_before_any_model_loads():
    from xsteer.app.fidelity import FidelitySpec

    with pytest.raises(InputError, match="must be neither"):
        FidelitySpec(parents=("gemma3-270m",), children=("smollm2-135m",), judge="smollm2-135m")


def test_placebos_are_judged_as_concepts_by_their_interval_as_well_as_their_point():
    readouts, base = _readouts(0.9)
    target = readouts["target"]
    flips = [n for n in target if n.startswith("p×ridge/placebo:flip")]
    spec = InstrumentSpec(placebos=20, replicates=5, random_draws=4, lambdas=tuple(LAMS))
    bar = analyze(readouts, base, maps=[("p", "ridge")], spec=spec)["maps"]["p×ridge"]
    q95_flip = float(np.quantile(bar["placebo_flip"], 0.95))
    # Two neutral placebos whose fidelity is 3x the flips' 95th percentile: one on every probe alike, one on a
    # single probe of the 36 (its probe-bootstrap lower bound falls to 0); both pass by the point value.
    k = 3 * q95_flip
    step = k * float(signed_effect(target["native"], LAMS).mean()) * torch.sign(torch.tensor(LAMS))[:, None]
    lone = torch.zeros(1, 36)
    lone[0, 0] = 36.0
    target["p×ridge/placebo:neutral#0"] = step * torch.ones(1, 36)
    target["p×ridge/placebo:neutral#1"] = step * lone
    res = analyze(readouts, base, maps=[("p", "ridge")], spec=spec)
    row = res["maps"]["p×ridge"]
    assert row["placebo_neutral"][0] == pytest.approx(k, rel=1e-5)
    assert row["placebo_neutral"][1] == pytest.approx(k, rel=1e-5)
    assert row["placebo_neutral_low"][1] < q95_flip < row["placebo_neutral_low"][0]
    assert len(row["placebo_flip_low"]) == len(flips) == 10
    point, by_ci = res["calibration"]["placebo_cross_kind"], res["calibration"]["placebo_cross_kind_ci"]
    assert point[1] == by_ci[1] == 20
    # The planted two pass by their points, the lone-probe one not by its interval; no other placebo passes.
    assert point == [2, 20] and by_ci == [1, 20]
    assert res["calibration"]["placebo_cross_kind_pipeline"] == [0, 0]  # no placebo has replicates yet

    # Replicates for the first placebo of each kind, as a candidate has: neutral#0's agree with its point (it
    # passes by the candidates' rule too), flip#10's alternate in sign (its whole-pipeline interval spans 0).
    for r in range(5):
        target[f"p×ridge/placebo:neutral#0@{r}"] = target["p×ridge/placebo:neutral#0"]
        target[f"p×ridge/placebo:flip#10@{r}"] = (1 - 2 * (r % 2)) * step * torch.ones(1, 36)
    target["p×ridge/placebo:neutral#1@0"] = target["p×ridge/placebo:neutral#1"]  # 1 of 5: not counted
    again = analyze(readouts, base, maps=[("p", "ridge")], spec=spec)
    row = again["maps"]["p×ridge"]
    assert len(row["placebo_neutral_pipeline_low"]) == len(row["placebo_flip_pipeline_low"]) == 1
    assert row["placebo_neutral_pipeline_low"][0] > row["placebo_neutral_low"][0] * 0.9
    assert row["placebo_flip_pipeline_low"][0] < 0
    assert again["calibration"]["placebo_cross_kind_pipeline"] == [1, 2]
    # Replicates are no placebos of their own: every other number stays as it was.
    assert again["maps"]["p×ridge"]["placebo"] == res["maps"]["p×ridge"]["placebo"]
    assert again["maps"]["p×ridge"]["pipeline_ci"] == res["maps"]["p×ridge"]["pipeline_ci"]


def test_the_study_says_how_often_the_pipeline_interval_starts_below_the_probe_only_one():
    from xsteer.app.fidelity_tables import interval_order

    def doc(*rows):
        return {"result": {"maps": {f"m{i}": r for i, r in enumerate(rows)}}}

    wider = {"pipeline_ci": [0.30, 0.99], "probe_ci": [0.52, 0.61]}
    above = {"pipeline_ci": [0.46, 0.82], "probe_ci": [0.39, 0.47]}
    tied = {"pipeline_ci": [0.1, 0.2], "probe_ci": [0.1, 0.3]}
    bare = {"probe_ci": [0.1, 0.3]}  # a control measured before controls had replicates: not counted
    assert interval_order([doc(wider, above), doc(tied, bare), {"result": {"reference": "undefined"}}]) == (
        "The whole-pipeline interval's lower end lies at or below the probe-only one in 2 of 3 map rows "
        "(mapped concept vectors, candidates and controls)."
    )


def test_the_study_says_where_the_candidates_rule_is_shown_under_five_percent():
    from xsteer.app.fidelity_tables import target_line

    def doc(child, k, n):
        return {"child": child, "result": {"calibration": {"placebo_cross_kind_pipeline": [k, n]}}}

    # 0 of 80: Wilson upper end 4.6% (the table rounds it to 5%); 0 of 72 is the last count whose upper end is
    # not under 5% (5.1%); 10 of 100 has its lower end above it (5.5%).
    docs = [
        doc("s", 0, 40),
        doc("s", 0, 40),
        doc("g", 0, 72),
        doc("q", 10, 100),
        doc("z", 0, 0),
        doc("h", 1, 9),
    ]
    assert target_line(docs) == (
        "The ≤ 5% false-pass target, by exactly the candidates' rule (the placebos given pipeline replicates), is "
        "shown met on s (0 of 80, Wilson interval [0.0%, 4.6%]); it is shown missed on q (10 of 100, Wilson "
        "interval [5.5%, 17.4%]); it is not yet shown either way on g (0 of 72, Wilson interval [0.0%, 5.1%]) and "
        "h (1 of 9, Wilson interval [2.0%, 43.5%])."
    )
    assert target_line([doc("s", 0, 0)]).startswith("No placebo has had pipeline replicates yet")


def test_the_placebos_given_replicates_are_counted_by_both_intervals():
    """The same placebos against the same bar (the other kind's 95th percentile), by their probe-only lower bound
    too: the placebos given replicates are the first of each kind, so their bounds lead each kind's list."""
    from xsteer.app.fidelity_tables import calibration_counts, calibration_table
    from xsteer.evaluation.instrument import replicated_probe_only

    row = {
        "placebo_q95": 0.5,
        "placebo_neutral": [0.0, 0.1, 0.2, 0.3, 0.4],  # 95th percentile 0.38: the flips' bar
        "placebo_flip": [0.0, 0.0, 0.0, 0.0, 1.0],  # 95th percentile 0.8: the neutral pairings' bar
        "placebo_neutral_low": [0.9, 0.1, 0.85, 0.0, 0.95],  # given replicates: 0.9 passes, 0.1 does not
        "placebo_flip_low": [0.5, 0.3, 0.9, 0.9, 0.9],  # given replicates: 0.5 passes, 0.3 does not
        "placebo_neutral_pipeline_low": [0.2, 0.0],
        "placebo_flip_pipeline_low": [0.1, -0.3],
    }
    assert replicated_probe_only(row) == (2, 4)
    assert replicated_probe_only({**row, "placebo_flip_pipeline_low": []}) == (1, 2)
    assert replicated_probe_only({k: v for k, v in row.items() if "pipeline" not in k}) == (0, 0)
    doc = {
        "child": "s",
        "result": {
            "calibration": {"placebo_cross_kind_pipeline": [0, 4]},
            "maps": {"m": row, "n": {"note": "the map feeds no steered layer"}},
        },
    }
    counts = calibration_counts([doc, doc])
    assert counts == {"s": {"placebo_cross_kind_pipeline": [0, 8], "placebo_replicated_ci": [4, 8]}}
    assert calibration_table([doc, doc]).splitlines()[-1] == (
        "| s | the same placebos given replicates, by their probe-only CI lower bound instead (what the "
        "whole-pipeline interval changes) | 4 of 8 | 50% [22%, 78%] |"
    )
