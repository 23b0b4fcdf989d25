"""Dataclasses to JSON-ready objects and back, every value checked against its type.

The one codec of the Space snapshot (townhall.room.snapshot), generic over dataclasses that
follow three conventions: a field's ``metadata`` (built by ``meta``) says whether it is
internal (written as ``_<name>``) and when it is left out; a field named ``extra`` holds the
keys the dataclass does not know, written back unchanged; and the field order is the
order of the JSON's keys. Types are ``str``, ``int``, ``float`` (an int is accepted: JSON
writes 2.0 as 2), ``bool`` (never an int, nor an int a bool), ``None``, ``Literal``,
``list``, ``dict[str, ...]``, unions of those and other such dataclasses.

Each type's reader, writer and copier is worked out once, the first time it is used, so
that reading a document is one pass of plain checks rather than reflection per value.
No I/O.
"""

from __future__ import annotations

import copy
import functools
import types
from collections.abc import Callable
from dataclasses import MISSING, Field, fields, is_dataclass
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

Convert = Callable[[Any], Any]


class ShapeError(ValueError):
    """A JSON value that is not of the type it was read as."""


def meta(doc: str = "", *, internal: bool = False, omit: str | None = None,
         **schema: Any) -> dict[str, Any]:
    """A field's metadata: its description and JSON-schema constraints (api/schemas.py),
    whether it is internal (stored as ``_<name>``, never public), and when it is left out
    of the JSON (``omit``: "none" or "empty"), so documents keep the shape they had."""
    return {"doc": doc, "internal": internal, "omit": omit, "schema": schema}


def json_key(f: Field[Any]) -> str:
    """A dataclass field's key in the JSON."""
    return f"_{f.name}" if f.metadata.get("internal") else f.name


def json_fields(cls: type) -> list[tuple[Field[Any], Any]]:
    """A dataclass's fields (``extra`` aside) in the order the JSON has them, each with
    its resolved type: what the codec and api/schemas.py's OpenAPI models both walk."""
    known = _FIELDS.get(cls)
    if known is None:
        hints = get_type_hints(cls)
        known = _FIELDS[cls] = [(f, hints[f.name]) for f in fields(cls) if f.name != "extra"]
    return known


_FIELDS: dict[type, list[tuple[Field[Any], Any]]] = {}


_SCALARS = {str: (str,), bool: (bool,), int: (int,), float: (int, float)}  # JSON 2.0 is 2


@functools.cache  # one converter per type, built on first use
def reader(hint: Any) -> Convert:
    """The function that checks a parsed JSON value against ``hint`` and builds it."""
    return _make_reader(hint)


def _make_reader(hint: Any) -> Convert:  # noqa: C901 - one case per kind of type
    origin, args = get_origin(hint), get_args(hint)
    if is_dataclass(hint):
        return _dataclass_reader(hint)
    if origin in (Union, types.UnionType):
        return _union_reader(hint, [reader(a) for a in args])
    if origin is Literal:
        allowed = frozenset(args)

        def literal(value: Any) -> Any:
            if value not in allowed:
                raise ShapeError(f"is not one of {sorted(allowed)}")
            return value
        return literal
    if origin is list:
        item = reader(args[0])

        def listed(value: Any) -> Any:
            if type(value) is not list:
                raise ShapeError("is not a list")
            return [item(v) for v in value]
        return listed
    if origin is dict:
        entry = reader(args[1])

        def mapped(value: Any) -> Any:
            if type(value) is not dict:
                raise ShapeError("is not an object")
            return {k: entry(v) for k, v in value.items()}
        return mapped
    if hint is Any:
        return lambda value: value
    if hint is type(None):
        def null(value: Any) -> Any:
            if value is not None:
                raise ShapeError("is not null")
            return None
        return null
    kinds = _SCALARS[hint]  # exact types: a bool is no int here, as in JSON

    def scalar(value: Any) -> Any:
        if type(value) not in kinds:
            raise ShapeError(f"is not {hint.__name__}")
        return value
    return scalar


