"""`cnnmode VERB ...`: one plain function per verb over the Python API."""
from __future__ import annotations

import argparse
import sys
import textwrap

from cnnmode.errors import CnnModeError


def _keys_help() -> str:
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


def cmd_train(args: argparse.Namespace) -> int:
    from cnnmode.engine.trainer import train

    recipe = args.recipe if (args.recipe or args.config or args.resume) else "default"
    run_dir = train(recipe=recipe, config_file=args.config, overrides=args.overrides, resume=args.resume,
                    quiet=args.quiet)
    print(f"run: {run_dir}")
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    from cnnmode.config import list_recipes

    for name, description in list_recipes().items():
        print(f"{name:<18} {description}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from cnnmode.models import MODELS

    for name in MODELS.names():
        print(f"{name:<12} {MODELS.describe(name)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every verb."""
    parser = argparse.ArgumentParser(
        prog="cnnmode", description="Train, evaluate and deploy image classifiers with PyTorch.",
        epilog="Quick start: cnnmode train data.path=cifar10   (or a folder / .tar.gz of class folders)")
    parser.add_argument("--version", action="version", version=_version())
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)

    p = verbs.add_parser("train", help="train a model; writes a run folder",
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         description="Train a model. Without --recipe/--config the `default` recipe is used.",
                         epilog=_keys_help() + textwrap.dedent("""

            examples:
              cnnmode train data.path=../shared/datasets/cifar10-jpeg.tar.gz
              cnnmode train --recipe simplecnn-mnist data.path=mnist train.epochs=3
              cnnmode train --config my.yaml optim.lr=0.01 run.name=try1
              cnnmode train --resume runs/try1 train.epochs=20   (step/plateau/constant schedules)"""))
    p.add_argument("--recipe", help="named recipe (see `cnnmode recipes`)")
    p.add_argument("--config", metavar="FILE.yaml", help="YAML config file (same sections as config.yaml)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bars; one line per epoch")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="dotted config overrides")
    p.set_defaults(func=cmd_train)

    verbs.add_parser("recipes", help="list named recipes").set_defaults(func=cmd_recipes)
    verbs.add_parser("models", help="list registered models").set_defaults(func=cmd_models)
    return parser


def _version() -> str:
    from cnnmode import __version__

    return f"cnnmode {__version__}"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `cnnmode` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CnnModeError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted; a run can be continued with --resume RUN_DIR", file=sys.stderr)
        return 130
