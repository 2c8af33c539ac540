"""JSON round-trip for nested dataclasses (plans, fingerprints, metadata) without a third-party schema library."""
from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

from samunet.core.errors import MissingFileError, SamunetUserError
from samunet.utils.atomic import write_json

T = TypeVar("T")


class SchemaError(SamunetUserError, ValueError):
    pass


def to_jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalars
        return obj.item()
    return obj


def _convert(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        return _convert(non_none[0], value, where) if len(non_none) == 1 else value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise SchemaError(f"{where}: expected an object, got {type(value).__name__}")
        return from_jsonable(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise SchemaError(f"{where}: expected a list, got {type(value).__name__}")
        inner = args[0] if args else Any
        return [_convert(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise SchemaError(f"{where}: expected an object, got {type(value).__name__}")
        inner = args[1] if len(args) == 2 else Any
        return {k: _convert(inner, v, f"{where}.{k}") for k, v in value.items()}
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp in (int, float, str, bool) and not isinstance(value, tp):
        raise SchemaError(f"{where}: expected {tp.__name__}, got {value!r}")
    return value


def from_jsonable(cls: type[T], data: dict, where: str = "") -> T:
    """Build dataclass ``cls`` from a JSON object; unknown keys and wrong types are errors naming the field."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise SchemaError(f"{where or cls.__name__}: unknown field(s) {sorted(unknown)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            kwargs[f.name] = _convert(hints[f.name], data[f.name], f"{where}.{f.name}" if where else f.name)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise SchemaError(f"{where or cls.__name__}: missing field '{f.name}'")
    return cls(**kwargs)


class VersionedRecord:
    """Mixin for a dataclass stored as one versioned JSON file (plans, fingerprint, case properties, ...).

    Subclasses set ``SCHEMA_VERSION`` (and have a ``schema_version`` field defaulting to it) and ``RERUN_HINT``,
    the command that rewrites the file when its version is stale or it is missing.
    """

    SCHEMA_VERSION: int = 1
    RERUN_HINT: str = ""

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self)

    @classmethod
    def from_dict(cls, data: Any, source: str | None = None):
        source = source or cls.__name__
        version = data.get("schema_version") if isinstance(data, dict) else None
        if version != cls.SCHEMA_VERSION:
            raise SchemaError(f"{source}: schema_version {version!r} is not {cls.SCHEMA_VERSION}; {cls.RERUN_HINT}")
        try:
            return from_jsonable(cls, data)
        except SchemaError as e:
            raise SchemaError(f"{source}: {e}") from None

    def save(self, path: str | os.PathLike) -> None:
        write_json(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | os.PathLike):
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise MissingFileError(f"{path}: does not exist; {cls.RERUN_HINT}") from None
        except json.JSONDecodeError as e:
            raise SchemaError(f"{path}: not valid JSON ({e})") from None
        return cls.from_dict(data, source=str(path))
