"""The errors xsteer raises on purpose.

Every error a user can cause (a bad spec, file, option or config) is an :class:`XsteerError`. The CLI turns
those, and only those, into one clear line; anything else is a bug and keeps its traceback. Each subclass
also derives from the built-in exception a caller would expect (``ValueError`` or ``FileNotFoundError``),
so ``except ValueError`` keeps working.
"""

from __future__ import annotations


class XsteerError(Exception):
    """Base of every error xsteer raises on purpose (bad input, not a bug)."""


class InputError(XsteerError, ValueError):
    """An argument, option or file content that xsteer cannot use; the message says what to change."""


class DataNotFoundError(XsteerError, FileNotFoundError):
    """A dataset split, file or folder that is not where it was looked for."""


class ModelSpecError(InputError):
    """A model spec names nothing loadable."""


class DeviceError(ModelSpecError):
    """A device that does not exist on this machine, or a model that is not where it was asked to be."""


class VectorFileError(InputError):
    """A vector file or vector set is malformed, or does not fit the model it is applied to."""


class TransferError(InputError):
    """A map does not fit the models or vectors it is used with."""


class ConfigError(InputError):
    """A config is malformed; the message names the key."""


class WriteError(XsteerError, OSError):
    """An output that could not be written (a full disk, a read-only folder); the old file, if any, is kept."""


class NormConventionError(InputError):
    """Vectors under different norm conventions were put on one λ grid, where λ would mean different things."""


__all__ = [
    "ConfigError",
    "DataNotFoundError",
    "DeviceError",
    "InputError",
    "ModelSpecError",
    "NormConventionError",
    "TransferError",
    "VectorFileError",
    "WriteError",
    "XsteerError",
]


class ModelCheckError(XsteerError):
    """A loaded model fails a check that steering relies on (:mod:`xsteer.core.models.check`)."""
