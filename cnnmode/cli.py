"""`cnnmode VERB ...`: one plain function per verb over the Python API."""
from __future__ import annotations

import argparse
import sys
import textwrap

from cnnmode.errors import CnnModeError, UsageError


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


def _studies_help() -> str:
    from cnnmode.experiments.studies import STUDIES

    return "built-in studies:\n" + "\n".join(f"  {n:<16} {STUDIES.describe(n)}" for n in STUDIES.names())


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


def cmd_summary(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console
    from rich.table import Table

    from cnnmode.evaluation.complexity import load_for_summary, summarize

    model, size, channels = load_for_summary(args.target, args.img_size, args.num_classes, args.in_channels)
    s = summarize(model, size, channels, args.batch_size, args.optimizer, not args.fp32)
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    table = Table(title=f"{args.target} at {size}px", show_lines=False)
    for col in ("layer", "type", "output", "params", "MFLOPs"):
        table.add_column(col, justify="left" if col in ("layer", "type") else "right")
    for r in s["layers"]:
        table.add_row(r["name"], r["type"], "x".join(map(str, r["output_shape"][1:])), f"{r['params']:,}",
                      f"{r['flops'] / 1e6:.2f}")
    console = Console()
    console.print(table)
    mem = s["memory_bytes"]
    console.print(f"parameters: {s['params']:,} ({s['trainable_params']:,} trainable)")
    console.print(f"forward FLOPs per image: {s['flops_per_image'] / 1e9:.3f} G "
                  f"(training ~{s['train_flops_per_image'] / 1e9:.3f} G)")
    console.print(f"training memory estimate at batch {args.batch_size} ({args.optimizer}, "
                  f"{'fp32' if args.fp32 else 'mixed precision'} activations): "
                  + ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in mem.items()))
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from cnnmode.evaluation.explain import run_explain

    out_dir, files, failed = run_explain(args.artifact, args.inputs, args.method, args.layer, args.target, args.out,
                                         args.features, args.embedding, args.tsne, args.data, args.split)
    for path, reason in failed:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    for f in files:
        print(f"wrote {f}")
    print(f"explain: {out_dir}")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rich.console import Console
    from rich.table import Table

    from cnnmode.deploy.predict import Predictor, write_results

    results = Predictor(args.artifact).predict(args.inputs, args.topk, args.threshold, args.batch_size)
    table = Table(show_header=True)
    table.add_column("file", overflow="fold")
    table.add_column(f"top-{args.topk}", overflow="fold")
    for p in results.predictions:
        tops = ", ".join(f"{c} {100 * v:.1f}%" for c, v in p.top)
        table.add_row(p.file, ("[yellow]uncertain[/] " if p.uncertain else "") + tops)
    Console(soft_wrap=True).print(table)
    for f, reason in results.failed:
        print(f"failed {f}: {reason}", file=sys.stderr)
    if args.out:
        print(f"wrote {write_results(results, Path(args.out))}")
    print(f"{len(results.predictions)} predicted, {len(results.failed)} failed")
    return 1 if results.failed and not results.predictions else 0


