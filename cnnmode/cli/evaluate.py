"""Verbs that look at a model: `eval`, `explain`, `summary`."""
from __future__ import annotations

import argparse
import json
import sys

from cnnmode.cli.common import add_option_flags, options_from_args, print_table
from cnnmode.deploy.options import DEVICE_HELP
from cnnmode.errors import UsageError
from cnnmode.evaluation.options import ExplainOptions, SummaryOptions


def cmd_eval(args: argparse.Namespace) -> int:
    from cnnmode.evaluation.evaluate import run_eval

    out_dir, m = run_eval(args.target, data=args.data, split=args.split, out=args.out, device=args.device,
                         say=print, unknown=args.unknown, coverage=args.coverage)
    if m.get("task") == "multilabel":
        print(f"{args.split}: mAP {100 * m['map']:.2f}% (micro {100 * m['map_micro']:.2f}%)  subset accuracy "
              f"{100 * m['subset_accuracy']:.2f}%  F1 examples {100 * m['f1_samples']:.2f}%  Hamming loss "
              f"{m['hamming_loss']:.4f}  ECE {100 * m['ece']:.2f}%  ({m['count']} images)")
        print(f"eval: {out_dir}")
        return 0
    print(f"{args.split}: accuracy {100 * m['accuracy']:.2f}%  top-5 {100 * m['top5']:.2f}%  "
          f"balanced {100 * m['balanced_accuracy']:.2f}%  F1 macro {100 * m['f1_macro']:.2f}%  "
          f"ECE {100 * m['ece']:.2f}%  ({m['count']} images)")
    for pair in m["top_confused"][:3]:
        print(f"  confused: {pair['true']} → {pair['predicted']}: {pair['count']} ({100 * pair['share']:.1f}%)")
    if "rejection" in m:
        _print_rejection(m["rejection"])
    print(f"eval: {out_dir}")
    return 0


def _print_rejection(r: dict) -> None:
    kept = f"{100 * r['accuracy_kept']:.2f}%" if r["accuracy_kept"] is not None else "n/a"
    print(f"unknowns ({r['score']} score, rejecting above {r['threshold']:.2f}): {100 * r['coverage']:.1f}% of known "
          f"images kept, accuracy {kept} of them vs {100 * r['accuracy_all']:.2f}% of all")
    if "unknown" in r:
        u = r["unknown"]
        print(f"  unknown images: {100 * u['rejected']:.1f}% of {u['count']} rejected; AUROC "
              + ", ".join(f"{k} {v:.3f}" for k, v in u["auroc"].items()))


