"""The steering methods a run can use: the built-in ones and those registered through the hook."""

from __future__ import annotations

import re
from collections.abc import Iterable

from pytest_steer.steering.emphasis import Emphasis
from pytest_steer.steering.method import SteeringMethod

METHOD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def builtin_methods() -> list[type[SteeringMethod]]:
    from pytest_steer.steering.actadd import ActAdd
    from pytest_steer.steering.pasta import PASTA

    return [PASTA, Emphasis, ActAdd]


def method_registry(registered: Iterable[Iterable[type[SteeringMethod]]] = ()) -> dict[str, type[SteeringMethod]]:
    """Name -> class, built-in methods first; ``registered`` holds the hook's results, one list per plugin."""
    registry: dict[str, type[SteeringMethod]] = {}
    for method in [*builtin_methods(), *(method for methods in registered for method in methods)]:
        if not (isinstance(method, type) and issubclass(method, SteeringMethod)):
            raise TypeError(f"pytest_steer_methods returned {method!r}; return SteeringMethod subclasses")
        if not METHOD_NAME.fullmatch(method.name or ""):
            raise ValueError(f"{method.__name__}.name {method.name!r} must start with a letter and hold letters, digits and _ only")
        if method.name in registry and registry[method.name] is not method:
            raise ValueError(f"two steering methods are named {method.name!r}: {registry[method.name].__name__} and {method.__name__}")
        registry[method.name] = method
    return registry
