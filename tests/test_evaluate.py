import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from xsteer.core.vectors import SteeringVectors
from xsteer.evaluation.evaluate import PAPER_GRID, EvalConfig, Evaluator
from xsteer.evaluation.records import RecordStore
from xsteer.evaluation.summary import BASELINE, SELF_CONSISTENCY, best_lambda, summarize, vote_correct
from xsteer.tasks.data import Example, load_examples


def vectors_for(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(model.cfg.n_layers, model.cfg.d_model, generator=g)
    return SteeringVectors(
        v / v.norm(dim=-1, keepdim=True), model.cfg.model_name, "random", tuple(range(model.cfg.n_layers))
    )


def test_paper_grid():
    assert len(PAPER_GRID) == 19 and PAPER_GRID[0] == 0.01 and PAPER_GRID[8] == 0.09 and PAPER_GRID[-1] == 1.0


@pytest.mark.parametrize("bad", [(), (0.1, float("nan")), (float("inf"),)])
def test_bad_grids_rejected(bad):
    with pytest.raises(ValueError, match="λ grid"):
        EvalConfig(dataset="gsm8k", lambdas=bad)


def test_best_lambda_ties_go_to_smallest():
    recs = [
        {"split": "validation", "item": str(i), "condition": "p", "lam": lam, "sample": 0, "correct": c}
        for i, (lam, c) in enumerate([(0.5, True), (0.1, True), (0.3, False)])
    ]
    assert best_lambda(recs, "validation", "p") == 0.1


def test_vote_correct_ignores_invalid_and_breaks_ties_by_lambda():
    rows = [
        {"lam": 0.2, "sample": 0, "answer": "5", "correct": False},
        {"lam": 0.1, "sample": 0, "answer": "7", "correct": True},
        {"lam": 0.3, "sample": 0, "answer": None, "correct": False},
        {"lam": 0.4, "sample": 0, "answer": None, "correct": False},
    ]
    assert vote_correct(rows)  # "7" and "5" tie 1:1; 7 came at the smaller λ; None never wins
    assert not vote_correct([{"lam": 0.1, "sample": 0, "answer": None, "correct": False}])


def test_torn_last_line_is_dropped(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text('{"a": 1, "config": "h"}\n{"a": 2, "conf')
    store = RecordStore(path)
    assert store.load() == [{"a": 1, "config": "h"}]
    store.append([{"a": 3, "config": "h"}])
    assert [r["a"] for r in store.load("h")] == [1, 3]


def test_tune_test_summarize_on_tiny_model(tiny, tmp_path):
    val = load_examples("synthetic", "validation", limit=3)
    test = load_examples("synthetic", "test", limit=4)
    cfg = EvalConfig(dataset="synthetic", shots=1, lambdas=(0.0, 4.0), max_new_tokens=6)
    sv = vectors_for(tiny)
    conds = {BASELINE: None, "parent": sv, "random": sv.random_like(1)}
    ev = Evaluator(tiny, cfg, RecordStore(tmp_path / "r.jsonl"), conds, batch_size=4, progress=False)
    lam_star = ev.tune(val, ["parent", "random"])
    assert set(lam_star) == {"parent", "random"} and all(v in (0.0, 4.0) for v in lam_star.values())
    ev.test(test, ["parent", "random"], lambda_star=lam_star)
    recs = ev.store.load(ev.config_hash)
    # baseline 4 + 2 conditions x 4 items x 2 λ + self-consistency 4 items x 2 samples (+ validation 2x3x2)
    assert len([r for r in recs if r["split"] == "test"]) == 4 + 16 + 8
    assert len([r for r in recs if r["split"] == "validation"]) == 12
    # λ = 0 is the unsteered model: its completions equal the baseline's.
    base = {r["item"]: r["completion"] for r in recs if r["condition"] == BASELINE}
    assert all(
        r["completion"] == base[r["item"]]
        for r in recs
        if r["split"] == "test" and r["condition"] == "parent" and r["lam"] == 0.0
    )
    s = summarize(recs, lam_star, n_boot=200)
    names = [r["condition"] for r in s["rows"]]
    assert (
        names[0] == BASELINE and "parent@λ*" in names and "parent+ITS" in names and SELF_CONSISTENCY in names
    )
    assert all(0 <= r["acc"] <= 1 and r["ci"][0] <= r["acc"] <= r["ci"][1] for r in s["rows"])
    n_before = len(recs)
    ev.test(test, ["parent", "random"], lambda_star=lam_star)  # a rerun finds everything done
    assert len(ev.store.load()) == n_before


def test_adding_a_condition_reuses_the_others_records(tiny, tmp_path):
    """Records are hashed per condition: a second parent added to a study runs only its own rows, and a
    condition whose vectors changed reruns (its old rows are not read as its new ones)."""
    test = load_examples("synthetic", "test", limit=3)
    cfg = EvalConfig(dataset="synthetic", shots=1, lambdas=(0.0, 2.0), max_new_tokens=4)
    store = RecordStore(tmp_path / "r.jsonl")
    a, b = vectors_for(tiny, 0), vectors_for(tiny, 1)
    Evaluator(tiny, cfg, store, {BASELINE: None, "a": a}, batch_size=4, progress=False).test(test, ["a"])
    first = len(store.load())
    assert first == 3 + 3 * 2 + 3 * 2  # baseline, a over the grid, self-consistency

    ev = Evaluator(tiny, cfg, store, {BASELINE: None, "b": b, "a": a}, batch_size=4, progress=False)
    ev.test(test, ["b", "a"])
    assert len(store.load()) == first + 3 * 2  # only b's rows are new
    assert len(store.load(ev.config_hash)) == first + 3 * 2

    changed = Evaluator(tiny, cfg, store, {BASELINE: None, "a": a * 2.0}, batch_size=4, progress=False)
    assert changed.config_hash["a"] != ev.config_hash["a"]
    assert changed.config_hash[BASELINE] == ev.config_hash[BASELINE]
    changed.test(test, ["a"], self_consistency=False)
    assert len(store.load()) == first + 3 * 2 + 3 * 2  # a reran under its new vectors, nothing else did
    assert len([r for r in store.load(changed.config_hash) if r["condition"] == "a"]) == 3 * 2


def test_summary_counts_this_runs_items_only(tiny, tmp_path):
    """A store reused with fewer test items keeps the others' rows; the summary reads this run's items."""
    test = load_examples("synthetic", "test", limit=4)
    cfg = EvalConfig(dataset="synthetic", shots=1, lambdas=(0.0, 2.0), max_new_tokens=4)
    ev = Evaluator(
        tiny,
        cfg,
        RecordStore(tmp_path / "r.jsonl"),
        {BASELINE: None, "a": vectors_for(tiny)},
        batch_size=4,
        progress=False,
    )
    assert ev.run_and_summarize([], test, ["a"])["summaries"]["correct"]["n_items"] == 4
    doc = ev.run_and_summarize([], test[:2], ["a"])
    assert doc["summaries"]["correct"]["n_items"] == 2
    assert doc["items"] == {"validation": [], "test": [ex.id for ex in test[:2]]}
    assert {r["condition"] for r in doc["summaries"]["correct"]["rows"]} >= {
        BASELINE,
        "a+ITS",
        SELF_CONSISTENCY,
    }


def test_loglik_mode(tiny, tmp_path):
    items = [
        Example(
            id=f"q{i}",
            question=f"Which is {i}?",
            answer="B",
            choices=("one", "two", "three"),
            labels=("A", "B", "C"),
        )
        for i in range(3)
    ]
    cfg = EvalConfig(dataset="arc_challenge", mode="loglik", lambdas=(0.0, 2.0))
    sv = vectors_for(tiny)
    ev = Evaluator(
        tiny, cfg, RecordStore(tmp_path / "r.jsonl"), {BASELINE: None, "p": sv}, batch_size=4, progress=False
    )
    ev.test(items, ["p"], self_consistency=False)
    recs = ev.store.load()
    assert len(recs) == 3 + 6 and all(len(r["logprobs"]) == 3 for r in recs)
    base = {r["item"]: r["logprobs"] for r in recs if r["condition"] == BASELINE}
    for r in recs:
        if r["condition"] == "p" and r["lam"] == 0.0:
            assert r["logprobs"] == pytest.approx(base[r["item"]], abs=1e-4)


def test_loglik_matches_a_direct_computation(tiny):
    from xsteer.core.likelihood import continuation_logprobs

    ctx, cont = "Question: x\nAnswer:", " yes"
    [lp] = continuation_logprobs(tiny, [ctx], [cont])
    tok = tiny.tokenizer
    c, k = tok(ctx).input_ids, tok(cont, add_special_tokens=False).input_ids
    ids = torch.tensor([c + k])
    with torch.inference_mode():
        logp = torch.log_softmax(tiny(ids).float(), -1)[0]
    direct = sum(float(logp[len(c) + j - 1, t]) for j, t in enumerate(k))
    assert lp == pytest.approx(direct, abs=1e-4)
    # Padding does not change it.
    lps = continuation_logprobs(tiny, [ctx, "a much longer context here\nAnswer:"], [cont, " no"])
    assert lps[0] == pytest.approx(lp, abs=1e-4)


RUN = textwrap.dedent("""
    import sys, torch
    from xsteer.tasks.data import load_examples
    from xsteer.evaluation.evaluate import EvalConfig, Evaluator
    from xsteer.evaluation.records import RecordStore
    from xsteer.core.models import load_model
    from xsteer.core.vectors import SteeringVectors
    model = load_model(sys.argv[1], device="cpu")
    g = torch.Generator().manual_seed(0)
    v = torch.randn(model.cfg.n_layers, model.cfg.d_model, generator=g)
    sv = SteeringVectors(v, model.cfg.model_name, "random", tuple(range(model.cfg.n_layers)))
    cfg = EvalConfig(dataset="synthetic", shots=1, lambdas=(0.0, 1.0, 3.0), max_new_tokens=8)
    ev = Evaluator(model, cfg, RecordStore(sys.argv[2]), {"baseline": None, "p": sv}, batch_size=3, progress=False)
    ev.test(load_examples("synthetic", "test", limit=12), ["p"], self_consistency=False)
""")


def test_killed_run_resumes_to_the_same_records(tmp_path):
    from conftest import tiny_hf

    hf, tok = tiny_hf("llama", d_model=32, n_layers=2)
    model_dir = tmp_path / "tiny"
    hf.save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    full = tmp_path / "full.jsonl"
    subprocess.run([sys.executable, "-c", RUN, str(model_dir), str(full)], check=True, env=env)
    killed = tmp_path / "killed.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", RUN, str(model_dir), str(killed)], env=env)
    deadline = time.time() + 120
    while time.time() < deadline and (not killed.exists() or killed.stat().st_size == 0):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = len(killed.read_text().splitlines()) if killed.exists() else 0
    subprocess.run([sys.executable, "-c", RUN, str(model_dir), str(killed)], check=True, env=env)

    def table(p):
        recs = [json.loads(line) for line in p.read_text().splitlines()]
        return sorted((r["item"], r["condition"], r["lam"], r["completion"], r["correct"]) for r in recs)

    assert partial < len(table(full))  # it really was interrupted
    assert table(killed) == table(full)  # and the resumed file has exactly the same records, no duplicates


