"""Hooks that pytest-steer adds to pytest; implement them in a conftest.py or a plugin."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_steer.steering.method import SteeringMethod


@pytest.hookspec
def pytest_steer_methods() -> list[type[SteeringMethod]]:
    """Steering method classes to offer besides the built-in ``pasta`` and ``emphasis``.

    Each class subclasses :class:`pytest_steer.steering.SteeringMethod` and sets ``name``;
    ``--steer-method NAME[:key=value,...]`` then adds one config that runs it::

        def pytest_steer_methods():
            return [MyMethod]
    """
