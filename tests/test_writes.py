"""Writes that cannot lie, loads that cannot run code, and `xsteer info` on every file xsteer writes.

A full disk is injected (OSError ENOSPC from the writer, or a writer that loses the error and leaves a short
file): every writer must then fail with one line naming the file, keep the old file byte for byte, and leave
no temp file behind.
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from xsteer.app.cli import main
from xsteer.core import io as xio
from xsteer.core.vectors import SteeringVectors
from xsteer.errors import WriteError

ROOT = Path(__file__).resolve().parents[1]


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def vectors(n_layers=6, d=16, model_id="smollm2-135m", seed=0) -> SteeringVectors:
    v = torch.randn(n_layers, d, generator=torch.Generator().manual_seed(seed))
    return SteeringVectors(v / v.norm(dim=-1, keepdim=True), model_id, "pca", tuple(range(1, n_layers)))


def tiny_map():
    from xsteer.transfer.maps import fit_transfer_from_activations

    g = torch.Generator().manual_seed(0)
    xp, yc = torch.randn(6, 200, 16, generator=g), torch.randn(4, 200, 8, generator=g)
    return fit_transfer_from_activations(
        xp, yc, parent_id="smollm2-135m", child_id="C", info={"fit_text": "x"}
    )


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


# Each writer: (name, write(path, version)); version changes the content, so "old kept" is checkable.
def _gguf(path, k):
    from xsteer.interop.gguf import export_gguf

    return export_gguf(vectors(seed=k), path)


def _lmeval(path, k):
    from xsteer.interop.lmeval import export_lmeval

    return export_lmeval(vectors(seed=k), path.with_suffix(".pt"), lam=1.0 + k)


def _map(path, k):
    tmap = tiny_map()
    tmap.info["version"] = k  # a frozen dataclass, but its info dict is the file's header
    return tmap.save(path)


WRITERS = {
    "text": lambda p, k: xio.write_text_atomic(p, f"version {k}\n" * 100),
    "json": lambda p, k: xio.write_json_atomic(p, {"version": k, "rows": list(range(100))}),
    "csv": lambda p, k: xio.write_csv_atomic(p, [{"version": k, "i": i} for i in range(100)]),
    "vectors": lambda p, k: vectors(seed=k).save(p),
    "map": _map,
    "torch": lambda p, k: xio.save_torch({"x": torch.full((64,), float(k))}, p),
    "gguf": _gguf,
    "lmeval": _lmeval,
}


def _target(tmp_path: Path, name: str) -> Path:
    return tmp_path / ("out.pt" if name in ("torch", "lmeval") else f"out.{name}")


def _full_disk_on_fsync(monkeypatch):
    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(xio.os, "fsync", fsync)


@pytest.mark.parametrize("name", list(WRITERS))
def test_enospc_keeps_the_old_file_and_leaves_no_temp(tmp_path, monkeypatch, name):
    path = WRITERS[name](_target(tmp_path, name), 0)
    old = path.read_bytes()
    _full_disk_on_fsync(monkeypatch)
    with pytest.raises(WriteError, match=rf"cannot write {re.escape(str(path))}: No space left on device"):
        WRITERS[name](_target(tmp_path, name), 1)
    assert path.read_bytes() == old
    assert leftovers(tmp_path) == []


def _short_write(monkeypatch, name: str, *, raise_: bool) -> None:
    """The writer's own write call leaves half the file; then ENOSPC, or (a lost error) nothing."""
    import pathlib

    import safetensors.torch
    from gguf import GGUFWriter

    owner, attr = {
        "text": (pathlib.Path, "write_bytes"),
        "json": (pathlib.Path, "write_bytes"),
        "csv": (pathlib.Path, "write_bytes"),
        "vectors": (safetensors.torch, "save_file"),
        "map": (safetensors.torch, "save_file"),
        "torch": (torch, "save"),
        "lmeval": (torch, "save"),
        "gguf": (GGUFWriter, "write_tensors_to_file"),
    }[name]
    real = getattr(owner, attr)

    def short(*a, **kw):
        out = real(*a, **kw)
        if name == "gguf":
            a[0].flush()
            target = a[0].path
        else:
            target = a[0] if owner is pathlib.Path else a[1]
        os.truncate(target, os.path.getsize(target) // 2)
        if raise_:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return out

    monkeypatch.setattr(owner, attr, short)


@pytest.mark.parametrize("name", list(WRITERS))
@pytest.mark.parametrize("raise_", [True, False], ids=["enospc", "silent"])
def test_short_writes_are_caught_before_the_old_file_is_replaced(tmp_path, monkeypatch, name, raise_):
    path = WRITERS[name](_target(tmp_path, name), 0)
    old = path.read_bytes()
    _short_write(monkeypatch, name, raise_=raise_)
    expect = "No space left on device" if raise_ else "the file on disk is not what was written"
    with pytest.raises(WriteError, match=rf"cannot write {re.escape(str(path))}: {expect}"):
        WRITERS[name](_target(tmp_path, name), 1)
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert leftovers(tmp_path) == []


def test_gguf_export_on_a_full_disk_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch):
    """The reported case: `export --format gguf` printed 'wrote' and exited 0 over a truncated file."""
    from gguf import GGUFWriter

    src = vectors().save(tmp_path / "v.safetensors")
    out = tmp_path / "v.gguf"
    assert run("export", src, "--format", "gguf", "--out", out).exit_code == 0
    old = out.read_bytes()
    for how in ("enospc", "silent"):
        real = GGUFWriter.write_tensors_to_file

        def write_tensors(self, *a, how=how, real=real, **kw):
            if how == "enospc":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real(self, *a, **kw)
            self.flush()
            os.truncate(self.path, os.path.getsize(self.path) - 40)  # numpy's tofile lost the error

        monkeypatch.setattr(GGUFWriter, "write_tensors_to_file", write_tensors)
        res = run("export", src, "--format", "gguf", "--scale", 2, "--out", out)
        monkeypatch.undo()
        assert res.exit_code == 1 and "wrote" not in res.output, res.output
        assert f"cannot write {out}" in res.output and "the old file is kept" in res.output, res.output
        assert len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output, res.output
        assert out.read_bytes() == old and leftovers(tmp_path) == []


