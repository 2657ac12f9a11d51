"""The value of ``--steer-method``: a method's name, its parameters as text, and the values a parameter sweeps."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class Sweep(tuple):
    """Several values of one method parameter (``coeff=2,4,8``): one config per value."""


def parse_method(text: str) -> tuple[str, tuple[tuple[str, Any], ...]]:
    """``name`` or ``name:key=value,key=value``. The values stay text until collection converts them to the
    types the method declares (:mod:`pytest_steer.steering.parameters`).

    Bare values after ``key=value`` sweep that key: ``actadd:layer=15,coeff=2,4,8`` holds
    ``coeff`` as a :class:`Sweep` of 2, 4 and 8 (see :func:`method_sweep`).
    """
    name, _, rest = text.partition(":")
    name = name.strip()
    if not name:
        raise ValueError(f"{text!r} names no method; use e.g. emphasis or emphasis:marker=__")
    params: dict[str, list[str]] = {}
    key = None
    for item in filter(None, (part.strip() for part in rest.split(","))):
        named, equals, value = item.partition("=")
        if equals and named.strip():
            key = named.strip()
            params[key] = []
        elif equals or key is None:
            raise ValueError(f"{text!r}: parameter {item!r} is not key=value; use e.g. {name}:key=value or {name}:key=1,2,4")
        else:
            value = item
        params[key].append(value.strip())
    return name, tuple((key, values[0] if len(values) == 1 else Sweep(values)) for key, values in params.items())


def method_sweep(params: Sequence[tuple[str, Any]]) -> list[dict[str, Any]]:
    """One parameter set per combination of the swept values, in the order given (the last key varies fastest)."""
    combinations: list[dict[str, Any]] = [{}]
    for key, value in params:
        values = list(value) if isinstance(value, Sweep) else [value]
        combinations = [{**combination, key: each} for combination in combinations for each in values]
    return combinations
