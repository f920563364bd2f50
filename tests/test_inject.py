import pytest
import torch

from xsteer.core.generate import Steering, generate
from xsteer.core.inject import steer
from xsteer.core.vectors import SteeringVectors, VectorFileError


def random_vectors(model, seed=0, layers=None):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(model.cfg.n_layers, model.cfg.d_model, generator=g)
    v = v / v.norm(dim=-1, keepdim=True)
    return SteeringVectors(v, "tiny-llama", "random", tuple(layers or range(model.cfg.n_layers)))


def logits(model, texts):
    enc = model.tokenizer(texts, return_tensors="pt", padding=True)
    with torch.inference_mode():
        return model(enc.input_ids, attention_mask=enc.attention_mask)


def n_hooks(model):
    unique = {id(hp): hp for hp in model.hook_dict.values()}  # aliases share one HookPoint
    return sum(len(hp._forward_hooks) for hp in unique.values())


def test_lambda_zero_is_identity_and_large_lambda_changes(tiny):
    sv = random_vectors(tiny)
    base = logits(tiny, ["hello there"])
    with steer(tiny, sv, lam=0.0):
        same = logits(tiny, ["hello there"])
    with steer(tiny, sv, lam=10.0):
        moved = logits(tiny, ["hello there"])
    torch.testing.assert_close(same, base)
    assert (moved - base).abs().max() > 1.0


def test_hooks_removed_after_exception(tiny):
    sv = random_vectors(tiny)
    before = n_hooks(tiny)
    base = logits(tiny, ["abc"])
    with pytest.raises(RuntimeError, match="boom"):
        with steer(tiny, sv, lam=5.0):
            assert n_hooks(tiny) == before + tiny.cfg.n_layers
            raise RuntimeError("boom")
    assert n_hooks(tiny) == before
    torch.testing.assert_close(logits(tiny, ["abc"]), base)


def test_only_chosen_layers_are_steered(tiny):
    sv = random_vectors(tiny)
    seen = {}

    def spy(layer):
        def f(x, hook):
            seen[layer] = x[0, -1].clone()
            return x

        return f

    ids = tiny.tokenizer(["xy"], return_tensors="pt").input_ids
    spies = [(f"blocks.{i}.hook_resid_post", spy(i)) for i in range(tiny.cfg.n_layers)]
    with torch.inference_mode(), tiny.hooks(fwd_hooks=spies):
        tiny(ids)
    base = dict(seen)
    # Spies run before the steering hook on the same point, so layer 2's own reading is unsteered...
    with torch.inference_mode(), steer(tiny, sv, lam=3.0, layers=[2]), tiny.hooks(fwd_hooks=spies):
        tiny(ids)
    for i in range(2):
        torch.testing.assert_close(seen[i], base[i])
    # ...and every later layer sees the displaced stream.
    assert (seen[3] - base[3]).abs().max() > 1e-3


def test_per_row_lambda_equals_separate_runs(tiny):
    sv = random_vectors(tiny)
    lams = [0.0, 0.5, 2.0, 5.0]
    with steer(tiny, sv, lam=torch.tensor(lams)):
        batched = logits(tiny, ["same prompt"] * 4)
    for i, lam in enumerate(lams):
        with steer(tiny, sv, lam=lam):
            torch.testing.assert_close(batched[i], logits(tiny, ["same prompt"])[0], atol=1e-5, rtol=1e-5)


def test_wrong_shapes_are_rejected(tiny):
    wide = SteeringVectors(torch.ones(tiny.cfg.n_layers, tiny.cfg.d_model + 1), "other", "x", (0,))
    with pytest.raises(VectorFileError, match="xsteer transfer"):
        with steer(tiny, wide):
            pass
    deep = SteeringVectors(torch.ones(tiny.cfg.n_layers + 2, tiny.cfg.d_model), "other", "x", (0,))
    with pytest.raises(VectorFileError, match="layers"):
        with steer(tiny, deep):
            pass
    sv = random_vectors(tiny)
    with pytest.raises(ValueError, match="rows"):
        with steer(tiny, sv, lam=[1.0, 2.0]):
            logits(tiny, ["a", "b", "c"])
    with pytest.raises(ValueError, match="finite"):
        with steer(tiny, sv, lam=float("nan")):
            pass


PROMPTS = ["Q: 1+1\nA:", "A much longer prompt about apples and pears.\nA:", "Hi", "x" * 30]


def test_batched_generation_equals_one_by_one(tiny):
    batched = generate(tiny, PROMPTS, max_new_tokens=12, batch_size=4)
    alone = [generate(tiny, [p], max_new_tokens=12)[0] for p in PROMPTS]
    assert [g.text for g in batched] == [g.text for g in alone]
    assert all(g.n_tokens > 0 for g in batched)