def test_records_append_on_a_full_disk_keeps_whole_lines(tmp_path, monkeypatch):
    from xsteer.evaluation.records import RecordStore

    store = RecordStore(tmp_path / "records.jsonl")
    store.append([{"split": "test", "item": "a", "condition": "c", "lam": 0.0, "sample": 0}])
    old = store.path.read_bytes()
    _full_disk_on_fsync(monkeypatch)
    with pytest.raises(WriteError, match="No space left on device"):
        store.append([{"split": "test", "item": "b", "condition": "c", "lam": 0.0, "sample": 0}])
    assert store.path.read_bytes() == old


# ------------------------------------------------------------------ outputs a user cannot write
@pytest.mark.parametrize("target", ["/proc/x.gguf", "/sys/kernel/x.gguf", "/dev/null"])
def test_kernel_filesystems_are_refused(tmp_path, target):
    src = vectors().save(tmp_path / "v.safetensors")
    res = run("export", src, "--format", "gguf", "--out", target)
    assert res.exit_code == 2 and "the kernel's own files" in res.output and "Traceback" not in res.output


@pytest.mark.parametrize(
    "args",
    [
        ["export", "{src}", "--format", "gguf", "--out", "{ro}/v.gguf"],
        ["transfer", "--vectors", "{src}", "--child", "smollm2-135m", "--out", "{ro}/new/t.safetensors"],
        ["evaluate", "--child", "smollm2-135m", "--dataset", "synthetic", "--out", "{ro}/run"],
        ["fidelity", "--parent", "smollm2-135m", "--child", "smollm2-135m", "--out", "{ro}/fid"],
        ["report", "{ro}"],
    ],
    ids=["export", "transfer", "evaluate", "fidelity", "report"],
)
def test_read_only_output_folders_are_one_line_before_any_work(tmp_path, monkeypatch, args):
    ro = tmp_path / "ro"
    ro.mkdir()
    src = vectors().save(tmp_path / "v.safetensors")
    real_access = os.access
    # Tests may run as root, for whom a chmod'ed folder stays writable: ask access() as a user would.
    monkeypatch.setattr(
        os,
        "access",
        lambda p, mode, **kw: (mode & os.W_OK == 0 or Path(p) != ro) and real_access(p, mode, **kw),
    )
    import xsteer.core.models as models

    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("a model was loaded"))
    res = run(*(a.format(src=src, ro=ro) for a in args))
    assert res.exit_code == 2, res.output
    assert f"{ro} is not writable" in res.output and "Traceback" not in res.output, res.output


