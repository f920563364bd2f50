"""Real pretrained weights from the offline zoo. SmolLM2 (93 MB) runs in the default suite when installed;
Gemma and the 64-pair extractions are marked slow (`pytest -m slow`)."""

import pytest
import torch
from conftest import zoo_model

from xsteer.data import load_examples
from xsteer.extract import extract, last_token_resid
from xsteer.generate import Steering, generate
from xsteer.inject import steer
from xsteer.pairs import build_pairs
from xsteer.prompts import render

QUESTIONS = ["What is the capital of France?", "Tom has 3 apples and buys 5 more. How many apples does he have?"]


def chat(model, q):
    return render(model.tokenizer, [{"role": "user", "content": q}])


def test_smollm2_bridge_matches_hf(smollm2):
    """The bridge's resid_post is HF's hidden state (raw basis, no folding) and left padding is harmless."""
    texts = [chat(smollm2, q) for q in QUESTIONS]
    acts = last_token_resid(smollm2, texts, batch_size=2)
    hf = smollm2.original_model
    for i, t in enumerate(texts):
        ids = smollm2.tokenizer(t, return_tensors="pt").input_ids
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
    pairs = build_pairs("corrupted_answer", train, smollm2.tokenizer, dataset="gsm8k")
    sv = extract(smollm2, pairs, progress=False)
    assert sv.n_layers == 30 and sv.d_model == 576
    prompts = [chat(smollm2, q) for q in QUESTIONS]
    plain = generate(smollm2, prompts, max_new_tokens=24)
    zero = generate(smollm2, prompts, max_new_tokens=24, steering=Steering(sv, 0.0))
    assert [g.text for g in zero] == [g.text for g in plain]
    big = generate(smollm2, prompts, max_new_tokens=24, steering=Steering(sv, 40.0))
    assert all(b.text != p.text for b, p in zip(big, plain, strict=True))
    with steer(smollm2, sv, lam=0.0):
        pass  # hooks are gone again
    assert [g.text for g in generate(smollm2, prompts, max_new_tokens=24)] == [g.text for g in plain]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2-135m", "gemma3-270m"])
def test_extract_64_gsm8k_pairs(name, shared_data):
    model = zoo_model(name)
    train = load_examples("gsm8k", "train", data_dir=shared_data)[:64]
    pairs = build_pairs("corrupted_answer", train, model.tokenizer, dataset="gsm8k")
    sv = extract(model, pairs, progress=False)
    assert sv.n_layers == model.cfg.n_layers and sv.extra["n_pairs"] == 64
    # The pairs differ only in their final answer tokens: late layers must separate them on the training pairs.
    late = [sv.layer_stats[layer]["separation"] for layer in range(model.cfg.n_layers // 2, model.cfg.n_layers)]
    assert max(late) >= 0.9
    assert torch.isfinite(sv.vectors).all()
