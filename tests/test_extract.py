import pytest
import torch

from xsteer.core.activations import last_token_resid
from xsteer.core.vectors import SteeringVectors
from xsteer.extraction.extract import extract, fit_directions, vectors_from_activations
from xsteer.extraction.methods import METHODS
from xsteer.extraction.pairs import ContrastivePair


def planted(n=64, layers=3, d=32, scale=4.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(layers, d, generator=g)
    u = u / u.norm(dim=-1, keepdim=True)
    neg = torch.randn(n, layers, d, generator=g)
    pos = neg + torch.randn(n, layers, d, generator=g) * 0.5 + scale * u
    return pos, neg, u


@pytest.mark.parametrize("method", list(METHODS))
def test_planted_direction_recovered(method):
    pos, neg, u = planted()
    v, stats = fit_directions(pos, neg, method=method)
    cos = torch.nn.functional.cosine_similarity(v, u, dim=-1)
    assert (cos > 0.99).all(), cos  # the sign is oriented too: positives project higher
    assert torch.allclose(v.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert all(s["separation"] == 1.0 for s in stats)
    assert all(0 < s["explained_variance"] <= 1 for s in stats)


def test_centred_pca_without_sign_flip_would_lose_the_concept():
    # Why `pca` flips signs: centring consistent-sign differences removes the mean difference itself.
    pos, neg, u = planted(scale=4.0)
    d = (pos - neg)[:, 0]
    d = d / d.norm(dim=-1, keepdim=True)
    naive = torch.linalg.svd(d - d.mean(0), full_matrices=False)[2][0]
    assert abs(float(naive @ u[0])) < 0.5
    v, _ = fit_directions(pos, neg, method="pca")
    assert float(v[0] @ u[0]) > 0.99


def test_fit_directions_rejects_bad_input():
    with pytest.raises(ValueError, match="empty"):
        fit_directions(torch.zeros(0, 2, 4), torch.zeros(0, 2, 4))
    with pytest.raises(ValueError, match="options"):
        fit_directions(torch.zeros(3, 2, 4), torch.ones(3, 2, 4), method="lda")  # type: ignore[arg-type]


def test_last_token_matches_full_cache(tiny):
    text = "The quick brown fox."
    acts = last_token_resid(tiny, [text])
    ids = tiny.tokenizer([text], return_tensors="pt").input_ids
    _, cache = tiny.run_with_cache(ids, names_filter=lambda n: n.endswith("hook_resid_post"))
    for layer in range(tiny.cfg.n_layers):
        # Extraction runs the model's own SDPA kernel, the cache the bridge's eager attention: float tolerance.
        torch.testing.assert_close(
            acts[0, layer], cache[f"blocks.{layer}.hook_resid_post"][0, -1], atol=1e-4, rtol=1e-4
        )


def test_last_token_is_padding_invariant(tiny):
    texts = ["a", "a much longer text than the first one"]
    together = last_token_resid(tiny, texts, batch_size=2)
    alone = torch.cat([last_token_resid(tiny, [t]) for t in texts])
    torch.testing.assert_close(together, alone, atol=1e-4, rtol=1e-4)


def test_texts_batched_by_length_come_back_in_input_order(tiny):
    # Lengths 1, 7, 3, 7, 2 words: the batches of two (longest first) mix the input order.
    texts = ["a", "one two three four five six seven", "b c d", "seven words in this text, as before", "e f"]
    together = last_token_resid(tiny, texts, batch_size=2)
    alone = torch.cat([last_token_resid(tiny, [t]) for t in texts])
    torch.testing.assert_close(together, alone, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(together[0], together[2])


def test_passes_are_capped_by_rows_and_padded_tokens():
    from xsteer.core.activations import _token_batches

    # Longest first: 100 tokens go alone under a budget of 120, two of 60, then four of 10 (the row cap).
    lengths, order = [100, 60, 50, 10, 10, 10, 10, 10], [3, 1, 0, 2, 4, 5, 6, 7]
    passes = [b.tolist() for b in _token_batches(lengths, order, 4, 120)]
    assert passes == [[3], [1, 0], [2, 4, 5, 6], [7]]
    # A text longer than the budget still goes, alone.
    assert [b.tolist() for b in _token_batches([500, 3], [1, 0], 8, 100)] == [[1], [0]]


def test_token_budget_changes_the_passes_not_the_values(tiny):
    texts = ["a", "one two three four five six seven", "b c d", "seven words in this text, as before", "e f"]
    wide = last_token_resid(tiny, texts, batch_size=5, max_tokens=10**6)
    narrow = last_token_resid(tiny, texts, batch_size=5, max_tokens=8)
    torch.testing.assert_close(narrow, wide, atol=1e-4, rtol=1e-4)


def test_planted_direction_through_model_hooks(tiny):
    """Plant u at layer 1 of the positives via steering; every method reads it back from the model."""
    from xsteer.core.inject import steer

    d = tiny.cfg.d_model
    u = torch.randn(d, generator=torch.Generator().manual_seed(1))
    u = u / u.norm()
    plant = torch.zeros(tiny.cfg.n_layers, d)
    plant[1] = u
    sv = SteeringVectors(plant, "tiny-llama", "plant", (1,))
    texts = [f"sample {i}: " + "xyz"[i % 3] * (i % 7 + 1) for i in range(24)]
    neg = last_token_resid(tiny, texts, layers=[1])
    with steer(tiny, sv, lam=20.0):
        pos = last_token_resid(tiny, texts, layers=[1])
    for method in METHODS:
        v, _ = fit_directions(pos, neg, method=method)
        assert float(v[0] @ u) > 0.99, method


def test_extract_end_to_end(tiny):
    pairs = [ContrastivePair(f"good answer {i}", f"bad answer {i}") for i in range(6)]
    sv = extract(tiny, pairs, method="pca", progress=False)
    assert sv.vectors.shape == (tiny.cfg.n_layers, tiny.cfg.d_model)
    assert sv.layers == tuple(range(tiny.cfg.n_layers))
    assert sv.model_id == "tiny-llama" and sv.pairs_hash and sv.centring
    assert len(sv.layer_stats) == tiny.cfg.n_layers and "separation" in sv.layer_stats[0]
    with pytest.raises(ValueError, match="empty"):
        extract(tiny, [], progress=False)


def test_vectors_from_activations_is_what_extract_writes(tiny, tmp_path):
    """Vectors built from activations read elsewhere (a study's stored acts) are the file extract writes."""
    from xsteer.core.models import runtime

    pairs = [ContrastivePair(f"good answer {i}", f"bad answer {i}") for i in range(6)]
    layers = [1, 3]
    via_model = extract(
        tiny, pairs, method="mean_diff", layers=layers, seed=2, progress=False, extra={"k": 1}
    )
    acts = last_token_resid(tiny, [p.positive for p in pairs] + [p.negative for p in pairs], layers=layers)
    pure = vectors_from_activations(
        acts[:6],
        acts[6:],
        model_id="tiny-llama",
        method="mean_diff",
        seed=2,
        pairs=pairs,
        layers=layers,
        n_layers=tiny.cfg.n_layers,
        extra={**runtime(tiny), "k": 1},
    )
    a, b = via_model.save(tmp_path / "a.safetensors"), pure.save(tmp_path / "b.safetensors")
    assert a.read_bytes() == b.read_bytes()
    with pytest.raises(ValueError, match="do not fit layers"):
        vectors_from_activations(acts[:6], acts[6:], model_id="m", pairs=pairs, layers=[0, 1, 2])
    with pytest.raises(ValueError, match="for 5 pairs"):
        vectors_from_activations(acts[:6], acts[6:], model_id="m", pairs=pairs[:5])
