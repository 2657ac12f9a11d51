"""The steering methods a run can use: the built-in ones and those registered through the hook."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from importlib import import_module
from typing import Any

from pytest_steer.steering.method import SteeringMethod
from pytest_steer.steering.parameters import Parameter, bind_parameters

METHOD_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
# The built-in methods, each imported the first time a run names it: ActAdd's module loads torch, which a run without
# it need not pay for (a run whose responses all come from the response cache imports no torch at all).
BUILTIN_METHODS = {
    "pasta": ("pytest_steer.steering.pasta.method", "PASTA"),
    "emphasis": ("pytest_steer.steering.emphasis", "Emphasis"),
    "actadd": ("pytest_steer.steering.actadd.method", "ActAdd"),
}


class MethodRegistry(Mapping[str, type[SteeringMethod]]):
    """Name -> method class: the built-in methods first (imported when looked up), then those registered."""

    def __init__(self, registered: Mapping[str, type[SteeringMethod]]) -> None:
        self._registered = dict(registered)

    def __getitem__(self, name: str) -> type[SteeringMethod]:
        if name in self._registered:
            return self._registered[name]
        if name in BUILTIN_METHODS:
            return builtin_method(name)
        raise KeyError(name)

    def __contains__(self, name: object) -> bool:  # Mapping's would look the method up, importing it
        return name in self._registered or name in BUILTIN_METHODS

    def __iter__(self) -> Iterator[str]:
        yield from BUILTIN_METHODS
        yield from (name for name in self._registered if name not in BUILTIN_METHODS)

    def __len__(self) -> int:
        return len(BUILTIN_METHODS.keys() | self._registered.keys())


def builtin_method(name: str) -> type[SteeringMethod]:
    module, attribute = BUILTIN_METHODS[name]
    return getattr(import_module(module), attribute)


def method_registry(registered: Iterable[Iterable[type[SteeringMethod]]] = ()) -> MethodRegistry:
    """Name -> class, built-in methods first; ``registered`` holds the hook's results, one list per plugin."""
    registry: dict[str, type[SteeringMethod]] = {}
    for method in (method for methods in registered for method in methods):
        if not (isinstance(method, type) and issubclass(method, SteeringMethod)):
            raise TypeError(f"pytest_steer_methods returned {method!r}; return SteeringMethod subclasses")
        if not METHOD_NAME.fullmatch(method.name or ""):
            raise ValueError(f"{method.__name__}.name {method.name!r} must start with a letter and hold letters, digits and _ only")
        listed = method.parameters
        if listed is not None and not (isinstance(listed, tuple) and all(isinstance(p, Parameter) for p in listed)):
            raise TypeError(f"{method.__name__}.parameters must be a tuple of pytest_steer.steering.Parameter")
        known = registry.get(method.name) or (builtin_method(method.name) if method.name in BUILTIN_METHODS else None)
        if known is not None and known is not method:
            raise ValueError(f"two steering methods are named {method.name!r}: {known.__name__} and {method.__name__}")
        registry[method.name] = method
    return MethodRegistry(registry)


def bind_method_parameters(method: type[SteeringMethod], name: str, given: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """``--steer-method name:key=value,...`` checked against the parameters ``method`` declares and
    converted to their types; a ValueError names the option as given, the parameter and the fix."""
    given = dict(given)
    try:
        return bind_parameters(method, name, given)
    except ValueError as exc:
        spec = name + (":" + ",".join(f"{key}={value}" for key, value in given.items()) if given else "")
        raise ValueError(f"--steer-method {spec}: {exc}") from None
