"""Experiments as configs: one YAML file names parents, children, datasets, pairs, maps, λ grid, controls.

A config is checked completely — unknown keys, unknown models, datasets, splits, an empty or
non-finite λ grid — before any model loads, and every error names the offending key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from xsteer.core.models import ModelSpecError, parse_spec
from xsteer.extraction.pairs import BUILDERS
from xsteer.tasks.data import DATASETS, SPLITS
from xsteer.transfer.layermap import LAYER_MAPS
from xsteer.transfer.widthmap import WIDTH_MAPS


class ConfigError(ValueError):
    """A config is malformed; the message names the key."""


@dataclass(frozen=True)
class PairsSpec:
    builder: str = "corrupted_answer"
    n: int = 64
    split: str = "train"
    method: str = "pca"


@dataclass(frozen=True)
class TransferSpec:
    layer_map: str = "proportional"
    width_map: str = "ridge"
    fit_text: str = "gsm8k:train:384"
    norm: str = "resid_mean"
    mapping: str | None = None


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    mode: str = "generate"
    val_items: int = 32
    test_items: int | None = None


@dataclass(frozen=True)
class EvalSpec:
    lambdas: tuple[float, ...] = (0.01, 0.03, 0.1)
    positions: str = "generated"
    shots: int = 5
    max_new_tokens: int = 256
    batch_size: int = 32


@dataclass(frozen=True)
class ControlsSpec:
    native: bool = True
    random: bool = True
    self_consistency: bool = True


@dataclass(frozen=True)
class ExperimentConfig:
    name: str
    parents: tuple[str, ...]
    children: tuple[str, ...]
    datasets: tuple[DatasetSpec, ...]
    data_dir: str | None = None
    pairs: PairsSpec = field(default_factory=PairsSpec)
    transfer: TransferSpec = field(default_factory=TransferSpec)
    eval: EvalSpec = field(default_factory=EvalSpec)
    controls: ControlsSpec = field(default_factory=ControlsSpec)
    seed: int = 0
    device: str | None = None


def _build(cls: type, raw: Any, where: str) -> Any:
    """Instantiate a dataclass from a mapping, rejecting unknown keys by name."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(repr(k) for k in unknown)}; known: {', '.join(sorted(names))}")
    try:
        return cls(**raw)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from e


