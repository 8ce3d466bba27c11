"""Verbs that make models: `train`, `distill`, and the lists behind them (`recipes`, `models`)."""
from __future__ import annotations

import argparse
import textwrap

from cnnmode.cli.common import add_config_options, config_base, keys_help


def cmd_train(args: argparse.Namespace) -> int:
    if not args.resume:
        config_base(args)  # a typo is answered before torch is imported
    from cnnmode.workflows.train import train

    default = None if (args.config or args.resume) else "default"
    run_dir = train(recipe=args.recipe or default, config_file=args.config, overrides=args.overrides,
                    resume=args.resume, quiet=args.quiet)
    print(f"run: {run_dir}")
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from cnnmode.workflows.distill import distill

    run_dir, rows = distill(args.teacher, args.student, args.recipe, args.config, args.overrides, args.quiet)
    for role, r in rows.items():
        acc = f"{100 * r['test_accuracy']:.2f}%" if r["test_accuracy"] is not None else "n/a"
        print(f"{role:<8} {r['model']:<10} test accuracy {acc:>7}  params {r['params'] / 1e6:.2f} M")
    print(f"run: {run_dir}")
    return 0


def cmd_recipes(args: argparse.Namespace) -> int:
    from cnnmode.config import list_recipes

    for name, description in list_recipes().items():
        print(f"{name:<18} {description}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    if args.pretrained:
        return list_shipped()
    from cnnmode.models import MODELS, param_count

    names = [n for n in MODELS.names() if not n.startswith("tv:")] + [n for n in MODELS.names() if n.startswith("tv:")]
    print("parameters for 10 classes (at 32 px; torchvision models at 224 px)")
    for name in names:
        count = param_count(name, img_size=224 if name.startswith("tv:") else 32)
        text = f"{count / 1e6:.2f} M" if count is not None else imagenet_params(name)
        print(f"{name:<26} {text:>10}  {MODELS.describe(name)}")
    return 0


def list_shipped() -> int:
    """The models installed with the package, usable by name wherever a verb takes a run folder or a model file."""
    from cnnmode.pretrained import HERE, shipped_info, shipped_names

    print("shipped models (give the name where a run folder or model file goes: cnnmode predict NAME IMAGE)")
    for name in shipped_names():
        info = shipped_info(name)
        print(f"{name:<10} {info['model']:<14} {len(info['classes'])} classes at {info['img_size']} px  "
              f"test accuracy {100 * info['test_accuracy']:.2f}% ({info['test_set']})  "
              f"{(HERE / f'{name}.pt').stat().st_size / 2**20:.1f} MiB  card: {HERE / f'{name}.md'}")
    return 0


def imagenet_params(name: str) -> str:
    """A torchvision model's parameter count as its weights list it (with the 1000-class ImageNet head)."""
    from torchvision.models import get_model_weights

    try:
        return f"{list(get_model_weights(name.removeprefix('tv:')))[0].meta['num_params'] / 1e6:.2f} M*"
    except (ValueError, IndexError, KeyError):
        return "?"


def add_parsers(verbs) -> None:
    """The train, distill, recipes and models verbs."""
    p = verbs.add_parser("train", help="train a model; writes a run folder",
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         description="Train a model. Without --recipe/--config the `default` recipe is used: "
                                     "`speed` on a CPU, `cnnmode-resnet50` on a CUDA GPU. A recipe tuned for "
                                     "certain models hands over to a generic one (with a note) when model.name "
                                     "names another.",
                         epilog=keys_help() + textwrap.dedent("""

            examples:
              cnnmode train data.path=../shared/datasets/cifar10-jpeg.tar.gz
              cnnmode train --recipe simplecnn-mnist data.path=mnist train.epochs=3
              cnnmode train --config my.yaml optim.lr=0.01 run.name=try1
              cnnmode train --resume runs/try1 train.epochs=20   (step/plateau/constant schedules)"""))
    add_config_options(p)
    p.add_argument("--resume", metavar="RUN_DIR", help="continue a run from its last.pt")
    p.set_defaults(func=cmd_train)

    p = verbs.add_parser("distill", help="train a smaller student from a teacher (KL at temperature + CE)",
                         description="Knowledge distillation: trains --student with train.distill_* keys; starts "
                                     "from the teacher run's config unless --recipe/--config is given.")
    p.add_argument("--teacher", required=True, metavar="ARTIFACT_OR_RUN")
    p.add_argument("--student", required=True, metavar="MODEL")
    add_config_options(p)
    p.set_defaults(func=cmd_distill)

    verbs.add_parser("recipes", help="list named recipes").set_defaults(func=cmd_recipes)
    p = verbs.add_parser("models", help="list registered models with their parameter counts (--pretrained: the "
                                        "trained models that ship with cnnmode)",
                         description="Every registered model: CNN Mode's own, and every torchvision classification "
                                     "builder as tv:NAME. * = counted with the 1000-class ImageNet head.")
    p.add_argument("--pretrained", action="store_true",
                   help="list the trained models installed with the package instead (usable by name: "
                        "cnnmode predict cifar10 photo.jpg)")
    p.set_defaults(func=cmd_models)
