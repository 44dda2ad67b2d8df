"""Reading a config: values parsed to their key's type, unknown tables and keys refused with a suggestion,
overrides ("table.key=value"), and the TOML/JSON files (either format: an old flat file is migrated)."""

from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import math
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence, get_args, get_origin

from .tables import KEYS, PATH_KEYS, TABLES, Config, ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def _suggest(word: str, options: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _coerce(key: str, value: Any) -> Any:
    """Convert a TOML/JSON/CLI value to the key's type, or raise ConfigError."""
    spec = KEYS[key]
    hint, args = spec.type, get_args(spec.type)
    try:
        if spec.choices is not None:
            if str(value) not in spec.choices:
                raise ConfigError(f"config key {key!r}: unknown value {value!r}; choose one of "
                                  f"{', '.join(spec.choices)}")
            return str(value)
        if get_origin(hint) is tuple:
            if isinstance(value, str):
                value = [v for v in value.replace(" ", "").strip("()[]").split(",") if v]
            if isinstance(value, (bool, float, int)) or any(isinstance(v, bool) for v in value):
                raise ValueError
            item = _float if float in args else _int  # tuple[float, float] or tuple[int, ...]
            return tuple(item(v) for v in value)
        if type(None) in args:  # int | None, float | None
            if value is None or (isinstance(value, str) and value.lower() in ("none", "")):
                return None
            base = next(a for a in args if a is not type(None))
            return _int(value) if base is int else _float(value)
        if hint is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if hint is int:
            return _int(value)
        if hint is float:
            return _float(value)
        if not isinstance(value, str):
            raise ValueError
        return value
    except (TypeError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        name = getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
        raise ConfigError(f"config key {key!r}: cannot read {value!r} as {name}") from None


def _int(v: Any) -> int:
    if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()):
        raise ValueError
    if isinstance(v, str):
        return int(v.strip())
    if not isinstance(v, (int, float)):
        raise ValueError
    return int(v)


def _float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        raise ValueError
    return float(v)


def _flatten(d: Mapping[str, Any], where: str) -> dict[str, Any]:
    """A nested dict (tables) and/or dotted keys -> {"table.key": value}; unknown tables/keys raise."""
    flat: dict[str, Any] = {}
    for k, v in d.items():
        if not isinstance(k, str):
            raise ConfigError(f"config keys must be strings, got {k!r} in {where}")
        if "." in k:
            flat[k] = v
        elif k in TABLES:
            if not isinstance(v, Mapping):
                raise ConfigError(f"config table {k!r} in {where} must be a table of keys, got {v!r}")
            flat.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        else:
            raise ConfigError(f"unknown config table {k!r} in {where}{_suggest(k, list(TABLES))}")
    for k in flat:
        if k not in KEYS:
            table = k.split(".", 1)[0]
            if table not in TABLES:
                raise ConfigError(f"unknown config table {table!r} in {where}{_suggest(table, list(TABLES))}")
            raise ConfigError(f"unknown config key {k!r} in {where}{_suggest(k, list(KEYS))}")
    return flat


def from_dict(d: Mapping[str, Any], where: str = "config", base: Config | None = None) -> Config:
    """A Config from a (possibly partial) nested dict over ``base`` (default: the defaults). Values are
    type-checked; cross-key checks happen in ``Config.validate``."""
    cfg = copy.deepcopy(base) if base is not None else Config()
    for k, v in _flatten(d, where).items():
        table, name = k.split(".", 1)
        setattr(getattr(cfg, table), name, _coerce(k, v))
    return cfg


def set_key(cfg: Config, key: str, value: Any, where: str = "the command line") -> Config:
    """A copy of cfg with ``key`` ("table.name") set; string values are parsed as the key's type."""
    return from_dict({key: value}, where=where, base=cfg)


def apply_overrides(cfg: Config, items: Sequence[str] | Mapping[str, Any] | None,
                    where: str = "the command line") -> Config:
    """A copy of cfg with overrides: "table.key=value" strings (``--set``) or a {"table.key": value} mapping."""
    if not items:
        return copy.deepcopy(cfg)
    if isinstance(items, Mapping):
        return from_dict(items, where=where, base=cfg)
    d: dict[str, Any] = {}
    for kv in items:
        if "=" not in kv:
            raise ConfigError(f"an override needs the form table.key=value, got {kv!r}")
        k, v = kv.split("=", 1)
        k = k.strip()
        if "." not in k:
            raise ConfigError(f"an override needs a table-qualified key like net.channels, got {k!r}"
                              f"{_suggest_dotted(k)}")
        d[k] = v.strip()
    return from_dict(d, where=where, base=cfg)


def overrides_set(overrides: Sequence[str] | Mapping[str, Any] | None, prefix: str) -> bool:
    """Whether the overrides set a key starting with ``prefix`` ("log.out", "path.")."""
    if not overrides:
        return False
    if isinstance(overrides, Mapping):
        table, _, key = prefix.partition(".")
        nested = overrides.get(table)
        return any(str(k).startswith(prefix) for k in overrides) or (
            isinstance(nested, Mapping) and any(str(k).startswith(key) for k in nested))
    return any(kv.split("=", 1)[0].strip().startswith(prefix) for kv in overrides)


def _suggest_dotted(name: str) -> str:
    hits = [k for k in KEYS if k.split(".", 1)[1] == name]
    return f" (did you mean {hits[0]!r}?)" if hits else _suggest(name, list(KEYS))


def to_dict(cfg: Config) -> dict[str, Any]:
    """The nested dict of tables (tuples become lists: JSON-able)."""
    d = dataclasses.asdict(cfg)
    return {t: {k: list(v) if isinstance(v, tuple) else v for k, v in tab.items()} for t, tab in d.items()}


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf"))
    if isinstance(v, int):
        return str(v)
    if isinstance(v, (tuple, list)):
        return f"[{', '.join(_toml_value(x) for x in v)}]"
    return json.dumps(v)


def to_toml(cfg: Config) -> str:
    """The config as TOML tables (None values are left out: they mean the default)."""
    lines: list[str] = []
    for table, tab in to_dict(cfg).items():
        if table == "consistency" and cfg.objective.prediction != "consistency":
            continue  # read only for consistency models (and all at their defaults otherwise, in a valid config)
        lines.append(f"[{table}]")
        for k, v in tab.items():
            # [path]: only the keys of its kind (the others are at their defaults in a valid config)
            skip = table == "path" and k != "kind" and k not in PATH_KEYS.get(tab["kind"], ()) \
                and v == KEYS[f"path.{k}"].default
            if v is not None and not skip:
                lines.append(f"{k} = {_toml_value(v)}")
        lines.append("")
    return "\n".join(lines)


def load_config(path: str | Path) -> dict[str, Any]:
    """Read a TOML or JSON config file into a nested dict. A file in the old flat format (keys at the top
    level, optionally in a [train] table) is migrated with ``migrate_flat``."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        d = json.loads(p.read_text()) if p.suffix == ".json" else tomllib.loads(p.read_text())
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot parse {str(p)!r}: {str(e).splitlines()[0]}") from None
    if not isinstance(d, dict):
        raise ConfigError(f"{str(p)!r} must hold tables of config keys")
    return normalise(d, where=str(p))


def is_flat(d: Mapping[str, Any]) -> bool:
    """True for the pre-redesign format: scalar keys at the top level (or all of them in a [train] table)."""
    if set(d) == {"train"} and isinstance(d["train"], Mapping):
        return True
    return any(not isinstance(v, Mapping) and "." not in k for k, v in d.items())


def normalise(d: Mapping[str, Any], where: str = "config") -> dict[str, Any]:
    """A stored or written config dict in either format -> the nested format."""
    if is_flat(d):
        flat = d["train"] if set(d) == {"train"} else d
        tables = [k for k, v in flat.items() if isinstance(v, Mapping)]
        if tables:
            raise ConfigError(f"{where} mixes the old flat format with tables ({tables[0]!r}); use tables only")
        from .migrate import migrate_flat

        return migrate_flat(flat, where)
    return dict(d)
