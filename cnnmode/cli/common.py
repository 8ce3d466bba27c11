"""What several verbs share: the `--recipe/--config/--quiet/key=value` options, turning them into a config base,
and one table printer."""
from __future__ import annotations

import argparse

from rich.console import Console
from rich.table import Table
from rich.text import Text

from cnnmode.files import printable


def add_config_options(p: argparse.ArgumentParser, recipe: bool = True, quiet: bool = True,
                       overrides_help: str = "dotted config overrides") -> None:
    """--recipe and --config (unless `recipe` is False), --quiet (unless `quiet` is False), and key=value."""
    if recipe:
        p.add_argument("--recipe", help="named recipe (see `cnnmode recipes`; default: default)")
        p.add_argument("--config", metavar="FILE.yaml", help="YAML config file (same sections as a run's config.yaml)")
    if quiet:
        p.add_argument("--quiet", action="store_true", help="no progress bars; one line per epoch")
    p.add_argument("overrides", nargs="*", metavar="key=value", help=overrides_help)


def config_base(args: argparse.Namespace, default: str | None = "default") -> str | None:
    """The recipe name or YAML file the options name (never both), else `default`."""
    from cnnmode.config import pick_base

    return pick_base(args.recipe, args.config, default)


def print_table(title: str | None, columns: list[str], rows: list[list[str]], left: int = 1,
                sections: list[int] | None = None, width: int | None = 200) -> None:
    """A rich table: the first `left` columns left-aligned, the rest right-aligned; `sections` are row indices
    after which a rule is drawn."""
    table = Table(title=Text(title) if title else None)
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i < left else "right")
    for i, row in enumerate(rows):
        cells = [Text(printable(cell)) for cell in row]  # file names are neither markup nor always UTF-8
        table.add_row(*cells, end_section=bool(sections) and i in sections)
    Console(width=width, soft_wrap=width is None).print(table)


def keys_help() -> str:
    """Every config key with its help text, choices and default (the epilog of `cnnmode train --help`)."""
    from cnnmode.config import Config, all_keys

    defaults = Config()
    lines = ["config keys (key=value; precedence: defaults < recipe/--config YAML < key=value):"]
    for key, f in all_keys().items():
        section, name = key.split(".", 1)
        default = getattr(getattr(defaults, section), name)
        choices = f.metadata.get("choices")
        extra = f" [{'|'.join(choices)}]" if choices else ""
        lines.append(f"  {key:<26} {f.metadata['help']}{extra} (default: {default!r})")
    return "\n".join(lines)
