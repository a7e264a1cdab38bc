"""Spec files: TOML into a SweepSpec, with flags overriding the file field by field.

A spec file holds SweepSpec's fields at the top level, under the same names as the flags of
`cce-bench sweep` (with _ for -). A spec is named by a path, or by a shipped name such as
`paper/ml-1m` (sweeps/paper/ml-1m.toml, installed with the package). Without a `name` field,
the sweep is named after the file.
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

from cce_bench.errors import ConfigError

from .spec import SweepSpec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10 (tomli is a dependency there)
    import tomli as tomllib

SHIPPED = Path(__file__).resolve().parent
# Fields under the name they had before, still read: `out` became `results` (--results).
OLD_FIELDS = {"out": "results"}


def shipped_specs() -> list[str]:
    """Names of the specs that ship with cce-bench, e.g. 'paper/ml-1m'."""
    return sorted(str(p.relative_to(SHIPPED).with_suffix(""))
                  for p in SHIPPED.glob("*/*.toml"))


def find_spec(source: str | Path) -> Path:
    """The file for a path or a shipped name ('paper/ml-1m' or 'paper/ml-1m.toml')."""
    path = Path(source)
    if path.is_file():
        return path
    name = str(source).removesuffix(".toml")
    shipped = SHIPPED / f"{name}.toml"
    if name and not path.is_absolute() and shipped.is_file():
        return shipped
    known = shipped_specs()
    close = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    raise ConfigError(f"no spec file '{source}'; {hint}give a path to a .toml file or a shipped "
                      f"spec: {', '.join(known)}")


def read_spec_file(source: str | Path) -> dict:
    """The fields of a spec file, unchecked (check them with `load_spec`)."""
    path = find_spec(source)
    try:
        with open(path, "rb") as f:
            fields = tomllib.load(f)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: not valid TOML: {err}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text file; a spec is TOML (see "
                          "sweeps/paper/*.toml)") from None
    except OSError as err:
        raise ConfigError(f"cannot read spec {path}: {err.strerror}") from None
    fields.setdefault("name", path.stem)
    for old, new in OLD_FIELDS.items():
        if old in fields and new not in fields:
            fields[new] = fields.pop(old)
    return fields


def load_spec(source: str | Path | None = None, overrides: dict | None = None) -> SweepSpec:
    """A checked SweepSpec from a spec file (or the defaults) with flags laid over it.

    overrides maps field names to values; None values are flags that were not given."""
    fields = read_spec_file(source) if source is not None else {}
    where = f"{find_spec(source)}: " if source is not None else ""
    _check_known(fields, where)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    _check_known(given, "")
    try:
        return SweepSpec(**(fields | given))
    except ConfigError as err:
        # Say where the bad value came from: the file unless a flag set that field.
        bad = next((k for k in fields if f"field '{k}'" in str(err)), None)
        prefix = where if bad is not None and bad not in given else ""
        raise ConfigError(f"{prefix}{err}") from None


def _check_known(fields: dict, where: str) -> None:
    known = SweepSpec.field_names()
    for key in fields:
        if key not in known:
            close = difflib.get_close_matches(key.replace("-", "_"), known, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ConfigError(f"{where}unknown field '{key}'; {hint}spec fields are: "
                              f"{', '.join(known)}")
