"""Provenance: every vector and map file says which weights, hook, position, pairs, map and versions made it."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import tiny_hf, tiny_model

from xsteer.core.models import weights_fingerprint, wrap
from xsteer.core.vectors import SteeringVectors
from xsteer.extraction.extract import extract
from xsteer.extraction.pairs import ContrastivePair, pairs_hash
from xsteer.transfer.maps import fit_transfer, texts_hash

PAIRS = [ContrastivePair(f"good answer {i}", f"bad answer {i}") for i in range(6)]


def test_the_fingerprint_tells_other_weights_apart_and_keeps_a_dtype_change():
    a, b = tiny_model("llama"), tiny_model("llama")  # the same seed: the same weights
    fp = weights_fingerprint(a)
    assert fp.startswith("wfp1:") and len(fp) == 5 + 32
    assert weights_fingerprint(b) == fp
    assert weights_fingerprint(tiny_model("llama", seed=1)) != fp
    # A fine-tune moves the weights: the fingerprint moves with them (a fresh model: it is computed once per object).
    tuned = tiny_model("llama")
    with torch.no_grad():
        for p in tuned.parameters():
            p.add_(1e-2 * torch.randn_like(p))
    assert weights_fingerprint(tuned) != fp
    # The same checkpoint in bfloat16 (a GPU load) is the same weights.
    hf, tok = tiny_hf("llama")
    half = wrap(hf.to(torch.bfloat16), tok, model_id="tiny-bf16")
    assert weights_fingerprint(half) == fp


def test_a_vector_file_records_what_made_it_and_keeps_it_on_disk(tmp_path):
    model = tiny_model("llama")
    sv = extract(model, PAIRS, method="pca", progress=False, extra={"source": "pairs.jsonl"})
    back = SteeringVectors.load(sv.save(tmp_path / "v.safetensors"))
    prov = back.provenance()
    assert prov["weights"] == weights_fingerprint(model)
    assert prov["pairs_hash"] == pairs_hash(PAIRS) and prov["pairs_source"] == "pairs.jsonl"
    assert (prov["hook"], prov["position"], prov["method"], prov["norm"]) == (
        "hook_resid_post",
        "last_token",
        "pca",
        "unit",
    )
    from importlib.metadata import version

    assert prov["torch"] == version("torch") and prov["transformer-lens"] == version("transformer-lens")
    assert prov["parent"] is None and prov["map"] is None  # not a transferred vector
    # What provenance does not show is left for the rest of `xsteer info`, nothing twice.
    assert back.provenance_rest() == {"n_pairs": 6, "seed": 0, "device": "cpu", "dtype": "float32"}


def test_a_transferred_vector_records_both_models_the_map_and_its_fit(tmp_path):
    parent = tiny_model("llama", d_model=64, n_layers=4)
    child = tiny_model("qwen2", d_model=32, n_layers=3, seed=1)
    texts = [f"text number {i} about {'abc'[i % 3]}" * (1 + i % 3) for i in range(40)]
    tmap = fit_transfer(parent, child, texts, layer_map="proportional", width_map="ridge")
    mapped = tmap.apply(extract(parent, PAIRS, progress=False, extra={"source": "pairs.jsonl"}), norm="unit")
    prov = SteeringVectors.load(mapped.save(tmp_path / "m.safetensors")).provenance()
    assert prov["weights"] == weights_fingerprint(child)
    assert prov["parent_weights"] == weights_fingerprint(parent)
    assert prov["map"] == "proportional x ridge" and prov["fit_texts_hash"] == texts_hash(texts)
    assert prov["pairs_source"] == "pairs.jsonl" and prov["pairs_hash"] == pairs_hash(PAIRS)
    r2 = [r["r2"] for c, r in tmap.report.items() if c in mapped.layers]
    assert prov["heldout_r2"] == round(sum(r2) / len(r2), 4)
    assert prov["xsteer"] is not None


def test_vectors_applied_to_other_weights_warn_and_to_their_own_do_not():
    model, other = tiny_model("llama"), tiny_model("llama", seed=1)
    sv = extract(model, PAIRS, progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with sv.apply(model, lam=0.5):
            pass
    with pytest.warns(
        UserWarning, match=r"made on weights wfp1:.* \(another revision, fine-tune or quantization\)"
    ):
        with sv.apply(other, lam=0.5):
            pass


def test_a_gguf_export_carries_the_provenance_and_an_import_keeps_the_weights(tmp_path):
    from xsteer.interop.gguf import export_gguf, load_gguf, read_gguf_control_vector

    model = tiny_model("llama")
    sv = extract(model, PAIRS, progress=False, extra={"source": "pairs.jsonl"}).replace(layers=(1, 2))
    path = export_gguf(sv, tmp_path / "v.gguf", model_hint="llama")
    meta = read_gguf_control_vector(path).meta
    assert meta["weights"] == weights_fingerprint(model) and meta["pairs_source"] == "pairs.jsonl"
    assert meta["pairs_hash"] == pairs_hash(PAIRS) and meta["torch"]
    back = load_gguf(path, n_layers=sv.n_layers)
    assert back.provenance()["weights"] == weights_fingerprint(model)
    assert back.provenance()["pairs_source"] == "pairs.jsonl"
    assert back.provenance_rest()["source"] == str(path)  # the imported file's own path stays visible


def test_the_fingerprint_samples_inside_a_large_tensor():
    # SmolLM2's embedding: 28,311,552 values, where float sample positions once ran past the last index.
    emb = torch.nn.Embedding(49152, 576)
    fp = weights_fingerprint(emb)
    with torch.no_grad():
        emb.weight[-1, -1] += 1.0  # the last value is among the samples
    assert weights_fingerprint(torch.nn.Embedding.from_pretrained(emb.weight.detach().clone())) != fp
