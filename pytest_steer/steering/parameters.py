"""The parameters a steering method takes from ``--steer-method NAME:key=value,...``, and their types.

A method declares its parameters by the signature of its ``__init__``: each keyword
parameter is one, its annotation is the type and its default makes it optional::

    def __init__(self, times: int = 1, marker: str = "**") -> None: ...

A method whose ``create`` takes other parameters than its ``__init__`` lists them in the
class attribute ``parameters`` instead (``PASTA`` does). At collection every value given on
the command line is checked against the declaration and converted to its type, before
anything is generated: an unknown name, a missing required parameter or a value that does
not convert stops the run with one message naming the method, the parameter and what it
accepts.

Types a value converts to: ``str``, ``int``, ``float`` (finite), ``bool`` (true/false,
yes/no, on/off, 1/0), :class:`FilePath` (a path, as text), ``Literal[...]`` choices,
``X | None`` (``none`` or ``null`` gives None), unions tried in order, and
``list``/``tuple``/``dict`` (JSON text, elements checked when the annotation names their
type). Unannotated parameters, ``Any`` and other types get the value as JSON when it
parses as JSON, else as text.
"""

from __future__ import annotations

import inspect
import json
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Union

_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0")


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


class FilePath(str):
    """The type of a parameter that names a file: text, as given. A config's name shows the file's stem and a
    short digest of the whole path (see :func:`pytest_steer.plan.cases.SteeringConfig.of`), not the path itself."""


@dataclass(frozen=True)
class Parameter:
    """One parameter of a steering method: its name, its type and its default (``REQUIRED``: none)."""

    name: str
    type: Any = Any
    default: Any = REQUIRED

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def describe(self) -> str:
        """``times (int, default 1)``, ``alpha (float, required)``."""
        return f"{self.name} ({type_name(self.type)}, {'required' if self.required else f'default {self.default!r}'})"

    def convert(self, value: Any) -> Any:
        """The value as this parameter's type; text (from the command line) is parsed. Raises ValueError."""
        return _convert(value, self.type)


def declared_parameters(method: type) -> tuple[dict[str, Parameter], bool]:
    """(name -> parameter, whether other names are accepted too) of a method class.

    The class attribute ``parameters`` when set, else the keyword parameters of ``__init__``
    (a ``**kwargs`` there accepts any other name, as JSON or text).
    """
    listed = getattr(method, "parameters", None)
    if listed is not None:
        return {parameter.name: parameter for parameter in listed}, False
    if method.__init__ is object.__init__:
        return {}, False
    try:
        hints = typing.get_type_hints(method.__init__)
    except Exception:  # an annotation that does not resolve here: the values are taken as JSON or text
        hints = {}
    declared, open_ended = {}, False
    for name, parameter in list(inspect.signature(method.__init__).parameters.items())[1:]:
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            open_ended = True
        elif parameter.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
            default = REQUIRED if parameter.default is inspect.Parameter.empty else parameter.default
            declared[name] = Parameter(name, hints.get(name, Any), default)
    return declared, open_ended


def bind_parameters(method: type, name: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """The ``given`` values converted to the types ``method`` declares; ValueError names what is wrong.

    Only the given parameters are returned (defaults stay the method's own), so that a
    config's name and key hold exactly what the command line said.
    """
    declared, open_ended = declared_parameters(method)
    takes = "; it takes " + ", ".join(p.describe() for p in declared.values()) if declared else "; it takes no parameters"
    unknown = [key for key in given if key not in declared and not open_ended]
    if unknown:
        raise ValueError(f"{name} takes no parameter {', '.join(map(repr, unknown))}{takes}")
    missing = [p.name for p in declared.values() if p.required and p.name not in given]
    if missing:
        raise ValueError(f"{name} needs the parameter {', '.join(map(repr, missing))}{takes}")
    bound = {}
    for key, value in given.items():
        parameter = declared.get(key, Parameter(key))
        try:
            bound[key] = parameter.convert(value)
        except ValueError as exc:
            raise ValueError(f"{name} parameter {key!r}: {exc}") from None
    return bound


def type_name(annotation: Any) -> str:
    """How a type reads in messages: ``int``, ``float or None``, ``one of 'a', 'b'``."""
    if annotation is Any:
        return "any JSON value or text"
    if annotation is FilePath:
        return "file path"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin in (Union, types.UnionType):
        return _union_name(args)
    if origin is not None and args:
        return f"{origin.__name__}[{', '.join(type_name(arg) for arg in args if arg is not Ellipsis)}]"
    return getattr(annotation, "__name__", str(annotation))


def _convert(value: Any, annotation: Any) -> Any:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        return _convert_union(value, args)
    if origin is Literal:
        for choice in args:
            if value == choice or (isinstance(value, str) and not isinstance(choice, str) and value.strip() == str(choice)):
                return choice
        raise ValueError(f"{value!r} is not {type_name(annotation)}")
    if annotation is bool:
        return _convert_bool(value)
    if annotation is int:
        return _convert_int(value)
    if annotation is float:
        return _convert_float(value)
    if annotation is str:
        return _convert_str(value)
    if annotation is FilePath:
        return FilePath(_convert_str(value))
    container = origin or annotation
    if container in (list, tuple, dict):
        return _convert_container(value, container, args)
    return _json_or_text(value)


def _convert_union(value: Any, args: tuple[Any, ...]) -> Any:
    if type(None) in args and (value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null"))):
        return None
    for arg in (arg for arg in args if arg is not type(None)):
        try:
            return _convert(value, arg)
        except ValueError:
            continue
    raise ValueError(f"{value!r} is not {_union_name(args)}")


def _union_name(args: tuple[Any, ...]) -> str:
    return " or ".join("None" if arg is type(None) else type_name(arg) for arg in args)


def _convert_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, (str, int)) else None
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ValueError(f"{value!r} is not a bool; expected true or false")


def _convert_int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            pass
    raise ValueError(f"{value!r} is not an int; expected a whole number such as 2")


def _convert_float(value: Any) -> float:
    number = value
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            number = None
    if isinstance(number, (int, float)) and not isinstance(number, bool):
        if math.isfinite(number):
            return float(number)
        raise ValueError(f"{value!r} is not finite; it must be a finite number such as 0.5")
    raise ValueError(f"{value!r} is not a float; expected a finite number such as 0.5")


def _convert_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a str")
    if value.startswith('"'):  # a quoted JSON string keeps what the quotes hold, spaces and commas included
        try:
            decoded = json.loads(value)
        except ValueError:
            decoded = None
        if isinstance(decoded, str):
            return decoded
    return value


def _convert_container(value: Any, container: type, args: tuple[Any, ...]) -> Any:
    decoded = json.loads(value) if isinstance(value, str) and _parses(value) else value
    expected = "a JSON object" if container is dict else "a JSON list"
    if container is dict:
        if not isinstance(decoded, dict):
            raise ValueError(f"{value!r} is not {expected}")
        value_type = args[1] if len(args) == 2 else Any
        return {str(key): _convert(item, value_type) if value_type is not Any else item for key, item in decoded.items()}
    if not isinstance(decoded, (list, tuple)):
        raise ValueError(f"{value!r} is not {expected}")
    item_type = args[0] if args and (container is list or args[1:] == (Ellipsis,)) else Any
    items = [_convert(item, item_type) if item_type is not Any else item for item in decoded]
    return tuple(items) if container is tuple else items


def _parses(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def _json_or_text(value: Any) -> Any:
    if isinstance(value, str) and _parses(value):
        return json.loads(value)
    return value
