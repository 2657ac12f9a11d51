"""What names a steering method's code in the response cache key, beside its ``params()``.

- A method defined inside ``pytest_steer`` (a built-in) is named by its class name and its
  ``version`` (:attr:`SteeringMethod.version`), bumped whenever its responses change: moving
  or reformatting the package's files regenerates nothing.
- Any other method (a user's) is named by a digest of each file that defines its class or one
  of its bases, so editing its code regenerates its responses even when ``params()`` did not
  change; what it reads from elsewhere (a vector file, another module) must be named by
  ``params()``.
"""

from __future__ import annotations

import functools
import hashlib
import sys
from pathlib import Path
from typing import Any

from pytest_steer.steering.method import SteeringMethod
from pytest_steer.store.responses import digest

PACKAGE = "pytest_steer"


@functools.cache
def method_identity(method: type[SteeringMethod]) -> str:
    """A digest naming the code of ``method`` and of its bases (``SteeringMethod`` and ``object`` aside): a built-in
    class by its name and version, another by its source file. A class whose file cannot be read (defined
    interactively) is named by its qualified name alone."""
    return digest([_class_identity(cls) for cls in method.__mro__ if cls not in (SteeringMethod, object)])


def _is_builtin(cls: type) -> bool:
    return cls.__module__ == PACKAGE or cls.__module__.startswith(f"{PACKAGE}.")


def _class_identity(cls: type) -> dict[str, Any]:
    if _is_builtin(cls):
        return {"class": cls.__name__, "version": cls.version}
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "source": _defining_file_digest(cls)}


def _defining_file_digest(cls: type) -> str | None:
    """SHA-256 of the source file of ``cls``: where its functions were compiled, else its module's file."""
    functions = (getattr(value, "__func__", value) for value in vars(cls).values())
    candidates = [getattr(getattr(function, "__code__", None), "co_filename", None) for function in functions]
    candidates.append(getattr(sys.modules.get(cls.__module__), "__file__", None))
    for candidate in filter(None, candidates):
        try:
            return hashlib.sha256(Path(candidate).read_bytes()).hexdigest()
        except OSError:  # "<string>", a deleted file: try the next one
            continue
    return None
