"""Shared fixtures: tiny random-weight models (no downloads) and the offline zoo / data (skipped if absent)."""

from __future__ import annotations

import os
import re
import string
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

SHARED_DATA = Path(os.environ.get("XSTEER_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))


def char_tokenizer():
    """A character-level fast tokenizer with pad/bos/eos, built in memory."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    vocab = {t: i for i, t in enumerate(specials + sorted(set(string.printable)))}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    # TransformerLens re-loads the tokenizer by its name_or_path, so it must live in a directory.
    from transformers import AutoTokenizer

    path = tempfile.mkdtemp(prefix="xsteer-chartok-")
    tok.save_pretrained(path)
    return AutoTokenizer.from_pretrained(path)


def tiny_hf(arch: str = "llama", *, d_model: int = 64, n_layers: int = 4, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    tok = char_tokenizer()
    common = dict(
        vocab_size=len(tok),
        hidden_size=d_model,
        intermediate_size=2 * d_model,
        num_hidden_layers=n_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,  # GSM8K texts through the char tokenizer reach ~650 tokens
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    if arch == "llama":
        hf = LlamaForCausalLM(LlamaConfig(**common))
    elif arch == "qwen2":
        hf = Qwen2ForCausalLM(Qwen2Config(**common))
    else:
        raise ValueError(arch)
    # Default init (std 0.02) gives near-uniform logits; a larger scale makes greedy decoding decisive.
    with torch.no_grad():
        for p in hf.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.2)
    return hf.eval(), tok


def tiny_model(arch: str = "llama", **kw):
    from xsteer.core.models import wrap

    hf, tok = tiny_hf(arch, **kw)
    return wrap(hf, tok, model_id=f"tiny-{arch}", device="cpu")


@pytest.fixture(scope="session")
def tiny():
    return tiny_model("llama")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "gsm8k" / "train.jsonl").is_file():
        pytest.skip(f"offline benchmark data not found at {SHARED_DATA} (set XSTEER_DATA_DIR)")
    return SHARED_DATA


def zoo_model(name: str):
    from xsteer.core.models import ZOO, ModelSpecError, load_model

    try:
        ZOO[name].locate  # noqa: B018
        return load_model(name, device="cpu")
    except ModelSpecError as e:
        if "not installed" in str(e):
            pytest.skip(f"zoo model {name} not installed: {e}")
        raise


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A tiny Llama saved as a Hugging Face folder: a model spec the CLI loads like any local model."""
    path = tmp_path_factory.mktemp("tiny-llama")
    hf, tok = tiny_hf("llama", d_model=32, n_layers=3)
    hf.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def smollm2():
    return zoo_model("smollm2-135m")


@contextmanager
def bad_shapes(match: str):
    """Expect a shape error: xsteer's own (a ValueError naming the problem) when annotations are not checked,
    or jaxtyping's TypeCheckError when they are (the default test run checks them)."""
    from jaxtyping import TypeCheckError

    with pytest.raises((ValueError, TypeCheckError)) as info:
        yield info
    if not isinstance(info.value, TypeCheckError):
        assert re.search(match, str(info.value)), str(info.value)


@pytest.fixture(scope="session")
def tiny_gemma():
    """A tiny Gemma-3 whose sliding window (8 tokens) is shorter than the test texts."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from xsteer.core.models import wrap

    tok = char_tokenizer()
    cfg = Gemma3TextConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=512,
        sliding_window=8,
        layer_types=["sliding_attention", "sliding_attention", "sliding_attention", "full_attention"],
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    hf = Gemma3ForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            if p.ndim == 2:
                p.normal_(0, 0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return wrap(hf, tok, model_id="tiny-gemma3", device="cpu")