def cmd_calibrate(args: argparse.Namespace) -> int:
    import time

    from cnnmode.evaluation.rejection import calibrate

    start = time.perf_counter()
    path, r = calibrate(args.target, args.data, args.score, args.coverage, args.index_size, args.neighbours,
                        args.device)
    print(f"unknown-image score: {r.score}, {r.neighbours} neighbours among {len(r.index)} training embeddings "
          f"({r.index.numel() * 2 / 2**20:.1f} MiB), fitted on {len(r.held['msp'])} held-out images in "
          f"{time.perf_counter() - start:.1f} s; --reject auto keeps {100 * r.coverage:.0f}% of known images")
    print(f"wrote {path}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from cnnmode.evaluation.explain import run_explain

    out_dir, files, failed = run_explain(args.artifact, args.inputs, options_from_args(ExplainOptions, args))
    for path, reason in failed:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    for f in files:
        print(f"wrote {f}")
    print(f"explain: {out_dir}")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from cnnmode.evaluation.complexity import load_for_summary, summarize

    o = options_from_args(SummaryOptions, args)
    target, width, title = args.target, 0, args.target
    if o.recipe:
        target, width, title = _summary_from_recipe(o, args.target)
    elif not target:
        raise UsageError("summary needs MODEL_OR_ARTIFACT (a registry name or a model.pt) or --recipe RECIPE")
    o.batch_size, o.optimizer = o.batch_size or 128, o.optimizer or "adamw"
    model, size, channels = load_for_summary(target, o.img_size, o.num_classes, o.in_channels, o.stem, width)
    s = summarize(model, size, channels, o.batch_size, o.optimizer, not o.fp32)
    if o.json:
        print(json.dumps(s, indent=2))
        return 0
    print_table(f"{title} at {size}px", ["layer", "type", "output", "params", "MFLOPs"],
                [[r["name"], r["type"], "x".join(map(str, r["output_shape"][1:])), f"{r['params']:,}",
                  f"{r['flops'] / 1e6:.2f}"] for r in s["layers"]], left=2, width=None)
    mem = s["memory_bytes"]
    print(f"parameters: {s['params']:,} ({s['trainable_params']:,} trainable)")
    print(f"forward FLOPs per image: {s['flops_per_image'] / 1e9:.3f} G "
          f"(training ~{s['train_flops_per_image'] / 1e9:.3f} G)")
    print(f"training memory estimate at batch {o.batch_size} ({o.optimizer}, "
          f"{'fp32' if o.fp32 else 'mixed precision'} activations): "
          + ", ".join(f"{k} {v / 2**20:.0f} MiB" for k, v in mem.items()))
    return 0


def _summary_from_recipe(o: SummaryOptions, target: str | None) -> tuple[str, int, str]:
    """Fill the options a recipe decides (size, stem, batch, optimizer, precision) where no flag set them;
    returns (model name, width, title)."""
    from cnnmode.config import resolve_config

    if target:
        raise UsageError(f"give MODEL_OR_ARTIFACT ({target}) or --recipe {o.recipe}, not both")
    cfg = resolve_config(o.recipe)
    o.img_size = o.img_size or cfg.data.img_size or 32
    o.stem = cfg.model.stem if o.stem == "auto" else o.stem
    o.batch_size = o.batch_size or cfg.train.batch_size
    o.optimizer = o.optimizer or cfg.optim.name
    o.fp32 = o.fp32 or cfg.train.amp == "off"
    return cfg.model.name, cfg.model.width, f"recipe {o.recipe}: {cfg.model.name} ({cfg.model.stem} stem)"


def add_parsers(verbs) -> None:
    """The eval, explain and summary verbs."""
    p = verbs.add_parser("eval", help="metrics, predictions.csv and plots for a run or artifact on a data split",
                         description="Evaluate a run folder or model.pt artifact. Writes metrics.json, "
                                     "predictions.csv, classification_report.txt and plots (default <run>/eval/); "
                                     "for a run folder also refreshes report.html.")
    p.add_argument("target", metavar="RUN_DIR_OR_ARTIFACT")
    p.add_argument("--data", help="data path (default: the run's own data.path)")
    p.add_argument("--split", default="test", choices=["test", "val"])
    p.add_argument("--out", metavar="DIR", help="output folder (default <run>/eval)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--unknown", metavar="PATH", help="images of classes outside the training set (files, a folder, "
                                                    "a glob): adds the AUROC of each unknown-image score and the "
                                                    "share rejected to metrics.json and unknown_scores.png")
    p.add_argument("--coverage", type=float, metavar="SHARE",
                   help="judge rejection at this share of known images kept (default: the fitted one, 0.95)")
    p.set_defaults(func=cmd_eval)

    from cnnmode.config.schema import COVERAGE, INDEX_CAP, NEIGHBOURS, SCORES

    p = verbs.add_parser("calibrate", help="fit the unknown-image score (for --reject) of a trained model",
                         description="Fit the out-of-distribution score that lets predict, serve and video answer "
                                     "\"unknown\" (--reject): a k-NN index of training embeddings and the "
                                     "held-out images' scores, written beside the artifact as model.unknowns.pt. "
                                     "Training does this itself; run it for older runs, or to change the settings.")
    p.add_argument("target", metavar="RUN_DIR_OR_ARTIFACT")
    p.add_argument("--data", help="data path (default: the run's own data.path; an artifact file needs it)")
    p.add_argument("--score", default="combined", choices=SCORES,
                   help="what decides: combined (k-NN distance and max-softmax, standardised), knn or msp")
    p.add_argument("--coverage", type=float, default=COVERAGE, metavar="SHARE",
                   help=f"share of known images --reject auto keeps (default {COVERAGE})")
    p.add_argument("--index-size", type=int, default=INDEX_CAP, metavar="N",
                   help=f"training images in the k-NN index (default {INDEX_CAP}; 2 bytes per feature each)")
    p.add_argument("--neighbours", type=int, default=NEIGHBOURS, metavar="K",
                   help=f"the k of the k-NN distance (default {NEIGHBOURS})")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.set_defaults(func=cmd_calibrate)

    p = verbs.add_parser("explain", help="Grad-CAM heatmaps, feature maps and embedding plots",
                         description="Explain a model's predictions: CAM heatmaps over each image with its top-k "
                                     "classes (default <run>/explain/), feature-map grids, and a 2-D embedding "
                                     "of a data split.")
    p.add_argument("artifact", metavar="ARTIFACT_OR_RUN")
    p.add_argument("inputs", nargs="*", metavar="IMAGE_OR_DIR", help="images, folders or glob patterns")
    add_option_flags(p, ExplainOptions)
    p.set_defaults(func=cmd_explain)

    p = verbs.add_parser("summary", help="parameters, FLOPs, per-layer table and training-memory estimate",
                         description="Summarise a registered model (by name) or an artifact.")
    p.add_argument("target", metavar="MODEL_OR_ARTIFACT", nargs="?")
    add_option_flags(p, SummaryOptions)
    p.set_defaults(func=cmd_summary)