def load_config(path: str | Path, *, check_data: bool = True) -> ExperimentConfig:
    """Read and validate an experiment YAML file (no model is loaded)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    return parse_config(raw, where=str(path), base=path.parent, check_data=check_data)


def parse_config(raw: Any, *, where: str = "config", base: Path | None = None, check_data: bool = True) -> ExperimentConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level")
    raw = dict(raw)
    for key in ("name", "parents", "children", "datasets"):
        if key not in raw:
            raise ConfigError(f"{where}: missing required key {key!r}")
    sub = {"pairs": PairsSpec, "transfer": TransferSpec, "eval": EvalSpec, "controls": ControlsSpec}
    for key, cls in sub.items():
        if key in raw:
            raw[key] = _build(cls, raw[key] or {}, f"{where}: {key}")
    for key in ("parents", "children"):
        if not isinstance(raw[key], list) or not raw[key]:
            raise ConfigError(f"{where}: {key} must be a non-empty list of model specs")
        raw[key] = tuple(str(m) for m in raw[key])
    if not isinstance(raw["datasets"], list) or not raw["datasets"]:
        raise ConfigError(f"{where}: datasets must be a non-empty list")
    raw["datasets"] = tuple(
        _build(DatasetSpec, {"name": d} if isinstance(d, str) else d, f"{where}: datasets[{i}]") for i, d in enumerate(raw["datasets"])
    )
    if "eval" in raw:
        raw["eval"] = EvalSpec(**{**raw["eval"].__dict__, "lambdas": tuple(raw["eval"].lambdas)})
    if raw.get("data_dir") and base is not None and not Path(raw["data_dir"]).is_absolute():
        raw["data_dir"] = str((base / raw["data_dir"]).resolve())
    cfg = _build(ExperimentConfig, raw, where)
    validate(cfg, where=where, check_data=check_data)
    return cfg


def validate(cfg: ExperimentConfig, *, where: str = "config", check_data: bool = True) -> None:
    for key, specs in (("parents", cfg.parents), ("children", cfg.children)):
        for i, spec in enumerate(specs):
            try:
                parse_spec(spec)
            except ModelSpecError as e:
                raise ConfigError(f"{where}: {key}[{i}]: {e}") from e
    lams = cfg.eval.lambdas
    if not lams:
        raise ConfigError(f"{where}: eval.lambdas: the λ grid is empty")
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in lams):
        raise ConfigError(f"{where}: eval.lambdas: every λ must be a finite number, got {list(lams)}")
    if cfg.eval.positions not in ("all", "generated"):
        raise ConfigError(f"{where}: eval.positions: expected 'all' or 'generated', got {cfg.eval.positions!r}")
    if cfg.pairs.builder not in BUILDERS:
        raise ConfigError(f"{where}: pairs.builder: unknown {cfg.pairs.builder!r}; options: {', '.join(BUILDERS)}")
    if cfg.pairs.method not in ("pca", "pca_uncentred", "mean_diff"):
        raise ConfigError(f"{where}: pairs.method: unknown {cfg.pairs.method!r}; options: pca, pca_uncentred, mean_diff")
    if cfg.pairs.split not in SPLITS:
        raise ConfigError(f"{where}: pairs.split: unknown {cfg.pairs.split!r}; options: {', '.join(SPLITS)}")
    if cfg.transfer.layer_map not in LAYER_MAPS:
        raise ConfigError(f"{where}: transfer.layer_map: unknown {cfg.transfer.layer_map!r}; options: {', '.join(LAYER_MAPS)}")
    if cfg.transfer.width_map not in WIDTH_MAPS:
        raise ConfigError(f"{where}: transfer.width_map: unknown {cfg.transfer.width_map!r}; options: {', '.join(WIDTH_MAPS)}")
    if cfg.transfer.norm not in ("unit", "resid_mean"):
        raise ConfigError(f"{where}: transfer.norm: expected 'unit' or 'resid_mean', got {cfg.transfer.norm!r}")
    fit = cfg.transfer.fit_text.split(":")
    if len(fit) != 3 or fit[0] not in DATASETS or fit[1] not in SPLITS or not fit[2].isdigit():
        raise ConfigError(f"{where}: transfer.fit_text: expected DATASET:SPLIT:N, got {cfg.transfer.fit_text!r}")
    for i, d in enumerate(cfg.datasets):
        if d.name not in DATASETS:
            raise ConfigError(f"{where}: datasets[{i}].name: unknown dataset {d.name!r}; options: {', '.join(DATASETS)}")
        if d.mode not in ("generate", "loglik"):
            raise ConfigError(f"{where}: datasets[{i}].mode: expected 'generate' or 'loglik', got {d.mode!r}")
        if d.mode == "loglik" and d.name != "arc_challenge":
            raise ConfigError(f"{where}: datasets[{i}].mode: 'loglik' is for arc_challenge only")
    if check_data:
        _check_splits(cfg, where)


def _check_splits(cfg: ExperimentConfig, where: str) -> None:
    """Every split a job will read must exist (offline: its file; cheap, nothing is tokenized)."""
    from xsteer.tasks.data import load_examples

    needed = {(d.name, s) for d in cfg.datasets for s in (cfg.pairs.split, "test") + (("validation",) if d.val_items else ())}
    fit_ds, fit_split, _ = cfg.transfer.fit_text.split(":")
    needed.add((fit_ds, fit_split))
    for _i, (name, split) in enumerate(sorted(needed)):
        try:
            load_examples(name, split, data_dir=cfg.data_dir, limit=1, seed=cfg.seed)
        except (FileNotFoundError, ValueError, RuntimeError) as e:
            key = "transfer.fit_text" if (name, split) == (fit_ds, fit_split) else "datasets"
            raise ConfigError(f"{where}: {key}: dataset {name!r} split {split!r} is not available: {e}") from e
