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


class ModelConfig(Protocol):
    """What xsteer reads of a model's config. ``n_ctx`` is read with ``getattr`` where a context length is
    checked: bridges of some architectures do not know it. Read-only here, so a config whose fields are plain
    attributes (TransformerBridge's) or properties both satisfy it."""

    @property
    def n_layers(self) -> int: ...

    @property
    def d_model(self) -> int: ...

    @property
    def model_name(self) -> str: ...


@runtime_checkable
class HookedModel(Protocol):
    cfg: ModelConfig
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


__all__ = ["HookedModel", "ModelConfig"]
