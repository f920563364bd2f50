"""Real pretrained weights from the offline zoo. SmolLM2 (93 MB) runs in the default suite when installed;
Gemma and the 64-pair extractions are marked slow (`pytest -m slow`)."""

import pytest
import torch
from conftest import zoo_model

from xsteer.core.activations import last_token_resid
from xsteer.core.generate import Steering, generate
from xsteer.core.inject import steer
from xsteer.core.models import encode
from xsteer.extraction.extract import extract
from xsteer.extraction.pairs import build_pairs
from xsteer.tasks.data import load_examples
from xsteer.tasks.prompts import render

QUESTIONS = [
    "What is the capital of France?",
    "Tom has 3 apples and buys 5 more. How many apples does he have?",
]


def chat(model, q):
    return render(model.tokenizer, [{"role": "user", "content": q}])


def test_smollm2_bridge_matches_hf(smollm2):
    """The bridge's resid_post is HF's hidden state (raw basis, no folding) and left padding is harmless."""
    texts = [chat(smollm2, q) for q in QUESTIONS]
    acts = last_token_resid(smollm2, texts, batch_size=2)
    hf = smollm2.original_model
    for i, t in enumerate(texts):
        # encode(), not the tokenizer directly: TransformerLens makes the tokenizer add BOS, and the chat
        # template writes one too (<|im_start|> is SmolLM2's BOS); encode() keeps exactly one.
        ids = encode(smollm2.tokenizer, [t]).input_ids
        assert (ids == smollm2.tokenizer.bos_token_id).sum() == t.count("<|im_start|>")
        with torch.inference_mode():
            hs = hf(ids, output_hidden_states=True).hidden_states
        # hidden_states[l + 1] is block l's output, except the last one, which HF takes after the final norm.
        torch.testing.assert_close(acts[i, 10], hs[11][0, -1], atol=2e-3, rtol=1e-3)


def test_smollm2_generation_batched_equals_unbatched(smollm2):
    prompts = [chat(smollm2, q) for q in QUESTIONS + ["Name a colour."]]
    batched = generate(smollm2, prompts, max_new_tokens=24)
    alone = [generate(smollm2, [p], max_new_tokens=24)[0] for p in prompts]
    assert [g.text for g in batched] == [g.text for g in alone]
    assert "Paris" in batched[0].text


def test_smollm2_own_vectors_lambda_zero_identical_large_lambda_changes(smollm2, shared_data):
    train = load_examples("gsm8k", "train", data_dir=shared_data)[:16]
    pairs = build_pairs("corrupted_answer", train, smollm2.tokenizer, task="gsm8k")
    sv = extract(smollm2, pairs, progress=False)
    assert sv.n_layers == 30 and sv.d_model == 576
    prompts = [chat(smollm2, q) for q in QUESTIONS]
    plain = generate(smollm2, prompts, max_new_tokens=24)
    zero = generate(smollm2, prompts, max_new_tokens=24, steering=Steering(sv, 0.0))
    assert [g.text for g in zero] == [g.text for g in plain]
    big = generate(smollm2, prompts, max_new_tokens=24, steering=Steering(sv, 40.0))
    assert all(b.text != p.text for b, p in zip(big, plain, strict=True))
    # Steer where it shows inside the block, so a hook left behind after it would show after it too.
    with steer(smollm2, sv, lam=40.0):
        inside = generate(smollm2, prompts, max_new_tokens=24)
    assert all(i.text != p.text for i, p in zip(inside, plain, strict=True))
    assert [g.text for g in generate(smollm2, prompts, max_new_tokens=24)] == [g.text for g in plain]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2-135m", "gemma3-270m"])