def cmd_export(args: argparse.Namespace) -> int:
    from cnnmode.deploy.export import calibration_images, export

    calib = calibration_images(args.calib_data, args.artifact)
    for r in export(args.artifact, args.format.split(","), args.out, args.dynamic_batch, args.opset, calib):
        print(f"{r['format']:<12} {r['file']}  {r['size_bytes'] / 2**20:.2f} MiB  max|Δlogit| "
              f"{r['max_abs_logit_diff']:.2e}  top-1 agreement {100 * r['top1_agreement']:.2f}% "
              f"({r['images']} {r['verified_on']})")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from cnnmode.deploy.bench import bench

    sizes = [int(b) for b in args.batch_sizes.split(",")]
    r = bench(args.artifact, sizes, args.backends.split(","), args.device, args.data, profile=args.profile,
              out=args.out)
    table = Table(title=f"{r['model']} at {r['img_size']}px on {r['device']} ({r['threads']} threads); agreement "
                        f"with eager fp32 on {r['eval_images']} {r['eval_data']} images")
    table.add_column("backend", no_wrap=True)
    for column in ("batch", "p50 ms", "p95 ms", "img/s", "x eager", "agree", "acc"):
        table.add_column(column, justify="right")
    eager = r["backends"].get("eager")
    for name, row in r["backends"].items():
        acc = f"{100 * row['accuracy']:.2f}%" if "accuracy" in row else "–"
        for i, bs in enumerate(sizes):
            b = row["batches"][str(bs)]
            ratio = f"{b['img_s'] / eager['batches'][str(bs)]['img_s']:.1f}x" if eager else "–"
            first = i == 0
            table.add_row(name if first else "", str(bs), f"{b['p50_ms']:.2f}", f"{b['p95_ms']:.2f}",
                          f"{b['img_s']:.0f}", ratio, f"{100 * row['top1_agreement']:.2f}%" if first else "",
                          acc if first else "", end_section=i == len(sizes) - 1)
    Console(soft_wrap=True).print(table)
    if "profile" in r:
        print(f"trace: {r['profile']}")
    print(f"bench: {r['file']}")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    from cnnmode.deploy.compress import run_prune

    r = run_prune(args.artifact, args.amount, args.structured, args.finetune_epochs, args.data, args.out)
    line = (f"sparsity {100 * r['sparsity']:.1f}%  accuracy {100 * r['accuracy_before']:.2f}% → "
            f"{100 * r['accuracy_pruned']:.2f}% pruned")
    if "accuracy_finetuned" in r:
        line += f" → {100 * r['accuracy_finetuned']:.2f}% after {r['finetune_epochs']} fine-tuning epoch(s)"
    print(line)
    print(f"non-zero weights {r['nonzero_params']:,} of {r['params']:,} "
          f"({r['nonzero_size_bytes'] / 2**20:.2f} MiB of {r['dense_size_bytes'] / 2**20:.2f} MiB dense)")
    print(f"pruned: {r['artifact']}")
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from cnnmode.deploy.artifact import load_artifact
    from cnnmode.deploy.compress import distill_overrides
    from cnnmode.engine.trainer import train

    base, overrides = distill_overrides(args.teacher, args.student, args.overrides)
    config = args.config or (None if args.recipe else base)
    run_dir = train(recipe=None if config else (args.recipe or "default"), config_file=config, overrides=overrides,
                    quiet=args.quiet)
    teacher, student = load_artifact(args.teacher), load_artifact(run_dir)
    rows = {"teacher": {"model": teacher.name, "test_accuracy": teacher.meta.get("test", {}).get("accuracy"),
                        "params": sum(p.numel() for p in teacher.model.parameters())},
            "student": {"model": student.name, "test_accuracy": student.meta["test"]["accuracy"],
                        "params": sum(p.numel() for p in student.model.parameters())}}
    (Path(run_dir) / "distill.json").write_text(json.dumps(rows, indent=2))
    for role, r in rows.items():
        acc = f"{100 * r['test_accuracy']:.2f}%" if r["test_accuracy"] is not None else "n/a"
        print(f"{role:<8} {r['model']:<10} test accuracy {acc:>7}  params {r['params'] / 1e6:.2f} M")
    print(f"run: {run_dir}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from cnnmode.experiments.compare import COLUMNS, format_cell, compare_runs

    rows, out = compare_runs(args.runs, args.out)
    table = Table(title="comparison")
    for column in COLUMNS:
        table.add_column(column, justify="left" if column in ("run", "model") else "right")
    for row in rows:
        table.add_row(*(format_cell(c, row.get(c)) for c in COLUMNS))
    Console(width=200).print(table)
    print(f"comparison: {out / 'comparison.md'} (also .csv and .png)")
    return 0


def cmd_lr_find(args: argparse.Namespace) -> int:
    from datetime import datetime
    from pathlib import Path

    from cnnmode.config import build_config
    from cnnmode.experiments.lr_find import run_lr_find

    recipe = args.recipe if (args.recipe or args.config) else "default"
    cfg = build_config(recipe, args.config, args.overrides)
    out = args.out or Path(cfg.run.dir) / f"lr-find-{datetime.now():%Y%m%d-%H%M%S}"
    r = run_lr_find(cfg, out, start_lr=args.start_lr, end_lr=args.end_lr, steps=args.steps)
    print(f"suggested lr {r['suggested_lr']:.3g} (steepest descent of the smoothed loss; minimum at "
          f"{r['min_loss_lr']:.3g}) after {len(r['lrs'])} steps")
    print(f"plot: {r['plot']}")
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    import json

    from cnnmode.config import build_config
    from cnnmode.experiments.baseline import run_hog_svm

    overrides = list(args.overrides) + ([f"data.path={args.data}"] if args.data else [])
    run_dir = run_hog_svm(build_config(overrides=overrides), args.img_size, args.kernel, args.components, args.C,
                          args.cell, args.thumbnail)
    m = json.loads((run_dir / "metrics.json").read_text())
    print(f"hog-svm ({args.kernel}): test accuracy {100 * m['test']['accuracy']:.2f}%  F1 macro "
          f"{100 * m['test']['f1_macro']:.2f}%  fit {m['train_time_s']:.0f} s on {m['baseline']['features']} "
          f"features per image")
    print(f"run: {run_dir}")
    return 0


def _print_rows(title: str, columns: list[str], rows: list[list[str]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*row)
    Console(width=200).print(table)


def cmd_ablate(args: argparse.Namespace) -> int:
    from cnnmode.experiments.ablate import run_study, summary

    r = run_study(args.study, args.base, args.overrides, args.epochs, args.subset, args.seeds, args.out, args.quiet)
    _print_rows(f"ablation: {r['study']}", ["setting", "runs", "test acc (mean ± std)", "train time (mean)"],
                [[s["setting"], str(s["runs"]),
                  f"{100 * s['mean_test_acc']:.2f}% ± {100 * s['std_test_acc']:.2f}" if s["runs"] else "failed",
                  f"{s['mean_train_time_s']:.1f} s" if s["runs"] else ""] for s in summary(r["rows"])])
    failed = sum(row["status"] == "failed" for row in r["rows"])
    print(f"results: {r['dir'] / 'results.md'} (also results.csv, all_results.json, plots)"
          + (f"; {failed} run(s) failed (see error.txt in their folders)" if failed else ""))
    return 1 if failed == len(r["rows"]) else 0


def cmd_search(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cnnmode.experiments.search import run_search

    r = run_search(args.space, args.trials, args.storage, args.study, args.timeout, args.pruner, args.out,
                   args.overrides, args.seed, args.quiet)
    states = ", ".join(f"{n} {s}" for s, n in r["states"].items())
    print(f"study {r['study']}: {r['trials']} trials ({states})")
    if "best_trial" in r:
        params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["best_params"].items())
        print(f"best: trial {r['best_trial']}, validation accuracy {100 * r['best_val_acc']:.2f}%  ({params})")
        print(f"best config: {r['best_config']}  (cnnmode train --config {r['best_config']})")
    print(f"trials: {r['dir']}/trials.md; plots: {', '.join(Path(p).name for p in r['plots']) or 'none yet'}")
    return 0 if "best_trial" in r else 1


def cmd_cv(args: argparse.Namespace) -> int:
    from cnnmode.experiments.kfold import run_cv

    if args.config and args.recipe:
        raise UsageError("give either --recipe or --config, not both")
    base = args.config or args.recipe
    r = run_cv(args.folds, base, args.overrides, args.out, args.quiet)
    _print_rows(f"{r['folds']}-fold cross-validation", ["fold", "best val acc", "best epoch", "test acc"],
                [[str(f["fold"]), f"{100 * f['best_val_acc']:.2f}%", str(f["best_epoch"]),
                  f"{100 * f['test_acc']:.2f}%"] for f in r["per_fold"]])
    print(f"validation accuracy {100 * r['mean_val_acc']:.2f}% ± {100 * r['std_val_acc']:.2f} (mean ± std)")
    print(f"cv: {r['dir']}/cv.md (also cv.json, cv.csv)")
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
    from cnnmode.config import all_keys

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

    p = verbs.add_parser("explain", help="Grad-CAM heatmaps, feature maps and embedding plots",
                         description="Explain a model's predictions: CAM heatmaps over each image with its top-k "
                                     "classes (default <run>/explain/), feature-map grids, and a 2-D embedding "
                                     "of a data split.")
    p.add_argument("artifact", metavar="ARTIFACT_OR_RUN")
    p.add_argument("inputs", nargs="*", metavar="IMAGE_OR_DIR", help="images, folders or glob patterns")
    p.add_argument("--method", default="gradcam", choices=["gradcam", "gradcam++", "scorecam"])
    p.add_argument("--layer", help="target layer name (default: the architecture's last feature block)")
    p.add_argument("--target", metavar="CLASS", help="explain this class instead of the predicted one")
    p.add_argument("--features", metavar="LAYER", help="also draw the first 16 feature maps of LAYER")
    p.add_argument("--embedding", action="store_true", help="PCA scatter of penultimate features over a split")
    p.add_argument("--tsne", action="store_true", help="with --embedding: also a t-SNE scatter")
    p.add_argument("--data", help="data for --embedding (default: the run's own)")
    p.add_argument("--split", default="test", choices=["test", "val"])
    p.add_argument("--out", metavar="DIR")
    p.set_defaults(func=cmd_explain)

    p = verbs.add_parser("predict", help="top-k predictions for images, folders or globs",
                         description="Predict with a model.pt artifact, a run folder, or an exported .onnx/.ts file.")
    p.add_argument("artifact", metavar="ARTIFACT")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR_OR_GLOB")
    p.add_argument("--topk", type=int, default=3)
    p.add_argument("--threshold", type=float, default=0.0, help="mark predictions below this confidence uncertain")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--out", metavar="FILE.csv|.json")
    p.set_defaults(func=cmd_predict)

    p = verbs.add_parser("export", help="TorchScript / ONNX / int8 files, each verified by its own runtime",
                         description="Export an artifact (or run folder) and verify every file against the model; "
                                     "writes <run>/export/ with preprocess.json and export.json.")
    p.add_argument("artifact", metavar="ARTIFACT")
    p.add_argument("--format", default="onnx", help="torchscript, onnx, onnx-int8, int8, or all (comma-separated)")
    p.add_argument("--dynamic-batch", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--opset", type=int, default=18)
    p.add_argument("--calib-data", metavar="PATH", help="real images to calibrate and verify with "
                                                        "(default: a run folder's own data)")
    p.add_argument("--out", metavar="DIR")
    p.set_defaults(func=cmd_export)

    p = verbs.add_parser("bench", help="inference latency and throughput per backend and batch size",
                         description="Benchmark an artifact or run folder. Agreement and accuracy are measured on "
                                     "the test split of --data (or the run's own data), else on generated images.")
    p.add_argument("artifact", metavar="ARTIFACT")
    p.add_argument("--batch-sizes", default="1,8,64")
    p.add_argument("--backends", default="eager,eager-bf16,torchscript,onnxruntime",
                   help="comma-separated: eager, eager-bf16, compile, torchscript, onnxruntime, int8 (ONNX "
                        "Runtime static int8), int8-x86 (PyTorch PT2E int8 compiled to oneDNN kernels; fastest on "
                        "x86 CPUs with VNNI/AMX)")
    p.add_argument("--device", default="cpu", help="cpu or cuda (onnxruntime backends run on the CPU)")
    p.add_argument("--data", help="images with labels for agreement/accuracy and int8 calibration")
    p.add_argument("--profile", action="store_true", help="write a torch.profiler Chrome trace of the eager model")
    p.add_argument("--out", metavar="FILE.json")
    p.set_defaults(func=cmd_bench)

    p = verbs.add_parser("prune", help="prune weights (global or channel-structured), optionally fine-tune",
                         description="Prune an artifact with torch.nn.utils.prune; reports sparsity, size and "
                                     "accuracy before/after; writes <run>/pruned/model.pt and prune.json.")
    p.add_argument("artifact", metavar="ARTIFACT")
    p.add_argument("--amount", type=float, default=0.3, help="fraction of weights (or channels) to remove")
    p.add_argument("--structured", action="store_true", help="remove whole conv output channels (L2 norm)")
    p.add_argument("--finetune-epochs", type=int, default=0)
    p.add_argument("--data", help="data for accuracy and fine-tuning (default: the run's own)")
    p.add_argument("--out", metavar="DIR")
    p.set_defaults(func=cmd_prune)

    p = verbs.add_parser("distill", help="train a smaller student from a teacher (KL at temperature + CE)",
                         description="Knowledge distillation: trains --student with train.distill_* keys; starts "
                                     "from the teacher run's config unless --recipe/--config is given.")
    p.add_argument("--teacher", required=True, metavar="ARTIFACT_OR_RUN")
    p.add_argument("--student", required=True, metavar="MODEL")
    p.add_argument("--recipe")
    p.add_argument("--config", metavar="FILE.yaml")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(func=cmd_distill)

    p = verbs.add_parser("summary", help="parameters, FLOPs, per-layer table and training-memory estimate",
                         description="Summarise a registered model (by name) or an artifact.")
    p.add_argument("target", metavar="MODEL_OR_ARTIFACT")
    p.add_argument("--img-size", type=int, help="input side (default: the artifact's, or 32)")
    p.add_argument("--batch-size", type=int, default=128, help="batch for the memory estimate")
    p.add_argument("--num-classes", type=int, default=10, help="classes, for a model given by name")
    p.add_argument("--in-channels", type=int, default=3, help="input channels, for a model given by name")
    p.add_argument("--optimizer", default="adamw", choices=all_keys()["optim.name"].metadata["choices"])
    p.add_argument("--fp32", action="store_true", help="estimate activations in fp32 instead of bf16/fp16")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_summary)

    p = verbs.add_parser("compare", help="one table and bar plot across run folders",
                         description="Compare finished run folders: test accuracy, top-5, F1 macro, best epoch, "
                                     "training time, img/s, peak memory, parameters. Writes comparison.csv/.md/.png.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", default="comparison", help="output folder (default ./comparison)")
    p.set_defaults(func=cmd_compare)

    p = verbs.add_parser("lr-find", help="exponential learning-rate sweep with a suggested LR",
                         description="Train fresh weights for a few hundred steps while the LR grows exponentially; "
                                     "plots the smoothed loss against the LR and marks the suggested LR.")
    p.add_argument("--recipe", help="named recipe (default: default)")
    p.add_argument("--config", metavar="FILE.yaml")
    p.add_argument("--start-lr", type=float, default=1e-6)
    p.add_argument("--end-lr", type=float, default=10.0)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--out", help="output folder (default <run.dir>/lr-find-<time>)")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(func=cmd_lr_find)

    p = verbs.add_parser("baseline", help="a classical baseline (HOG + SVM) reported like a CNN run",
                         description="HOG features (scikit-image) at two cell sizes plus a colour thumbnail, "
                                     "standardised, then a linear SVM on an RBF kernel map (scikit-learn "
                                     "Nystroem), fitted on the train split and scored on the test split; writes a run "
                                     "folder with metrics.json and eval/ like `cnnmode train`.")
    p.add_argument("method", choices=["hog-svm"])
    p.add_argument("--data", help="data.path (default: cifar10)")
    p.add_argument("--img-size", type=int, default=0, help="resize images to this side first (0 = as they are)")
    p.add_argument("--kernel", choices=["rbf", "linear"], default="rbf")
    p.add_argument("--components", type=int, default=3000, help="Nystroem components for the RBF kernel map")
    p.add_argument("--C", type=float, default=1.0, help="SVM regularisation (smaller = stronger)")
    p.add_argument("--cell", type=int, default=4, help="HOG cell size in pixels (a second HOG uses twice this)")
    p.add_argument("--thumbnail", type=int, default=8,
                   help="also feed the image's colours averaged to this many pixels a side (0 = HOG only)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config keys (data.*, run.*, train.seed)")
    p.set_defaults(func=cmd_baseline)

    p = verbs.add_parser("ablate", help="a grid of runs differing only in the studied keys, in one table",
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         description="Run an ablation study: every setting (x seeds) is a run folder in the study "
                                     "folder; writes all_results.json, results.csv/.md and plots. Rerunning skips "
                                     "finished runs and resumes unfinished ones; a failing run is recorded and the "
                                     "study goes on.",
                         epilog=_studies_help() + textwrap.dedent("""

            custom study (YAML):  settings: {low: {optim.lr: 0.01}, high: {optim.lr: 0.1}}
                             or:  grid: {optim.lr: [0.01, 0.1], train.batch_size: [64, 128]}
            examples:
              cnnmode ablate optimizer --epochs 3 --subset 0.2 data.path=../shared/datasets/cifar10-jpeg.tar.gz
              cnnmode ablate my_grid.yaml --base cnnmode-resnet50 --seeds 3"""))
    p.add_argument("study", metavar="STUDY", help="a built-in study name or a study YAML file")
    p.add_argument("--base", metavar="RECIPE_OR_CONFIG", help="recipe name or config YAML (default: default)")
    p.add_argument("--epochs", type=int, help="train.epochs for every run")
    p.add_argument("--subset", type=float, help="data.subset for every run (fraction < 1 or count)")
    p.add_argument("--seeds", type=int, default=1, help="seeds per setting (0..K-1)")
    p.add_argument("--out", metavar="DIR", help="study folder (default <run.dir>/ablate/<study>)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config keys for every run")
    p.set_defaults(func=cmd_ablate)

    p = verbs.add_parser("search", help="Optuna hyperparameter search (TPE, pruning, shareable storage)",
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         description="Search config keys with Optuna's TPE sampler, pruning trials on per-epoch "
                                     "validation accuracy. Every process runs --trials trials; processes given the "
                                     "same --study and --storage (on any machines) share one study.",
                         epilog=textwrap.dedent("""\
            space file:
              base: default                # recipe or config YAML (optional)
              fixed: {train.epochs: 4}     # keys every trial uses (optional)
              params:
                optim.lr: {type: float, low: 0.01, high: 1.0, log: true}
                train.batch_size: {type: categorical, choices: [128, 256]}
                model.width: {type: int, low: 32, high: 96, step: 32}
            writes trials.csv/.md, best.yaml, search.json, optimization_history/param_importances/
            parallel_coordinate .png and search.html in the study folder.
            examples:
              cnnmode search --space space.yaml --trials 20
              cnnmode search --space space.yaml --study lr --storage postgresql://user:pw@db/optuna  (on each machine)"""))
    p.add_argument("--space", required=True, metavar="SPACE.yaml")
    p.add_argument("--trials", type=int, default=10, help="trials this process runs")
    p.add_argument("--storage", metavar="URL", help="Optuna storage URL (default sqlite:///<study folder>/study.db)")
    p.add_argument("--study", metavar="NAME", help="study name (default: the space file's name)")
    p.add_argument("--timeout", type=float, metavar="S", help="stop starting trials after S seconds")
    p.add_argument("--pruner", default="median", choices=["median", "halving", "none"])
    p.add_argument("--seed", type=int, help="sampler seed")
    p.add_argument("--out", metavar="DIR", help="study folder (default <run.dir>/search/<study>)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config keys for every trial")
    p.set_defaults(func=cmd_search)

    p = verbs.add_parser("cv", help="stratified K-fold cross-validation on the training split",
                         description="Train one run per fold (fold i validates on the i-th stratified fold of the "
                                     "training split, via data.folds/data.fold); prints per-fold best validation "
                                     "accuracy and mean ± std; writes cv.json/.csv/.md. Rerunning resumes.")
    p.add_argument("--folds", type=int, required=True, metavar="K")
    p.add_argument("--recipe", help="named recipe (default: default)")
    p.add_argument("--config", metavar="FILE.yaml")
    p.add_argument("--out", metavar="DIR", help="cv folder (default <run.dir>/cv-<recipe>-k<K>)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(func=cmd_cv)

    verbs.add_parser("recipes", help="list named recipes").set_defaults(func=cmd_recipes)
    verbs.add_parser("models", help="list registered models").set_defaults(func=cmd_models)
    return parser


def _version() -> str:
    from cnnmode import __version__

    return f"cnnmode {__version__}"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `cnnmode` console script."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may also follow options (`VERB ARG --opt X key=value`), which argparse cannot split itself
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args)
    except CnnModeError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        hint = ("rerun the same command to continue where it stopped" if args.verb in ("ablate", "cv", "search")
                else "a run can be continued with --resume RUN_DIR")
        print(f"interrupted; {hint}", file=sys.stderr)
        return 130
    except Exception as e:  # an unforeseen failure still gets one line; CNNMODE_DEBUG=1 shows the traceback
        import os

        if os.environ.get("CNNMODE_DEBUG"):
            raise
        print(f"error: {type(e).__name__}: {e} (set CNNMODE_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
