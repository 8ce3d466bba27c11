"""Print the `uv pip install` options that reproduce this machine's pip configuration (`pip config list` and
PIP_* variables): its extra indexes, find-links folders and constraints. uv reads no pip configuration of its own,
and `make setup` installs with uv because it does the same install several times faster than pip."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys

SETTINGS = {"extra-index-url": "--extra-index-url", "index-url": "--index-url", "find-links": "--find-links",
            "constraint": "--constraint"}


def pip_settings() -> dict[str, list[str]]:
    """Each pip setting uv needs, with its values, from `pip config list` and then the PIP_* environment."""
    listed = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    found: dict[str, list[str]] = {}
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        name = key.rsplit(".", 1)[-1]
        if name in SETTINGS:
            found[name] = shlex.split(value.strip().strip("'\""))
    for name in SETTINGS:
        env = os.environ.get("PIP_" + name.upper().replace("-", "_"))
        if env:
            found[name] = env.split()
    return found


def main() -> None:
    args = ["--index-strategy", "unsafe-best-match"]  # as pip does: the best version from any index
    for name, values in pip_settings().items():
        for value in values:
            args += [SETTINGS[name], value]
    print(shlex.join(args))


if __name__ == "__main__":
    main()