@pytest.mark.parametrize("positions", ["all", "generated"])
def test_steered_generation_per_row_equals_separate(tiny, positions):
    sv = random_vectors(tiny)
    lams = [0.0, 1.0, 4.0]
    rows = [p for p in PROMPTS[:2] for _ in lams]
    grid = generate(tiny, rows, max_new_tokens=10, steering=Steering(sv, lams * 2, positions=positions))
    for k, prompt in enumerate(PROMPTS[:2]):
        for j, lam in enumerate(lams):
            alone = generate(
                tiny, [prompt], max_new_tokens=10, steering=Steering(sv, lam, positions=positions)
            )[0]
            assert grid[k * 3 + j].text == alone.text
    plain = generate(tiny, PROMPTS[:2], max_new_tokens=10)
    assert [grid[0].text, grid[3].text] == [g.text for g in plain]  # λ = 0 is the unsteered model
    assert any(grid[k * 3 + 2].text != plain[k].text for k in range(2))  # a large λ changes the output


def test_stop_strings_cut_the_completion(tiny):
    free = generate(tiny, ["Hi"], max_new_tokens=20)[0]
    if len(free.text) < 4:
        pytest.skip("the tiny model stopped too early to test stop strings")
    stop = free.text[2:4]
    cut = generate(tiny, ["Hi"], max_new_tokens=20, stop=[stop])[0]
    assert cut.finish == "stop" and free.text.startswith(cut.text) and stop not in cut.text


def test_sampling_is_seeded_per_row(tiny):
    a = generate(tiny, ["Hi", "Yo"], max_new_tokens=8, temperature=1.0, seeds=[1, 2])
    b = generate(tiny, ["Yo"], max_new_tokens=8, temperature=1.0, seeds=[2])
    assert a[1].text == b[0].text


def test_shared_prefix_len():
    from xsteer.core.generate import shared_prefix_len

    t = torch.tensor
    assert shared_prefix_len([t([1, 2, 3, 4]), t([1, 2, 9, 9, 9])]) == 2
    assert shared_prefix_len([t([1, 2, 3]), t([1, 2, 3, 4])]) == 2  # each row keeps one token of its own
    assert shared_prefix_len([t([5, 2]), t([1, 2])]) == 0
    assert shared_prefix_len([t([1, 2, 3])]) == 0


FEW_SHOT = "Q: two plus two\nA: four\nQ: three plus one\nA: four\n"  # a prefix every prompt shares


@pytest.mark.parametrize("positions", ["all", "generated", None])
def test_shared_prefix_prefill_equals_full_prefill(tiny, monkeypatch, positions):
    import xsteer.core.generate as gen

    prompts = [FEW_SHOT + q for q in ["Q: 1+1\nA:", "Q: what is a much longer one\nA:", "Q: x\nA:"]]
    rows = [p for p in prompts for _ in range(2)]
    steering = (
        None if positions is None else Steering(random_vectors(tiny), [0.5, 3.0] * 3, positions=positions)
    )

    def run():
        return [g.text for g in generate(tiny, rows, max_new_tokens=10, steering=steering)]

    lengths = []
    real = gen.shared_prefix_len
    monkeypatch.setattr(gen, "shared_prefix_len", lambda seqs: lengths.append(real(seqs)) or lengths[-1])
    shared = run()
    assert max(lengths) >= len(FEW_SHOT) - 2  # the shared path was really taken
    monkeypatch.setattr(gen, "MIN_SHARED_PREFIX", 10**9)
    assert run() == shared
    # and each equals the prompt generated alone, unpadded
    for k in (1, 4):
        alone = Steering(steering.vectors, [0.5, 3.0][k % 2], positions=positions) if steering else None
        assert generate(tiny, [rows[k]], max_new_tokens=10, steering=alone)[0].text == shared[k]