# ------------------------------------------------------------------ no pickle
def test_every_torch_load_is_weights_only():
    """A .pt file is data; torch.load without weights_only=True would run whatever code a file carries."""
    offenders = []
    for folder in ("xsteer", "analysis", "benchmarks"):
        for py in sorted((ROOT / folder).rglob("*.py")):
            text = py.read_text(encoding="utf-8")
            for m in re.finditer(r"torch\.load\(", text):
                depth, i = 1, m.end()
                while depth and i < len(text):
                    depth += {"(": 1, ")": -1}.get(text[i], 0)
                    i += 1
                call = text[m.start() : i]
                if not re.search(r"weights_only\s*=\s*True", call):
                    line = text.count("\n", 0, m.start()) + 1
                    offenders.append(f"{py.relative_to(ROOT)}:{line}: {call}")
    assert not offenders, "torch.load without weights_only=True:\n" + "\n".join(offenders)


def test_a_pickle_is_refused_in_one_line_naming_the_file(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"layers.1": {"steering_vector": torch.ones(4), "action": "add", "x": Path("/")}}, evil)
    for args in (
        ["import", evil, "--format", "lm-eval", "--out", tmp_path / "v.safetensors"],
        ["info", evil],
        ["similarity", "--acts", evil, "--out", tmp_path / "sim"],
    ):
        res = run(*args)
        assert res.exit_code == 1, res.output
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and str(evil) in lines[0] and "never unpickles" in lines[0], res.output
    assert not (tmp_path / "v.safetensors").exists()


# ------------------------------------------------------------------ xsteer info reads every kind
def test_info_reads_every_file_xsteer_writes(tmp_path):
    from xsteer.interop.gguf import export_gguf
    from xsteer.interop.lmeval import export_lmeval

    sv = vectors()
    sv = sv.replace(
        layer_stats=tuple(
            {"explained_variance": 0.5, "separation": 1.0, "effect_size": 2.0, "mean_diff_norm": 3.0}
            if layer in sv.layers
            else {}
            for layer in range(sv.n_layers)
        )
    )
    tmap = tiny_map()
    files = {
        "extracted": sv.save(tmp_path / "v.safetensors"),
        "transferred": tmap.apply(sv).save(
            tmp_path / "t.safetensors"
        ),  # its stats carry no explained_variance
        "map": tmap.save(tmp_path / "t.map.safetensors"),
        "gguf": export_gguf(sv, tmp_path / "v.gguf"),
        "lm-eval": export_lmeval(sv, tmp_path / "v.pt", lam=4.0),
        "acts": xio.save_torch((torch.randn(2, 5, 16), torch.randn(3, 5, 8)), tmp_path / "p.acts.pt"),
    }
    expect = {
        "extracted": "expl.var",
        "transferred": "parent_layer",
        "map": "transfer map",
        "gguf": "control vector",
        "lm-eval": "lm-eval steering file",
        "acts": "paired activations",
    }
    for kind, path in files.items():
        res = run("info", path)
        assert res.exit_code == 0, f"{kind}: {res.output}"
        assert expect[kind] in res.output, f"{kind}: {res.output}"
    (tmp_path / "junk.bin").write_bytes(b"junk")
    res = run("info", tmp_path / "junk.bin")
    assert res.exit_code == 1 and len(res.output.strip().splitlines()) == 1, res.output
