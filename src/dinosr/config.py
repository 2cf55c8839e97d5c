"""The run configuration: frozen, self-validating dataclasses read from TOML.

A config file has one table per section (``[model]``, ``[masking]``, ``[data]``, ``[optim]``,
``[run]``); every key must be a field of that section's dataclass. ``--set section.key=value``
overrides are parsed with the field's type. Unknown sections or keys, values of the wrong
type and values out of range raise :class:`ConfigError` naming the offending key.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from dinosr.data.config import DataConfig
from dinosr.errors import ConfigError
from dinosr.fileio import atomic_write_text
from dinosr.model.config import MaskingConfig, ModelConfig
from dinosr.train.config import OptimConfig, RunConfig


@dataclass(frozen=True)
class Config:
    """Everything a pretraining run needs."""

    model: ModelConfig = field(default_factory=ModelConfig)
    masking: MaskingConfig = field(default_factory=MaskingConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def __post_init__(self) -> None:
        check_frame_lengths(self.model, self.data)

    def to_dict(self) -> dict[str, Any]:
        return to_plain(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "<dict>") -> Config:
        return from_plain(cls, data, source=source)


def check_frame_lengths(model: ModelConfig, data: DataConfig) -> None:
    """Cross-section check of every run config: ``data.min_sample_size`` and ``data.max_tokens`` hold at
    least one frame of the model's front end (shorter audio would reach the conv layers as "kernel size
    can't be greater than actual input size" instead of a clear error)."""
    frame = model.receptive_field
    for key in ("min_sample_size", "max_tokens"):
        value = getattr(data, key)
        if value < frame:
            raise ConfigError(
                f"data.{key} = {value} is shorter than one frame of the model "
                f"(receptive field {frame} samples); use at least {frame}"
            )


def to_plain(obj: Any) -> Any:
    """Dataclass tree -> JSON/TOML-friendly dicts and lists (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (tuple, list)):
        return [to_plain(v) for v in obj]
    return obj


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """Check/convert ``value`` against the annotation ``tp``; raise ConfigError on mismatch."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {list(get_args(tp))}")
        return value
    if origin in (typing.Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(option, value, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} items, got {len(value)}")
        return tuple(_coerce(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {value!r}")
        return from_plain(tp, value, source=where)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported field type {tp!r}")


def _drop_removed_options(cls: type, data: dict[str, Any], source: str) -> dict[str, Any]:
    """Drop the options ``cls.REMOVED_OPTIONS`` lists when they hold a value meaning "off" (old run configs).

    ``REMOVED_OPTIONS = {name: allowed values, or None for any}``; another value is a ConfigError.
    """
    removed = getattr(cls, "REMOVED_OPTIONS", {})
    for key in sorted(set(data) & set(removed)):
        allowed = removed[key]
        if allowed is not None and data[key] not in allowed:
            raise ConfigError(
                f"{source}.{key} = {data[key]!r}: this option was removed (research/small_batch.md); "
                f"only {list(allowed)} (its old default) is accepted from older configs"
            )
    return {k: v for k, v in data.items() if k not in removed}


def from_plain(cls: type, data: dict[str, Any], *, source: str) -> Any:
    """Build dataclass ``cls`` from a dict, rejecting unknown keys and bad types."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    data = _drop_removed_options(cls, data, source)
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {unknown} for [{cls.__name__}]; valid keys: {sorted(names)}"
        )
    kwargs = {k: _coerce(hints[k], v, f"{source}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{source}: {err}") from err


def _parse_override_value(text: str) -> Any:
    """Parse the right-hand side of ``--set key=value`` as a TOML value, else as a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(data: dict[str, Any], overrides: list[str], *, cls: type = Config) -> dict[str, Any]:
    """Apply ``section.key=value`` strings to a nested dict (a new dict is returned); ``cls`` is the
    top-level config class whose sections are valid (fine-tuning: ``FinetuneConfig``)."""
    result = json.loads(json.dumps(data))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        key, text = item.split("=", 1)
        parts = key.strip().split(".")
        if len(parts) != 2 or not all(parts):
            raise ConfigError(f"--set {item!r}: the key must look like section.key, e.g. optim.lr")
        section, name = parts
        if section not in {f.name for f in dataclasses.fields(cls)}:
            raise ConfigError(f"--set {item!r}: unknown section {section!r}")
        result.setdefault(section, {})[name] = _parse_override_value(text.strip())
    return result


def add_set_option(parser: Any, example: str) -> None:
    """The repeatable ``--set SECTION.KEY=VALUE`` option of the commands that load a config
    (``args.overrides``, for :func:`load_config`); ``example`` ends its help text."""
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help=f"override one config value (repeatable), e.g. {example}",
    )


def load_config(
    path: str | Path | None = None, overrides: list[str] | None = None, *, cls: type = Config
) -> Any:
    """Read a TOML config (or start from defaults when ``path`` is None) and apply overrides.

    ``cls`` is the top-level config class (default `Config`; fine-tuning: ``FinetuneConfig``)."""
    data: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: not valid TOML: {err}") from err
    data = apply_overrides(data, overrides or [], cls=cls)
    return from_plain(cls, data, source=source)


def save_config(config: Config, path: str | Path) -> None:
    """Write ``config`` as JSON, atomically (a resumed run rewrites its workdir's config.json)."""
    atomic_write_text(path, json.dumps(config.to_dict(), indent=2) + "\n")
