"""JSON Schema from a dataclass's type hints, and values checked against those hints.

A step's parameters are a dataclass: ``warren submit`` checks a spec against the schema made
here, and the runtime's call decodes the routing slip's parameters into the dataclass.
"""

from __future__ import annotations

import dataclasses
import sys
import typing
from typing import Any, Dict, List, Literal, Optional, Tuple, Union, get_args, get_origin, get_type_hints

__all__ = ["schema_of", "decode", "DecodeError", "to_plain"]


class DecodeError(ValueError):
    """A value does not fit its type hint; the message names the field."""


_PRIMITIVES: Dict[Any, Dict[str, Any]] = {
    bool: {"type": "boolean"},
    int: {"type": "integer"},
    float: {"type": "number"},
    str: {"type": "string"},
    bytes: {"type": "string", "contentEncoding": "binary"},
    Any: {},
}


def _is_optional(hint: Any) -> Tuple[bool, Any]:
    if get_origin(hint) is Union or (sys.version_info >= (3, 10) and _is_union_type(hint)):
        args = [a for a in get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(get_args(hint)) == 2:
            return True, args[0]
    return False, hint


def _is_union_type(hint: Any) -> bool:
    import types

    return isinstance(hint, getattr(types, "UnionType", ()))


def _json_type(value: Any) -> Optional[str]:
    """The JSON Schema type of a literal value (bool before int: a bool is an int in Python)."""
    for kind, name in ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string")):
        if isinstance(value, kind):
            return name
    return None


def _schema_of_hint(hint: Any) -> Dict[str, Any]:
    optional, inner = _is_optional(hint)
    if optional:
        return {"anyOf": [_schema_of_hint(inner), {"type": "null"}]}
    if hint in _PRIMITIVES:
        return dict(_PRIMITIVES[hint])
    if hint in (list, tuple):
        return {"type": "array"}
    if hint is dict:
        return {"type": "object"}
    origin = get_origin(hint)
    if origin is Literal:
        values = list(get_args(hint))
        types = {_json_type(v) for v in values}
        if len(types) == 1 and None not in types:
            return {"type": types.pop(), "enum": values}
        return {"enum": values}
    if origin in (list, List, typing.Sequence, tuple) and origin is not tuple:
        (item,) = get_args(hint) or (Any,)
        return {"type": "array", "items": _schema_of_hint(item)}
    if origin is tuple:
        args = get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return {"type": "array", "items": _schema_of_hint(args[0])}
        return {"type": "array", "prefixItems": [_schema_of_hint(a) for a in args], "minItems": len(args), "maxItems": len(args)}
    if origin in (dict, Dict):
        args = get_args(hint)
        value = args[1] if len(args) == 2 else Any
        return {"type": "object", "additionalProperties": _schema_of_hint(value)}
    if dataclasses.is_dataclass(hint):
        return schema_of(hint)
    raise TypeError(f"no JSON Schema for the type hint {hint!r}: use bool, int, float, str, lists, dicts, Optional, Literal or dataclasses")


def schema_of(cls: type) -> Dict[str, Any]:
    """The JSON Schema of dataclass ``cls``: its fields' types, defaults, and which are required.

    Unknown keys are refused (``additionalProperties: false``), as Warren's Rust steps refuse them.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = get_type_hints(cls)
    properties: Dict[str, Any] = {}
    required: List[str] = []
    for f in dataclasses.fields(cls):
        prop = _schema_of_hint(hints[f.name])
        doc = f.metadata.get("doc") if f.metadata else None
        if doc:
            prop["description"] = doc
        if f.default is not dataclasses.MISSING:
            prop["default"] = to_plain(f.default)
        elif f.default_factory is not dataclasses.MISSING:
            prop["default"] = to_plain(f.default_factory())
        else:
            required.append(f.name)
        properties[f.name] = prop
    schema: Dict[str, Any] = {"title": cls.__name__, "type": "object", "properties": properties, "additionalProperties": False}
    if cls.__doc__ and not cls.__doc__.startswith(cls.__name__ + "("):
        schema["description"] = cls.__doc__.strip()
    if required:
        schema["required"] = required
    return schema


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _decode_value(hint: Any, value: Any, where: str, strict: bool = True) -> Any:
    optional, inner = _is_optional(hint)
    if optional:
        return None if value is None else _decode_value(inner, value, where, strict)
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise DecodeError(f"{where}: expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise DecodeError(f"{where}: expected an integer, got {_type_name(value)} {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise DecodeError(f"{where}: expected a number, got {_type_name(value)} {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise DecodeError(f"{where}: expected a string, got {_type_name(value)} {value!r}")
    if hint is bytes:
        if isinstance(value, (bytes, bytearray)):
            return bytes(value)
        raise DecodeError(f"{where}: expected bytes, got {_type_name(value)}")
    if hint in (list, tuple, dict):
        if isinstance(value, (list, tuple) if hint is not dict else dict):
            return value if hint is not tuple else tuple(value)
        raise DecodeError(f"{where}: expected a {'map' if hint is dict else 'list'}, got {_type_name(value)} {value!r}")
    origin = get_origin(hint)
    if origin is Literal:
        if value in get_args(hint):
            return value
        allowed = ", ".join(repr(a) for a in get_args(hint))
        raise DecodeError(f"{where}: {value!r} is not one of {allowed}")
    if origin in (list, List, typing.Sequence):
        if not isinstance(value, (list, tuple)):
            raise DecodeError(f"{where}: expected a list, got {_type_name(value)} {value!r}")
        (item,) = get_args(hint) or (Any,)
        return [_decode_value(item, v, f"{where}[{i}]", strict) for i, v in enumerate(value)]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise DecodeError(f"{where}: expected a list, got {_type_name(value)} {value!r}")
        args = get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode_value(args[0], v, f"{where}[{i}]", strict) for i, v in enumerate(value))
        if len(args) != len(value):
            raise DecodeError(f"{where}: expected {len(args)} items, got {len(value)}")
        return tuple(_decode_value(a, v, f"{where}[{i}]", strict) for i, (a, v) in enumerate(zip(args, value)))
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            raise DecodeError(f"{where}: expected a map, got {_type_name(value)} {value!r}")
        args = get_args(hint)
        vt = args[1] if len(args) == 2 else Any
        return {k: _decode_value(vt, v, f"{where}.{k}", strict) for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        return decode(hint, value, where, strict)
    raise DecodeError(f"{where}: cannot decode into {hint!r}")


T = typing.TypeVar("T")


def decode(cls: typing.Type[T], value: Any, where: str = "", strict: bool = True) -> T:
    """``value`` (a map, or None for no parameters) as dataclass ``cls``: types checked,
    defaults filled in, unknown keys refused (``strict``, for parameters a person typed) or
    ignored (for payloads, which gain optional fields within a schema version). A mismatch
    raises :class:`DecodeError` naming the field."""
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise DecodeError(f"{where or 'value'}: expected a map, got {_type_name(value)} {value!r}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(value) - set(fields))
    if unknown and strict:
        known = ", ".join(fields) or "none"
        raise DecodeError(f"{where + '.' if where else ''}{unknown[0]}: no such field (known: {known})")
    kwargs: Dict[str, Any] = {}
    for name, f in fields.items():
        path = f"{where}.{name}" if where else name
        if name in value:
            kwargs[name] = _decode_value(hints[name], value[name], path, strict)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise DecodeError(f"{path}: missing (it has no default)")
    return cls(**kwargs)


def to_plain(value: Any) -> Any:
    """A dataclass (nested ones too) as plain maps and lists, ready for MessagePack."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    return value