def test_extract_64_gsm8k_pairs(name, shared_data):
    model = zoo_model(name)
    train = load_examples("gsm8k", "train", data_dir=shared_data)[:64]
    pairs = build_pairs("corrupted_answer", train, model.tokenizer, task="gsm8k")
    sv = extract(model, pairs, progress=False)
    assert sv.n_layers == model.cfg.n_layers and sv.extra["n_pairs"] == 64
    # The pairs differ only in their final answer tokens: late layers must separate them on the training pairs.
    late = [
        sv.layer_stats[layer]["separation"] for layer in range(model.cfg.n_layers // 2, model.cfg.n_layers)
    ]
    assert max(late) >= 0.9
    assert torch.isfinite(sv.vectors).all()


@pytest.mark.slow
def test_smollm2_evaluate_end_to_end(smollm2, shared_data, tmp_path):
    """8 GSM8K validation items x 3 λ -> records, λ*, ITS and CIs, through the real child."""
    from xsteer.evaluation.evaluate import EvalConfig, Evaluator
    from xsteer.evaluation.records import RecordStore
    from xsteer.evaluation.summary import summarize

    train = load_examples("gsm8k", "train", data_dir=shared_data)[:16]
    sv = extract(
        smollm2, build_pairs("corrupted_answer", train, smollm2.tokenizer, task="gsm8k"), progress=False
    )
    norms = last_token_resid(
        smollm2, [p.positive for p in build_pairs("corrupted_answer", train, smollm2.tokenizer, task="gsm8k")]
    )
    sv = sv.scaled_to(norms.norm(dim=-1).mean(0), "resid_mean")
    cfg = EvalConfig(dataset="gsm8k", lambdas=(0.0, 0.05, 0.2), max_new_tokens=96, positions="generated")
    ev = Evaluator(
        smollm2,
        cfg,
        RecordStore(tmp_path / "records.jsonl"),
        {"baseline": None, "native": sv},
        batch_size=24,
        progress=False,
    )
    lam_star = ev.tune(load_examples("gsm8k", "validation", data_dir=shared_data, limit=8), ["native"])
    ev.test(
        load_examples("gsm8k", "test", data_dir=shared_data, limit=8),
        ["native"],
        lambda_star=lam_star,
        self_consistency=False,
    )
    recs = ev.store.load(ev.config_hash)
    assert len([r for r in recs if r["split"] == "validation"]) == 24
    assert lam_star["native"] in cfg.lambdas
    s = summarize(recs, lam_star, n_boot=500)
    names = [r["condition"] for r in s["rows"]]
    assert names == ["baseline", "native@λ*", "native+ITS"]
    assert all(r["ci"][0] <= r["acc"] <= r["ci"][1] for r in s["rows"])
    # λ = 0 reproduces the baseline exactly; the largest λ changes some completions.
    base = {r["item"]: r["completion"] for r in recs if r["condition"] == "baseline"}
    test = [r for r in recs if r["split"] == "test" and r["condition"] == "native"]
    assert all(r["completion"] == base[r["item"]] for r in test if r["lam"] == 0.0)
    assert any(r["completion"] != base[r["item"]] for r in test if r["lam"] == 0.2)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2-135m", "gemma3-270m", "qwen2.5-coder-0.5b", "qwen2.5-coder-1.5b"])
def test_every_installed_zoo_model_loads_and_runs(name):
    """#15.0: each zoo model the set-up installs (XSTEER_ZOO=full for the Qwen pair) loads, with its whole
    sha256 checked, and predicts a sensible next token (a plain Question/Answer prompt: the Qwen coder continues
    "The capital of France is" with " the capital of …")."""
    from xsteer.core.models import ZOO

    model = zoo_model(name)  # skips when the package is not installed
    assert (model.cfg.n_layers, model.cfg.d_model) == (ZOO[name].n_layers, ZOO[name].d_model)
    ids = encode(model.tokenizer, ["Question: What is the capital of France?\nAnswer:"]).input_ids
    with torch.inference_mode():
        logits = model(ids, return_type="logits")[0, -1]
    assert torch.isfinite(logits).all()
    top5 = [model.tokenizer.decode(t).strip() for t in logits.topk(5).indices]
    assert "Paris" in top5, top5
