"""The one place that touches TransformerLens and Hugging Face internals.

Everything else in xsteer talks to a model through TransformerLens's public surface (``cfg``, ``tokenizer``,
``hooks()``, the forward call with ``past_key_values``). What that surface lacks lives here: booting a
TransformerBridge around an already-loaded HF model offline, the HF config the bridge wraps, and running
attention through the model's own kernels. When TransformerLens or transformers change, this file changes.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


def fix_config(hf_model: Any) -> None:
    """Make a GGUF-loaded HF model bootable: drop the stale quantization config, name the architecture.

    The GGUF reader leaves a ``quantization_config`` behind although the weights are already dequantized,
    and no ``architectures``, which TransformerLens needs to pick its adapter.
    """
    cfg = hf_model.config
    if getattr(cfg, "quantization_config", None) is not None:
        delattr(cfg, "quantization_config")
    if getattr(hf_model, "hf_quantizer", None) is not None:
        hf_model.hf_quantizer = None
    if not getattr(cfg, "architectures", None):
        cfg.architectures = [type(hf_model).__name__]


def boot(hf_model: Any, tokenizer: Any, *, label: str, device: str) -> Any:
    """A TransformerBridge around an HF model that is already on ``device`` (the label is only a name)."""
    from transformer_lens.model_bridge import TransformerBridge

    fix_config(hf_model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bridge = TransformerBridge.boot_transformers(
            label, hf_model=hf_model, tokenizer=tokenizer, device=device
        )
    return bridge.eval()


def hf_model(model: Any) -> Any:
    """The Hugging Face model a bridge wraps."""
    return model.original_model


def hf_model_or_none(model: Any) -> Any:
    """The Hugging Face model a bridge wraps, or None for any other model."""
    return getattr(model, "original_model", None)


def hf_config(model: Any) -> Any:
    """The HF text config (multimodal configs nest it under ``text_config``)."""
    cfg = getattr(getattr(model, "original_model", None), "config", None)
    return getattr(cfg, "text_config", cfg)


def eos_ids(model: Any) -> set[int]:
    """Every token id that ends a generation: the tokenizer's EOS and the generation config's."""
    tok = model.tokenizer
    ids = {tok.eos_token_id} if tok.eos_token_id is not None else set()
    gen_cfg = getattr(getattr(model, "original_model", None), "generation_config", None)
    extra = getattr(gen_cfg, "eos_token_id", None)
    if extra is not None:
        ids |= set(extra) if isinstance(extra, (list, tuple)) else {int(extra)}
    return ids


def has_sliding_window(model: Any) -> bool:
    """Whether attention uses a sliding window (Gemma 3): its window counts cache slots, not positions."""
    cfg = hf_config(model)
    return (
        getattr(cfg, "sliding_window", None) is not None
        and getattr(cfg, "use_sliding_window", True) is not False
    )


@contextmanager
def native_attention(model: Any, implementation: str = "sdpa") -> Iterator[Any]:
    """Run attention through the model's own Hugging Face kernels (``sdpa``) inside the block.

    TransformerBridge re-implements attention step by step so that ``attn.hook_pattern`` and friends fire;
    that path copies the grouped KV cache on every decode step and dominates generation time on a CPU.
    Residual-stream hooks (``blocks.{l}.hook_resid_post``, which steering and extraction use) still fire
    here; attention-internal hooks do not. Outputs match the bridge path to float tolerance.
    """
    swapped = []
    for block in getattr(model, "blocks", []):
        layer, attn = getattr(block, "original_component", None), getattr(block, "attn", None)
        native = getattr(attn, "original_component", None)
        if layer is None or native is None:
            continue
        for name, child in layer.named_children():
            if child is attn:
                swapped.append((layer, name, attn))
                setattr(layer, name, native)
    cfg = model.original_model.config
    old = cfg._attn_implementation
    try:
        if swapped:
            cfg._attn_implementation = implementation
        yield model
    finally:
        cfg._attn_implementation = old
        for layer, name, attn in swapped:
            setattr(layer, name, attn)


@contextmanager
def blocks_from(model: Any, start: int, residual: Any) -> Iterator[Any]:
    """Inside the block, a forward of ``model`` does no work in blocks ``0 .. start-1``: they pass their input
    on, and block ``start - 1`` hands on ``residual`` ([batch, pos, d_model]: what it would have produced), so
    blocks ``start`` and above run on it with the model's own masks and positions. Hooks inside blocks
    ``start`` and above fire as usual (steering added there is unaffected).

    TransformerBridge's own ``start_at_layer`` still runs the blocks below and discards their output; this
    skips them, which is what makes many rows that share a text cheap below the first steered layer.
    """
    if not 0 < start < len(model.blocks):
        raise ValueError(f"start must lie in 1..{len(model.blocks) - 1}, got {start}")
    layers = [block.original_component for block in model.blocks[:start]]

    def through(hidden_states: Any, *args: Any, **kwargs: Any) -> Any:
        return hidden_states

    def hand_on(hidden_states: Any, *args: Any, **kwargs: Any) -> Any:
        if tuple(hidden_states.shape) != tuple(residual.shape):
            raise ValueError(f"residual {tuple(residual.shape)} for a batch of {tuple(hidden_states.shape)}")
        return residual

    try:
        # An instance attribute shadows the class's forward for nn.Module.__call__; deleting it restores it.
        for layer in layers[:-1]:
            layer.forward = through
        layers[-1].forward = hand_on
        yield model
    finally:
        for layer in layers:
            layer.__dict__.pop("forward", None)


def register_attention(name: str, fn: Any) -> None:
    """Make ``fn`` an attention implementation the model's own attention modules dispatch to by ``name``
    (transformers' ``AttentionInterface``; with no mask function registered under the name, the model
    builds no attention mask: ``fn`` brings its own)."""
    from transformers import AttentionInterface

    AttentionInterface.register(name, fn)


def kv_layout(model: Any) -> tuple[int, int, int]:
    """(layers, key/value heads, head dimension) of the model's attention, from the HF config."""
    cfg = hf_config(model)
    heads = cfg.num_attention_heads
    kv_heads = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    return int(cfg.num_hidden_layers), int(kv_heads), int(head_dim)


def decoder_layers(hf_model: Any) -> Any:
    """The decoder blocks of a plain Hugging Face causal LM, in order."""
    return hf_model.get_decoder().layers
