"""The static KV cache (written in place, shared prefixes stored once) gives the dynamic cache's text, token for token."""

import warnings

import pytest
import torch
from conftest import char_tokenizer, zoo_model  # noqa: F401  (zoo_model: see test_smollm2_*)
from test_inject import FEW_SHOT, PROMPTS, random_vectors

import xsteer.core.generate as gen
from xsteer.core import kvcache
from xsteer.core.generate import Steering, auto_batch_size, generate

QUESTIONS = ["Q: 1+1\nA:", "Q: what is a much longer one\nA:", "Q: x\nA:"]
LAMS = [0.0, 0.5, 3.0]


def grid(prompts, lams=LAMS):
    """Item-major rows of a λ grid, as the evaluator builds them."""
    return [p for p in prompts for _ in lams], [lam for _ in prompts for lam in lams]


def run(model, prompts, steering=None, **kw):
    kw.setdefault("max_new_tokens", 10)
    return [(g.text, g.n_tokens, g.finish) for g in generate(model, prompts, steering=steering, **kw)]


def both(model, prompts, steering=None, **kw):
    static = run(model, prompts, steering, cache="static", **kw)
    dynamic = run(model, prompts, steering, cache="dynamic", **kw)
    assert static == dynamic
    return static


@pytest.mark.parametrize("positions", ["all", "generated", None])
@pytest.mark.parametrize("few_shot", [True, False])
def test_static_equals_dynamic(tiny, positions, few_shot):
    prompts = [FEW_SHOT + q for q in QUESTIONS] if few_shot else PROMPTS
    rows, lams = grid(prompts)
    steering = None if positions is None else Steering(random_vectors(tiny), lams, positions=positions)
    out = both(tiny, rows, steering)
    if steering is not None:  # the grid really steers: λ = 3 changes some completion
        assert any(out[k][0] != out[k + 2][0] for k in range(0, len(rows), 3))


def test_static_equals_one_prompt_alone(tiny):
    rows, lams = grid([FEW_SHOT + q for q in QUESTIONS])
    sv = random_vectors(tiny)
    batched = run(tiny, rows, Steering(sv, lams, positions="generated"))
    for k in (1, 5, 8):
        assert run(tiny, [rows[k]], Steering(sv, lams[k], positions="generated"))[0] == batched[k]


@pytest.fixture
def frequent_eos(tiny, monkeypatch):
    """Make two frequent characters end generation too, so that rows finish at different steps."""
    free = run(tiny, [FEW_SHOT + q for q in QUESTIONS] + PROMPTS, max_new_tokens=12)
    chars = [c for text, _, _ in free for c in text[3:6]]
    ends = sorted(set(chars), key=chars.count)[-2:]
    ids = [tiny.tokenizer.convert_tokens_to_ids(c) for c in ends]
    monkeypatch.setattr(
        tiny.original_model.generation_config, "eos_token_id", [tiny.tokenizer.eos_token_id, *ids]
    )
    return ends


@pytest.mark.parametrize("compact_at", [0.0, 0.25, 1.0])  # compact at every departure / sometimes / never
@pytest.mark.parametrize("positions", ["all", "generated"])
def test_rows_finishing_at_different_steps(tiny, frequent_eos, monkeypatch, compact_at, positions):
    monkeypatch.setattr(kvcache, "COMPACT_AT", compact_at)
    rows, lams = grid([FEW_SHOT + q for q in QUESTIONS] + PROMPTS[:2])
    out = both(
        tiny, rows, Steering(random_vectors(tiny), lams, positions=positions), max_new_tokens=16, stop=["Q"]
    )
    steps = {n for _, n, finish in out if finish != "length"}
    assert len(steps) >= 3 and any(f == "eos" for _, _, f in out)  # rows really left at different steps


@pytest.mark.parametrize("sync_every", [2, 5])
def test_sync_every_k_steps_gives_the_same_text(tiny, frequent_eos, sync_every):
    rows, lams = grid([FEW_SHOT + q for q in QUESTIONS])
    steering = Steering(random_vectors(tiny), lams, positions="generated")
    want = run(tiny, rows, steering, max_new_tokens=16, stop=["Q"])
    assert run(tiny, rows, steering, max_new_tokens=16, stop=["Q"], sync_every=sync_every) == want


def test_sampling_with_seeds(tiny):
    rows, lams = grid([FEW_SHOT + q for q in QUESTIONS])
    steering = Steering(random_vectors(tiny), lams, positions="generated")
    out = both(tiny, rows, steering, temperature=1.0, seeds=list(range(100, 100 + len(rows))))
    alone = run(
        tiny,
        [rows[4]],
        Steering(steering.vectors, lams[4], positions="generated"),
        temperature=1.0,
        seeds=[104],
    )
    assert alone[0] == out[4]


def test_prefix_is_stored_once(tiny, monkeypatch):
    """The few-shot prefix is one level of one group (generated) or one group per λ (all), never per row."""
    seen = []
    real = gen.SharedKVCache

    def spy(*a, **kw):
        cache = real(*a, **kw)
        seen.append([(lv.n_groups, lv.keys[0].shape[2]) for lv in cache.levels])
        return cache

    monkeypatch.setattr(gen, "SharedKVCache", spy)
    rows, lams = grid([FEW_SHOT + q for q in QUESTIONS])
    sv = random_vectors(tiny)
    run(tiny, rows, Steering(sv, lams, positions="generated"))
    prefix = seen[-1][0]
    assert prefix[0] == 1 and prefix[1] >= len(FEW_SHOT) - 2 and seen[-1][1][0] == len(QUESTIONS)
    run(tiny, rows, Steering(sv, lams, positions="all"))
    assert seen[-1] == [(len(LAMS), prefix[1])]


