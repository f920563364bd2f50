"""Interop with the tools steering researchers use around xsteer.

* :mod:`~xsteer.interop.gguf`: llama.cpp / repeng control vectors (GGUF), written and read.
* :mod:`~xsteer.interop.lmeval`: lm-evaluation-harness ``steered`` files (``.pt``), written and read.
* :mod:`~xsteer.interop.hf`: any model spec as a local Hugging Face directory (what lm-eval loads).
* :mod:`~xsteer.interop.shapes`: the shape of a model spec without loading it (what foreign vector files are
  checked against) and its llama.cpp architecture.

Layer convention everywhere: xsteer layer L (``blocks.L.hook_resid_post``) = the output of Hugging Face
``model.layers[L]`` = llama.cpp / repeng ``direction.L`` = lm-eval hook point ``layers.L``.
"""

from xsteer.interop.gguf import export_gguf, load_gguf, read_gguf_control_vector
from xsteer.interop.hf import export_model, lmeval_model_args
from xsteer.interop.lmeval import export_lmeval, load_lmeval
from xsteer.interop.shapes import ModelShape, infer_model_hint, model_shape

__all__ = [
    "ModelShape",
    "export_gguf",
    "export_lmeval",
    "export_model",
    "infer_model_hint",
    "lmeval_model_args",
    "load_gguf",
    "load_lmeval",
    "model_shape",
    "read_gguf_control_vector",
]
