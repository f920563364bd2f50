"""Models: specs (zoo name, ``.gguf``, local HF dir, hub id) -> TransformerLens ``TransformerBridge``.

``zoo`` knows the offline zoo, ``load`` turns a spec into a model on a checked device, and ``backend`` is the
only module that touches TransformerLens or Hugging Face internals.
"""

from xsteer.core.models.backend import blocks_from, eos_ids, has_sliding_window, native_attention
from xsteer.core.models.fingerprint import hub_revision, weights_fingerprint
from xsteer.core.models.load import (
    ENV_DTYPE,
    SPEC_HELP,
    ModelSource,
    cache_dir,
    check_gguf,
    check_placement,
    default_device,
    default_dtype,
    dtype_tag,
    encode,
    has_chat_template,
    load_hf,
    load_model,
    model_id,
    parse_spec,
    prepare_tokenizer,
    resolve_device,
    runtime,
    wrap,
)
from xsteer.core.models.zoo import ZOO, ZooEntry
from xsteer.errors import DeviceError, ModelSpecError

__all__ = [
    "hub_revision",
    "weights_fingerprint",
    "SPEC_HELP",
    "ZOO",
    "DeviceError",
    "ModelSource",
    "ModelSpecError",
    "ZooEntry",
    "cache_dir",
    "check_gguf",
    "check_placement",
    "default_device",
    "ENV_DTYPE",
    "default_dtype",
    "dtype_tag",
    "encode",
    "eos_ids",
    "has_chat_template",
    "has_sliding_window",
    "load_hf",
    "load_model",
    "model_id",
    "native_attention",
    "blocks_from",
    "parse_spec",
    "prepare_tokenizer",
    "resolve_device",
    "runtime",
    "wrap",
]