def test_compiled_decode_attention(tiny):
    rows, lams = grid([FEW_SHOT + q for q in QUESTIONS[:2]])
    steering = Steering(random_vectors(tiny), lams, positions="all")
    want = run(tiny, rows, steering)
    # aot_eager: dynamo's capture and AOT tracing without inductor's C++ build (minutes on a small CPU)
    assert run(tiny, rows, steering, compile="aot_eager") == want
    with pytest.warns(UserWarning, match="running it eagerly"):
        assert run(tiny, rows, steering, compile="no_such_backend") == want
    kvcache.set_compiled(False)


def test_auto_batch_size(tiny):
    assert auto_batch_size(tiny, 100, 10, 1000, available=0) == 1
    assert auto_batch_size(tiny, 100, 10, 7, available=1 << 40) == 7
    small = auto_batch_size(tiny, 1000, 100, 10**6, available=1 << 30)
    assert auto_batch_size(tiny, 100, 10, 10**6, available=1 << 30) > small > 1
    rows, lams = grid([FEW_SHOT + q for q in QUESTIONS])
    steering = Steering(random_vectors(tiny), lams, positions="generated")
    assert run(tiny, rows, steering, batch_size="auto") == run(tiny, rows, steering, batch_size=2)


def test_cache_choices(tiny):
    with pytest.raises(
        (ValueError, TypeError), match="cache must be|cache"
    ):  # TypeError: the jaxtyping checker
        generate(tiny, ["Hi"], max_new_tokens=2, cache="paged")
    with pytest.raises(TypeError):
        generate(tiny, ["Hi"], max_new_tokens=2, attention="bridge")  # removed: it ignored the KV cache
    assert run(tiny, PROMPTS, cache="static") == run(tiny, PROMPTS, cache="dynamic")


# ----------------------------------------------------------------------------- sliding windows (Gemma 3)


@pytest.mark.parametrize("positions", ["all", "generated", None])
def test_sliding_window_static_equals_dynamic_and_alone(tiny_gemma, positions):
    """A window of 8 tokens over prompts of 40-70: the shared prefix, pads and windows must not interact."""
    rows, lams = grid([FEW_SHOT + q for q in QUESTIONS], [0.0, 2.0])
    sv = random_vectors(tiny_gemma)
    steering = None if positions is None else Steering(sv, lams, positions=positions)
    out = both(tiny_gemma, rows, steering, max_new_tokens=12)
    for k in (1, 4):
        alone = None if positions is None else Steering(sv, lams[k], positions=positions)
        assert run(tiny_gemma, [rows[k]], alone, max_new_tokens=12, cache="dynamic")[0] == out[k]


# ----------------------------------------------------------------------------- a real model


def test_smollm2_static_equals_dynamic(smollm2):
    """SmolLM2-135M, chat prompts sharing a system prompt and one exemplar, a per-row λ grid, both positions."""
    from xsteer.core.vectors import SteeringVectors
    from xsteer.tasks.prompts import render

    system = {
        "role": "system",
        "content": "You are a careful assistant. Answer briefly and show your arithmetic.",
    }
    shot = [
        {"role": "user", "content": "What is 3 + 4?"},
        {"role": "assistant", "content": "3 + 4 = 7. The answer is 7."},
    ]
    questions = ["Tom has 3 apples and buys 5 more. How many apples does he have?", "What is 12 times 3?"]
    prompts = [render(smollm2.tokenizer, [system, *shot, {"role": "user", "content": q}]) for q in questions]
    g = torch.Generator().manual_seed(0)
    v = torch.randn(smollm2.cfg.n_layers, smollm2.cfg.d_model, generator=g)
    sv = SteeringVectors(v / v.norm(dim=-1, keepdim=True) * 8, "smollm2-135m", "random", (10, 15, 20))
    rows, lams = grid(prompts, [0.0, 0.5, 1.0])
    for positions in ("generated", "all"):
        out = both(smollm2, rows, Steering(sv, lams, positions=positions), max_new_tokens=24, stop=["\n\n"])
        assert "8" in out[0][0]  # λ = 0 answers the question
        assert len({text for text, _, _ in out}) > len(prompts)  # and λ changes some answer


@pytest.mark.parametrize("name", ["tiny", "tiny_gemma"])
def test_steered_prefix_runs_the_blocks_below_the_steered_layers_once(request, name, monkeypatch):
    """positions=all over a few-shot prefix, steered from layer 2 on: blocks 0-1 of the prefix run once for
    every λ (their keys and values shared), and the text is the dynamic cache's, which runs every block per row."""
    model = request.getfixturevalue(name)
    shared = []
    real = kvcache.SharedKVCache.share_layers

    def spy(self, src, layers):
        shared.append((self.rows, list(layers)))
        return real(self, src, layers)

    monkeypatch.setattr(kvcache.SharedKVCache, "share_layers", spy)
    rows, lams = grid([FEW_SHOT + q for q in QUESTIONS])
    steering = Steering(random_vectors(model, layers=[2, 3]), lams, positions="all")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the vectors' model name is the Llama's
        out = both(model, rows, steering, max_new_tokens=12)
    assert shared == [(len(LAMS), [0, 1])]
    assert any(out[k][0] != out[k + 2][0] for k in range(0, len(rows), 3))
