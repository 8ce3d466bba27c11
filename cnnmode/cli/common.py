"""What several verbs share: the `--recipe/--config/--quiet/key=value` options, turning them into a config base,
and one table printer."""
from __future__ import annotations

import argparse
import dataclasses
import typing

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


def add_option_flags(p: argparse.ArgumentParser, options: type, positional: tuple[str, ...] = (),
                     required: tuple[str, ...] = (), skip: tuple[str, ...] = ()) -> None:
    """One flag per field of the options dataclass `options` (`--max-batch-size` for `max_batch_size`), its type,
    default, choices and help text taken from the field (see `cnnmode.config.opt`): the dataclass is the only
    place they are written. Fields in `positional` become positional arguments, those in `required` flags that
    must be given; those in `skip` are left out."""
    hints = typing.get_type_hints(options)
    for f in dataclasses.fields(options):
        if f.name in skip:
            continue
        meta, kind = f.metadata, _base_type(hints[f.name])
        if f.name in positional:  # a field that may hold a list takes one or more values
            many = any(typing.get_origin(t) is list for t in typing.get_args(hints[f.name]))
            p.add_argument(f.name, metavar=meta.get("metavar") or f.name.upper(), help=meta.get("help"),
                           **({"nargs": "+"} if many else {}))
            continue
        flag = "--" + f.name.replace("_", "-")
        if kind is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction if f.default else "store_true",
                           default=f.default, help=meta.get("help"))
            continue
        shown = "" if f.default in (None, "") else f" (default: {f.default})"
        metavar = meta.get("metavar") or {int: "N", float: "X"}.get(kind)
        p.add_argument(flag, type=kind, default=f.default, choices=meta.get("choices"), metavar=metavar,
                       required=f.name in required, help=(meta.get("help") or "") + shown)


def options_from_args(options: type, args: argparse.Namespace, **given: typing.Any) -> typing.Any:
    """The options dataclass `options` filled from the parsed flags of `add_option_flags` (and `given`)."""
    names = {f.name for f in dataclasses.fields(options)}
    return options(**{k: v for k, v in vars(args).items() if k in names}, **given)


def _base_type(hint: typing.Any) -> type:
    """int for `int` and `int | None`."""
    kinds = [t for t in typing.get_args(hint) if t is not type(None)] or [hint]
    return kinds[0]


def config_base(args: argparse.Namespace, default: str | None = "default") -> str | None:
    """The recipe name or YAML file the options name (never both), else `default`; a bad key=value among the
    overrides is refused here, in one line, before torch is imported."""
    from cnnmode.config import check_early, pick_base

    base = pick_base(args.recipe, args.config, default)
    check_early(base, args.overrides)
    return base


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
