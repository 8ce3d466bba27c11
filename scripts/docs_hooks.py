"""MkDocs hook: the parts of the docs that are generated from the code, so they cannot drift from it.

A page asks for one by a marker line, replaced when the site is built:
    <!-- generated: config-keys -->     every config key: default, meaning, valid choices (cnnmode/config/schema.py)
    <!-- generated: help VERB [SUB] --> `cnnmode VERB [SUB] --help`, as the command line prints it
    <!-- generated: licences -->        the licence of every third-party package cnnmode depends on
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
from importlib import metadata
from pathlib import Path

MARKER = re.compile(r"^<!-- generated: ([\w-]+)((?: [\w-]+)*) -->$", re.M)
ROOT = Path(__file__).resolve().parents[1]


def on_page_markdown(markdown: str, page, config, files) -> str:
    """Replace each marker line of a page with what it names."""
    return MARKER.sub(lambda m: generate(m.group(1), m.group(2).split(), page.file.src_uri), markdown)


def generate(kind: str, args: list[str], where: str) -> str:
    """The Markdown for one marker."""
    if kind == "config-keys":
        return config_table()
    if kind == "help":
        return "```text\n" + help_text(args) + "```"
    if kind == "licences":
        return licence_table()
    raise ValueError(f"{where}: unknown generated block {kind!r} (config-keys, help, licences)")


def config_table() -> str:
    """One row per dotted config key, in schema order."""
    from cnnmode.config.schema import all_keys

    rows = ["| key | default | meaning |", "|---|---|---|"]
    for key, f in all_keys().items():
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        meaning = f.metadata["help"]
        if f.metadata.get("choices"):
            meaning += " (" + ", ".join(f"`{c}`" for c in f.metadata["choices"]) + ")"
        rows.append(f"| `{key}` | `{default!r}` | {_cell(meaning)} |".replace("`''`", '`""`'))
    return "\n".join(rows)


def help_text(words: list[str]) -> str:
    """`cnnmode WORDS --help` at 100 columns."""
    from cnnmode.cli.main import build_parser

    os.environ["COLUMNS"] = "100"
    parser = build_parser()
    for word in words:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[word]
    return parser.format_help()


def licence_table() -> str:
    """Each direct dependency of the package (pyproject's dependencies and extras): version and licence, read
    from the installed packages' own metadata."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = [*project["dependencies"], *(d for extra in project["optional-dependencies"].values() for d in extra)]
    rows = ["| package | version | licence | needed for |", "|---|---|---|---|"]
    extras = {d: name for name, deps in project["optional-dependencies"].items() for d in deps}
    for requirement in sorted(set(names), key=str.lower):
        name = re.split(r"[=<>\[; ]", requirement)[0]
        try:
            dist = metadata.distribution(name)
            version, licence = dist.version, _licence(dist)
        except metadata.PackageNotFoundError:
            version, licence = "not installed here", "see its page on PyPI"
        use = f"`pip install cnnmode[{extras[requirement]}]`" if requirement in extras else "always"
        rows.append(f"| [{name}](https://pypi.org/project/{name}/) | {version} | {_cell(licence)} | {use} |")
    return "\n".join(rows)


def _licence(dist: metadata.Distribution) -> str:
    """A package's licence: its SPDX expression, its one-line licence field, its licence classifiers, or else
    recognised from the licence text it carries (a pasted text, or its licence file)."""
    meta = dist.metadata
    if meta.get("License-Expression"):
        return meta["License-Expression"]
    field = (meta.get("License") or "").strip()
    if field and "\n" not in field and len(field) < 60:
        return field
    classifiers = [c.split(" :: ")[-1] for c in meta.get_all("Classifier") or [] if c.startswith("License ::")]
    if classifiers:
        return ", ".join(classifiers)
    texts = [field] + [dist.read_text(name) or dist.read_text(f"licenses/{name}") or ""
                       for name in meta.get_all("License-File") or []]
    for text in texts:
        for phrase, name in LICENCE_TEXTS:
            if phrase in text:
                return f"{name} (from its licence text)"
    return "not stated in its metadata"


LICENCE_TEXTS = (("Apache License", "Apache-2.0"), ("GNU AFFERO GENERAL PUBLIC LICENSE", "AGPL-3.0"),
                 ("GNU GENERAL PUBLIC LICENSE", "GPL"), ("Permission is hereby granted, free of charge", "MIT"),
                 ("Redistribution and use in source and binary forms", "BSD-style"))


def _cell(text: str) -> str:
    """Text that stays inside one Markdown table cell."""
    return text.replace("|", "\\|").replace("<", "&lt;").replace("\n", " ")