def _union_reader(hint: Any, readers: list[Convert]) -> Convert:
    def union(value: Any) -> Any:
        for read in readers:
            try:
                return read(value)
            except ShapeError:
                continue
        raise ShapeError(f"is not {hint}")
    return union


def _dataclass_reader(cls: Any) -> Convert:
    spec = [(f.name, json_key(f), reader(hint),
             f.default is MISSING and f.default_factory is MISSING)
            for f, hint in json_fields(cls)]
    known = {key for _, key, _, _ in spec}

    def read(value: Any) -> Any:
        if type(value) is not dict:
            raise ShapeError(f"{cls.__name__} is not an object")
        values: dict[str, Any] = {}
        for name, key, convert, required in spec:
            if key in value:
                try:
                    values[name] = convert(value[key])
                except ShapeError as exc:
                    raise ShapeError(f"{key} {exc}") from None
            elif required:
                raise ShapeError(f"{cls.__name__} needs {key!r}")
        if len(value) > len(values):
            values["extra"] = {k: v for k, v in value.items() if k not in known}
        return cls(**values)
    return read


@functools.cache  # one converter per type, built on first use
def writer(hint: Any) -> Convert:
    """The function that turns a typed value into fresh JSON-ready objects."""
    return _make_writer(hint)


def _make_writer(hint: Any) -> Convert:
    origin, args = get_origin(hint), get_args(hint)
    if is_dataclass(hint):
        return _dataclass_writer(hint)
    return _walk(origin, args, writer)


def _walk(origin: Any, args: tuple[Any, ...], part: Callable[[Any], Convert]) -> Convert:
    """A union, list or dict whose parts are converted by ``part`` (writer or copier);
    anything else (str, int, float, bool, None, a Literal) is immutable and kept as is."""
    if origin in (Union, types.UnionType):
        # Only a dataclass in a union needs converting (``bool | Recording``): unions of
        # containers are not among the types this codec takes.
        classes: list[tuple[Any, Convert]] = [(a, part(a)) for a in args if is_dataclass(a)]

        def union(value: Any) -> Any:
            for cls, convert in classes:
                if isinstance(value, cls):
                    return convert(value)
            return value
        return union
    if origin is list:
        item = part(args[0])
        return lambda value: [item(v) for v in value]
    if origin is dict:
        entry = part(args[1])
        return lambda value: {k: entry(v) for k, v in value.items()}
    return lambda value: value


def _dataclass_writer(cls: Any) -> Convert:
    spec = [(f.name, json_key(f), writer(hint), f.metadata.get("omit"))
            for f, hint in json_fields(cls)]

    def write(value: Any) -> Any:
        out: dict[str, Any] = {}
        for name, key, convert, omit in spec:
            item = getattr(value, name)
            if (omit == "none" and item is None) or (omit == "empty" and not item):
                continue
            out[key] = convert(item)
        if value.extra:
            out.update(copy.deepcopy(value.extra))
        return out
    return write


@functools.cache  # one converter per type, built on first use
def copier(hint: Any) -> Convert:
    """The function that copies a typed value deeply (faster than copy.deepcopy, which
    goes through every dataclass's pickling protocol)."""
    return _make_copier(hint)


def _make_copier(hint: Any) -> Convert:
    origin, args = get_origin(hint), get_args(hint)
    if is_dataclass(hint):
        spec = [(f.name, copier(h)) for f, h in json_fields(hint)]  # type: ignore[arg-type]
        cls: Any = hint

        def copy_dataclass(value: Any) -> Any:
            out = cls(**{name: convert(getattr(value, name)) for name, convert in spec})
            if value.extra:
                out.extra = copy.deepcopy(value.extra)
            return out
        return copy_dataclass
    return _walk(origin, args, copier)