# ------------------------------------------------------------------ rows of one text share the unsteered blocks
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_shared_lower_blocks_equal_every_row_run_whole(arch, monkeypatch):
    """Rows that share a text run the blocks below the first steered layer once: next-token log-probabilities
    equal running every row through every block, per-row vectors and one shared vector alike, with texts of
    unequal length in one batch (left padding) and a row whose text is the only one of its kind."""
    from conftest import tiny_model

    import xsteer.core.activations as acts

    model = tiny_model(arch, n_layers=4)
    texts = ["the cat sat", "a dog", "the cat sat", "we ran far away", "a dog", "the cat sat", "lone"]
    ids = [5, 6, 7]
    g = torch.Generator().manual_seed(1)
    stack = torch.randn(3, 4, model.cfg.d_model, generator=g) * 3
    which = [0, 1, 2, 0, 1, 2, 0]
    lam = [0.5, -1.0, 2.0, 1.0, 0.0, -0.5, 1.5]
    sv = SteeringVectors(stack[0], f"tiny-{arch}", "x", (1, 3))
    entered = []
    real = acts._entering

    def spy(*a):
        out = real(*a)
        entered.append(out is not None)
        return out

    def read():
        return (
            acts.next_token_logprobs(
                model, texts, ids, vectors=stack, which=which, lam=lam, layers=[2, 3], batch_size=5
            ),
            acts.next_token_logprobs(model, texts, ids, vectors=sv, lam=lam),
        )

    monkeypatch.setattr(acts, "_entering", spy)
    shared = read()
    # Rows 5-6 (the second batch of 5) hold two distinct texts: nothing to share, every row runs whole.
    assert entered == [True, False, True]
    monkeypatch.setattr(acts, "_entering", lambda *a: None)
    whole = read()
    for a, b in zip(shared, whole, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    # Steering still acts above the shared blocks, and the blocks come back whole afterwards.
    assert (shared[0] - acts.next_token_logprobs(model, texts, ids)).abs().max() > 1e-3
    assert not any("forward" in b.original_component.__dict__ for b in model.blocks)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3"])
def test_sequence_logprobs_equal_each_row_run_alone(arch, monkeypatch, request):
    """log p(continuation | context) under per-row vectors equals each row run alone, whole and uncached, while
    the two answers of one (context, vector, λ) share its prefill and the (vector, λ) of one context share the
    blocks below the first steered layer: answers of unequal length (left padding), chunks cut at a context's
    edge and inside one, a one-token context, and on Gemma-3 contexts longer than its sliding window."""
    from conftest import tiny_model

    import xsteer.core.generate as gen
    from xsteer.core.inject import steer_rows
    from xsteer.tasks.concepts.readouts import sequence_logprobs

    model = request.getfixturevalue("tiny_gemma") if arch == "gemma3" else tiny_model(arch, n_layers=4)
    tok = model.tokenizer
    g = torch.Generator().manual_seed(1)
    stack = torch.randn(3, 4, model.cfg.d_model, generator=g) * 3
    contexts, answers, which, lam = [], [], [], []
    for context, pair in (
        ("the cat sat on the mat and", (" ran", " sat up")),
        ("a dog", (" bit", " x")),
        ("", (" z", " ab")),
    ):
        for v, lm in ((0, 0.5), (1, -1.0), (2, 2.0), (0, 0.0)):
            for answer in pair:
                contexts.append(context)
                answers.append(answer)
                which.append(v)
                lam.append(lm)
    shared = []
    real = gen.residual_entering
    monkeypatch.setattr(gen, "residual_entering", lambda *a: shared.append(1) or real(*a))
    got = sequence_logprobs(
        model, contexts, answers, stack=stack, which=which, lam=lam, layers=[2, 3], batch_size=6
    )
    # Each longer context's 8 rows make chunks of 3 units and 1 unit: the first shares its lower blocks, the
    # second has nothing to share with.
    assert len(shared) == 2

    def alone(i):
        ids = tok(contexts[i]).input_ids
        k = len(tok(answers[i], add_special_tokens=False).input_ids)
        ids = torch.tensor([ids + tok(answers[i], add_special_tokens=False).input_ids])
        with steer_rows(model, stack[[which[i]]], lam=[lam[i]], layers=[2, 3]):
            logits = model(ids)
        lp = torch.log_softmax(logits[0, :-1].float(), dim=-1).gather(-1, ids[0, 1:, None])[..., 0]
        return lp[-k:].sum()

    torch.testing.assert_close(
        got, torch.stack([alone(i) for i in range(len(contexts))]), atol=1e-4, rtol=1e-4
    )
    assert not any("forward" in b.original_component.__dict__ for b in model.blocks)


def test_blocks_from_checks_its_residual(tiny):
    from xsteer.core.models import blocks_from

    enc = torch.tensor([[3, 4, 5]])
    with (
        pytest.raises(ValueError, match="residual"),
        blocks_from(tiny, 2, torch.zeros(2, 3, tiny.cfg.d_model)),
    ):
        tiny(enc)
    with pytest.raises(ValueError, match="start"), blocks_from(tiny, 0, torch.zeros(1, 3, tiny.cfg.d_model)):
        pass
    assert not any("forward" in b.original_component.__dict__ for b in tiny.blocks)
