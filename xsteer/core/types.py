"""What xsteer needs of a model: the protocol every function that runs one is written against.

A TransformerLens ``TransformerBridge`` (what :func:`xsteer.core.models.load_model` returns) satisfies it, and so
does any object with the same small surface — a config with ``n_layers``, ``d_model`` and ``model_name``, a
tokenizer, ``hooks()`` for forward hooks by name, parameters, and a forward call.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any, Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class HookedModel(Protocol):
    cfg: Any  # n_layers, d_model, model_name (n_ctx when known)
    tokenizer: Any

    def hooks(
        self,
        fwd_hooks: Any = ...,
        bwd_hooks: Any = ...,
        reset_hooks_end: bool = ...,
        clear_contexts: bool = ...,
    ) -> AbstractContextManager[Any]: ...

    def parameters(self, recurse: bool = ...) -> Iterator[Tensor]: ...

    def __call__(self, *args: Any, **kwargs: Any) -> Any: ...


__all__ = ["HookedModel"]
