"""Experiments as configs: one YAML file names parents, children, tasks, pairs, maps, λ grid, controls.

A config is checked completely before any model loads — unknown keys, the type and range of every value,
models, tasks, splits, maps, the λ grid, the device, and that every split a job will read exists — and every
error names the offending key. ``xsteer grid --check`` runs exactly this check, so what it accepts the run
accepts too.
"""

from __future__ import annotations

import types
import typing
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, get_args

from xsteer.core.models import parse_spec, resolve_device
from xsteer.errors import ConfigError, InputError, XsteerError
from xsteer.evaluation.plan import EvalPlan, Positions, check_lambdas, check_mode, check_positions
from xsteer.extraction.methods import METHODS
from xsteer.extraction.pairs import BUILDERS
from xsteer.tasks import SPLITS, get_task, task_names
from xsteer.transfer.layermap import LAYER_MAPS
from xsteer.transfer.maps import DEFAULT_FIT_TEXT
from xsteer.transfer.widthmap import WIDTH_MAPS

NORMS = ("unit", "resid_mean")


@dataclass(frozen=True)
class PairsSpec:
    """Contrastive pairs: which builder, how many, from which split, and the direction method."""

    builder: str = "corrupted_answer"
    n: int = 64
    split: str = "train"
    method: str = "pca"


@dataclass(frozen=True)
class TransferSpec:
    """The parent -> child map and the norm convention that gives λ its meaning."""

    layer_map: str = "proportional"
    width_map: str = "ridge"
    fit_text: str = DEFAULT_FIT_TEXT
    norm: str = "resid_mean"
    mapping: str | None = None


# The evaluation's defaults are EvalPlan's, as for `xsteer evaluate` and xs.evaluate: a key left out of a
# config means what the same option left out means on the command line.
@dataclass(frozen=True)
class DatasetSpec:
    name: str
    mode: str = EvalPlan.mode
    val_items: int = EvalPlan.val_items
    test_items: int | None = EvalPlan.test_items


@dataclass(frozen=True)
class EvalSpec:
    lambdas: tuple[float, ...] = EvalPlan.lambdas
    positions: str = EvalPlan.positions
    shots: int = EvalPlan.shots
    max_new_tokens: int = EvalPlan.max_new_tokens
    batch_size: int = EvalPlan.batch_size


@dataclass(frozen=True)
class ControlsSpec:
    native: bool = True
    random: bool = EvalPlan.random
    self_consistency: bool = EvalPlan.self_consistency


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
    seed: int = EvalPlan.seed
    device: str | None = None

    def eval_plan(self, dataset: str) -> EvalPlan:
        """The evaluation plan of this config's jobs on ``dataset``."""
        d = next(d for d in self.datasets if d.name == dataset)
        return EvalPlan(
            mode=check_mode(d.mode),
            shots=self.eval.shots,
            lambdas=self.eval.lambdas,
            positions=check_positions(self.eval.positions),
            max_new_tokens=self.eval.max_new_tokens,
            seed=self.seed,
            val_items=d.val_items,
            test_items=d.test_items,
            batch_size=self.eval.batch_size,
            random=self.controls.random,
            self_consistency=self.controls.self_consistency,
        )


@dataclass(frozen=True)
class TextSpec:
    """``TASK:SPLIT:N``: the first N texts of a task split (map fits, CKA, residual norms), parsed once."""

    task: str
    split: str
    n: int

    @classmethod
    def parse(cls, text: str, *, minimum: int = 3) -> TextSpec:
        parts = str(text).split(":")
        if len(parts) != 3 or not parts[2].isdigit() or int(parts[2]) < minimum:
            raise InputError(f"expected TASK:SPLIT:N with N >= {minimum}, e.g. gsm8k:train:512; got {text!r}")
        get_task(parts[0])
        if parts[1] not in SPLITS:
            raise InputError(f"unknown split {parts[1]!r} in {text!r}; options: {', '.join(SPLITS)}")
        return cls(parts[0], parts[1], int(parts[2]))

    def __str__(self) -> str:
        return f"{self.task}:{self.split}:{self.n}"