def test_shared_context_loglik_equals_row_by_row(tiny):
    """Choices of one item share the context's prefill; the result equals scoring each row alone."""
    from xsteer.core.generate import Steering
    from xsteer.core.likelihood import continuation_logprobs

    sv = vectors_for(tiny)
    ctxs = ["Question: a?\nAnswer:"] * 3 + ["Question: a much longer one?\nAnswer:"] * 2 + ["Q: z\nA:"]
    conts = [" yes", " no", " maybe not", " 12", " 3", " x"]
    lams = [0.0, 0.0, 0.0, 2.0, 2.0, 1.0]
    grouped = continuation_logprobs(tiny, ctxs, conts, steering=Steering(sv, lams), batch_size=4)
    alone = [
        continuation_logprobs(tiny, [c], [k], steering=Steering(sv, lam))[0]
        for c, k, lam in zip(ctxs, conts, lams, strict=True)
    ]
    assert grouped == pytest.approx(alone, abs=1e-3)


def test_each_metric_votes_over_its_own_answer():
    """acc and acc_norm pick different choices: the acc_norm vote must count acc_norm's answers."""
    rows = [
        {
            "lam": lam,
            "sample": 0,
            "answer": "A",
            "correct": False,
            "answer_norm": norm,
            "correct_norm": norm == "B",
        }
        for lam, norm in [(0.1, "C"), (0.2, "C"), (0.3, "B")]
    ]
    assert not vote_correct(rows, "correct")
    assert not vote_correct(rows, "correct_norm")  # C wins the acc_norm vote, and C is wrong
    rows[0]["answer_norm"], rows[0]["correct_norm"] = "B", True
    assert vote_correct(rows, "correct_norm")


def test_self_consistency_samples_differ(tiny, tmp_path):
    """The vote is only a vote if its samples are drawn: a sampler that fell back to greedy (or reused one
    seed) would give k copies of the baseline and the condition would measure nothing."""
    cfg = EvalConfig(dataset="synthetic", lambdas=(0.1, 0.2, 0.3, 0.4, 0.5), shots=0, max_new_tokens=12)
    ev = Evaluator(
        tiny, cfg, RecordStore(tmp_path / "r.jsonl"), {BASELINE: None}, batch_size=8, progress=False
    )
    items = load_examples("synthetic", "test", limit=2)
    ev.test(items, [], self_consistency=True)
    recs = [r for r in ev.store.load() if r["condition"] == SELF_CONSISTENCY]
    assert len(recs) == 2 * 5
    for item in {r["item"] for r in recs}:
        samples = [r["completion"] for r in recs if r["item"] == item]
        assert len(samples) == 5 and len(set(samples)) > 1, samples
