"""Print pip constraints that pin every dependency of pyproject.toml (and of the named extras)
to its lower bound, for CI's lowest-versions stage. torch and torchvision are left out: CI
installs the one build this machine has as local files."""

import re
import sys
import tomllib

SKIP = {"torch", "torchvision"}


def lower_bounds(requirements):
    for requirement in requirements:
        name = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0)
        bound = re.search(r">=\s*([\w.]+)", requirement)
        if name.lower() not in SKIP and bound:
            yield f"{name}=={bound.group(1)}"


if __name__ == "__main__":
    project = tomllib.load(open(sys.argv[1], "rb"))["project"]
    requirements = list(project["dependencies"])
    for extra in sys.argv[2:]:
        requirements += project["optional-dependencies"][extra]
    print("\n".join(lower_bounds(requirements)))