# ---------------------------------------------------------------------------------------------- parsing
def _type_ok(value: Any, hint: Any) -> bool:
    """Whether a YAML value fits a field's annotation (bool is not an int here; an int is a float)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is tuple:
        return isinstance(value, (list, tuple))
    return True  # nested specs are checked by their own _build


def _describe(hint: Any) -> str:
    return (
        str(hint).replace("typing.", "").replace("NoneType", "null").replace("<class '", "").replace("'>", "")
    )


def _build(cls: type, raw: Any, where: str) -> Any:
    """Instantiate a dataclass from a mapping, rejecting unknown keys and ill-typed values by name."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__} {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(raw) - names)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(repr(k) for k in unknown)}; known: {', '.join(sorted(names))}"
        )
    missing = [
        f.name
        for f in fields(cls)
        if f.name not in raw and f.default is MISSING and f.default_factory is MISSING
    ]
    if missing:
        raise ConfigError(f"{where}: missing required key(s) {', '.join(repr(k) for k in missing)}")
    for key, value in raw.items():
        if not _type_ok(value, hints[key]):
            raise ConfigError(
                f"{where}.{key}: expected {_describe(hints[key])}, got {type(value).__name__} {value!r}"
            )
    # YAML gives lists; the specs are frozen and hashable, so sequences become tuples.
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})


class DuplicateKeyError(Exception):
    """A mapping in a YAML file gives one key twice (YAML itself silently keeps the last)."""


