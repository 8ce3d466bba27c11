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


def cmd_eval(args: argparse.Namespace) -> int:
    from cnnmode.evaluation.evaluate import run_eval

    out_dir, m = run_eval(args.target, data=args.data, split=args.split, out=args.out, device=args.device)
    print(f"{args.split}: accuracy {100 * m['accuracy']:.2f}%  top-5 {100 * m['top5']:.2f}%  "
          f"F1 macro {100 * m['f1_macro']:.2f}%  ECE {100 * m['ece']:.2f}%  ({m['count']} images)")
    for pair in m["top_confused"][:3]:
        print(f"  confused: {pair['true']} → {pair['predicted']}: {pair['count']} ({100 * pair['share']:.1f}%)")
    print(f"eval: {out_dir}")
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

    p = verbs.add_parser("eval", help="metrics, predictions.csv and plots for a run or artifact on a data split",
                         description="Evaluate a run folder or model.pt artifact. Writes metrics.json, "
                                     "predictions.csv, classification_report.txt and plots (default <run>/eval/); "
                                     "for a run folder also refreshes report.html.")
    p.add_argument("target", metavar="RUN_DIR_OR_ARTIFACT")
    p.add_argument("--data", help="data path (default: the run's own data.path)")
    p.add_argument("--split", default="test", choices=["test", "val"])
    p.add_argument("--out", metavar="DIR", help="output folder (default <run>/eval)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, mps")
    p.set_defaults(func=cmd_eval)

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
