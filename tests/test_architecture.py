"""The layout's rules, checked on the source: which package may import which, and where the framework
internals and the heavy app-only dependencies are allowed.

core -> nothing else of xsteer; tasks -> core; extraction -> core, tasks; transfer -> core, tasks;
evaluation -> core, tasks, extraction, transfer; interop -> core, tasks; app -> anything.
Only app imports click, yaml or ray; only core/models/backend.py touches TransformerLens or HF internals.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "xsteer"

ALLOWED = {
    "core": {"core"},
    "tasks": {"tasks", "core"},
    "extraction": {"extraction", "core", "tasks"},
    "transfer": {"transfer", "core", "tasks"},
    "evaluation": {"evaluation", "core", "tasks", "extraction", "transfer"},
    "interop": {"interop", "core", "tasks"},
    "app": {"app", "core", "tasks", "extraction", "transfer", "evaluation", "interop"},
}
APP_ONLY = {"click", "yaml", "ray"}
INTERNALS = (
    "original_model",
    "original_component",
    "_attn_implementation",
    "hf_quantizer",
    "boot_transformers",
)
BACKEND = ROOT / "core" / "models" / "backend.py"


def _modules() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if p.parent != ROOT or p.name not in ("__init__.py",))


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def _package(path: Path) -> str | None:
    rel = path.relative_to(ROOT).parts
    return rel[0] if len(rel) > 1 else None


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_follow_the_layers(path: Path) -> None:
    package = _package(path)
    for name in _imports(path):
        parts = name.split(".")
        if parts[0] == "xsteer" and len(parts) > 1 and parts[1] != "errors" and package is not None:
            assert parts[1] in ALLOWED[package], f"{path.relative_to(ROOT)} ({package}) imports {name}"
        if parts[0] in APP_ONLY:
            assert package == "app", f"{path.relative_to(ROOT)} imports {name}; only xsteer.app may"
        if parts[0] == "transformer_lens":
            assert path == BACKEND, f"{path.relative_to(ROOT)} imports transformer_lens; only the backend may"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_framework_internals_only_in_the_backend(path: Path) -> None:
    if path == BACKEND:
        return
    tree = ast.parse(path.read_text(encoding="utf-8"))
    used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    used |= {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    assert not used & set(INTERNALS), f"{path.relative_to(ROOT)} touches {sorted(used & set(INTERNALS))}"


def test_every_package_has_a_rule() -> None:
    packages = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages == set(ALLOWED)


def test_public_api_is_small_and_resolves() -> None:
    import xsteer

    assert 10 <= len(xsteer.__all__) <= 20 and sorted(xsteer.__all__) == sorted(xsteer._API)
    for name in xsteer.__all__:
        assert getattr(xsteer, name) is not None, name


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_imports(path: Path, modules: set[str]) -> set[str]:
    """The xsteer modules a module imports when it runs (at load or lazily), not those named for types only."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
        for stmt in node.body
        for n in ast.walk(stmt)
    }
    out = set()
    for node in ast.walk(tree):
        if id(node) in typing_only or not isinstance(node, ast.ImportFrom) or node.level or not node.module:
            continue
        for alias in node.names:  # `from xsteer.a import b` imports module xsteer.a.b when it is one
            out.add(
                f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
            )
    return out & modules


# Pairs of modules that import each other (at load or lazily). The one left is by design: a method that
# delegates to its module's function (`SteeringVectors.apply` -> `inject.steer`, the steering-vectors shape).
# A new pair fails this test: break it (move what both need into the lower one, or a module below both).
KNOWN_CIRCLES = {frozenset({"xsteer.core.inject", "xsteer.core.vectors"})}


def test_no_new_import_circles() -> None:
    paths = {_module_name(p): p for p in ROOT.rglob("*.py")}
    # A package's __init__ re-exports its modules, so edges into it are not circles of the design's making.
    edges = {
        m: {t for t in _runtime_imports(p, set(paths)) if t != m and paths[t].name != "__init__.py"}
        for m, p in paths.items()
        if p.name != "__init__.py"
    }
    circles = {frozenset({a, b}) for a, targets in edges.items() for b in targets if a in edges.get(b, set())}
    assert circles == KNOWN_CIRCLES, f"new: {sorted(map(sorted, circles - KNOWN_CIRCLES))}"