def _unique_keys_loader() -> Any:
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                line = key_node.start_mark.line + 1
                if key == "<<" or not isinstance(key, (str, int, float, bool)):
                    continue  # merge keys, and keys SafeLoader itself judges
                if key in seen:
                    raise DuplicateKeyError(
                        f"{line}: key {key!r} is given twice (first on line {seen[key]}); "
                        "YAML would silently keep the last one, so keep only the one you mean"
                    )
                seen[key] = line
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def load_config(path: str | Path, *, check_data: bool = True) -> ExperimentConfig:
    """Read and validate an experiment YAML file (no model is loaded)."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the file is not UTF-8 text; save it as UTF-8") from None
    try:
        raw = yaml.load(text, Loader=_unique_keys_loader())  # noqa: S506 -- a SafeLoader subclass
    except DuplicateKeyError as e:
        raise ConfigError(f"{path}:{e}") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    return parse_config(raw, where=str(path), base=path.parent, check_data=check_data)


def parse_config(
    raw: Any, *, where: str = "config", base: Path | None = None, check_data: bool = True
) -> ExperimentConfig:
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
        if not isinstance(raw[key], list) or not raw[key] or not all(isinstance(m, str) for m in raw[key]):
            raise ConfigError(f"{where}: {key} must be a non-empty list of model specs (strings)")
        raw[key] = tuple(raw[key])
    if not isinstance(raw["datasets"], list) or not raw["datasets"]:
        raise ConfigError(f"{where}: datasets must be a non-empty list")
    raw["datasets"] = tuple(
        _build(DatasetSpec, {"name": d} if isinstance(d, str) else d, f"{where}: datasets[{i}]")
        for i, d in enumerate(raw["datasets"])
    )
    if "eval" in raw:
        raw["eval"] = EvalSpec(**{**raw["eval"].__dict__, "lambdas": tuple(raw["eval"].lambdas)})
    if raw.get("data_dir") and base is not None and not Path(str(raw["data_dir"])).is_absolute():
        raw["data_dir"] = str((base / str(raw["data_dir"])).resolve())
    cfg = _build(ExperimentConfig, raw, where)
    validate(cfg, where=where, check_data=check_data)
    return cfg


def _choice(where: str, value: str, options: Any) -> None:
    if value not in options:
        raise ConfigError(f"{where}: unknown {value!r}; options: {', '.join(options)}")


def _at_least(where: str, value: int | None, minimum: int) -> None:
    if value is not None and value < minimum:
        raise ConfigError(f"{where}: must be at least {minimum}, got {value}")


def validate(cfg: ExperimentConfig, *, where: str = "config", check_data: bool = True) -> None:
    """Everything a run would reject, rejected now, naming the key."""
    if not cfg.name.strip():
        raise ConfigError(f"{where}: name must be a non-empty string")
    for key, specs in (("parents", cfg.parents), ("children", cfg.children)):
        for i, spec in enumerate(specs):
            try:
                parse_spec(spec)
            except XsteerError as e:
                raise ConfigError(f"{where}: {key}[{i}]: {e}") from None
    try:
        resolve_device(cfg.device)
    except XsteerError as e:
        raise ConfigError(f"{where}: device: {e}") from None
    try:
        check_lambdas(list(cfg.eval.lambdas), where="eval.lambdas")
    except InputError as e:
        raise ConfigError(f"{where}: {e}") from None
    _choice(f"{where}: eval.positions", cfg.eval.positions, get_args(Positions))
    _at_least(f"{where}: eval.shots", cfg.eval.shots, 0)
    _at_least(f"{where}: eval.max_new_tokens", cfg.eval.max_new_tokens, 1)
    _at_least(f"{where}: eval.batch_size", cfg.eval.batch_size, 1)
    _choice(f"{where}: pairs.builder", cfg.pairs.builder, BUILDERS)
    _choice(f"{where}: pairs.method", cfg.pairs.method, METHODS)
    _choice(f"{where}: pairs.split", cfg.pairs.split, SPLITS)
    _at_least(f"{where}: pairs.n", cfg.pairs.n, METHODS[cfg.pairs.method].min_pairs)
    _choice(f"{where}: transfer.layer_map", cfg.transfer.layer_map, LAYER_MAPS)
    _choice(f"{where}: transfer.width_map", cfg.transfer.width_map, WIDTH_MAPS)
    _choice(f"{where}: transfer.norm", cfg.transfer.norm, NORMS)
    needs = LAYER_MAPS[cfg.transfer.layer_map].needs
    if needs == "mapping" and not cfg.transfer.mapping:
        raise ConfigError(
            f"{where}: transfer.mapping: layer map 'explicit' needs a mapping such as '0:0,1:2,-1:-1'"
        )
    if needs == "cka_diff":
        raise ConfigError(
            f"{where}: transfer.layer_map: 'cka_diff' needs a concept's pairs; use it in `xsteer fidelity`"
        )
    try:
        fit = TextSpec.parse(cfg.transfer.fit_text)
    except InputError as e:
        raise ConfigError(f"{where}: transfer.fit_text: {e}") from None
    for i, d in enumerate(cfg.datasets):
        _choice(f"{where}: datasets[{i}].name", d.name, task_names())
        modes = get_task(d.name).modes
        if d.mode not in modes:
            raise ConfigError(
                f"{where}: datasets[{i}].mode: {d.mode!r} is not available for {d.name!r}; options: {', '.join(modes)}"
            )
        _at_least(f"{where}: datasets[{i}].val_items", d.val_items, 0)
        _at_least(f"{where}: datasets[{i}].test_items", d.test_items, 1)
        try:  # whatever else the job's plan would refuse, refused now
            cfg.eval_plan(d.name)
        except InputError as e:
            raise ConfigError(f"{where}: datasets[{i}] with eval: {e}") from None
    _at_least(f"{where}: seed", cfg.seed, 0)
    if check_data:
        _check_splits(cfg, fit, where)


def _check_splits(cfg: ExperimentConfig, fit: TextSpec, where: str) -> None:
    """Every split a job will read must exist (offline: its file; cheap, nothing is tokenized)."""
    needed = {
        (d.name, s)
        for d in cfg.datasets
        for s in (cfg.pairs.split, "test") + (("validation",) if d.val_items else ())
    }
    needed.add((fit.task, fit.split))
    for name, split in sorted(needed):
        try:
            get_task(name).load(split, data_dir=cfg.data_dir, limit=1, seed=cfg.seed)
        except XsteerError as e:
            key = "transfer.fit_text" if (name, split) == (fit.task, fit.split) else "datasets"
            raise ConfigError(
                f"{where}: {key}: dataset {name!r} split {split!r} is not available: {e}"
            ) from None
