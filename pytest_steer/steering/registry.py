"""The steering methods a run can use: the built-in ones and those registered through the hook."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pytest_steer.steering.emphasis import Emphasis
from pytest_steer.steering.method import SteeringMethod
from pytest_steer.steering.parameters import Parameter, bind_parameters

METHOD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def builtin_methods() -> list[type[SteeringMethod]]:
    from pytest_steer.steering.actadd.method import ActAdd  # why: they load torch, and the plugin lists methods without it
    from pytest_steer.steering.pasta.method import PASTA

    return [PASTA, Emphasis, ActAdd]


def method_registry(registered: Iterable[Iterable[type[SteeringMethod]]] = ()) -> dict[str, type[SteeringMethod]]:
    """Name -> class, built-in methods first; ``registered`` holds the hook's results, one list per plugin."""
    registry: dict[str, type[SteeringMethod]] = {}
    for method in [*builtin_methods(), *(method for methods in registered for method in methods)]:
        if not (isinstance(method, type) and issubclass(method, SteeringMethod)):
            raise TypeError(f"pytest_steer_methods returned {method!r}; return SteeringMethod subclasses")
        if not METHOD_NAME.fullmatch(method.name or ""):
            raise ValueError(f"{method.__name__}.name {method.name!r} must start with a letter and hold letters, digits and _ only")
        listed = method.parameters
        if listed is not None and not (isinstance(listed, tuple) and all(isinstance(p, Parameter) for p in listed)):
            raise TypeError(f"{method.__name__}.parameters must be a tuple of pytest_steer.steering.Parameter")
        if method.name in registry and registry[method.name] is not method:
            raise ValueError(f"two steering methods are named {method.name!r}: {registry[method.name].__name__} and {method.__name__}")
        registry[method.name] = method
    return registry


def bind_method_parameters(method: type[SteeringMethod], name: str, given: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """``--steer-method name:key=value,...`` checked against the parameters ``method`` declares and
    converted to their types; a ValueError names the option as given, the parameter and the fix."""
    given = dict(given)
    try:
        return bind_parameters(method, name, given)
    except ValueError as exc:
        spec = name + (":" + ",".join(f"{key}={value}" for key, value in given.items()) if given else "")
        raise ValueError(f"--steer-method {spec}: {exc}") from None
