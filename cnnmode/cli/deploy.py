"""Verbs that put a model to work: `predict`, `video`, `export`, `bench`, `prune`, `embed`, `similar`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cnnmode.cli.common import add_option_flags, options_from_args, print_table
from cnnmode.deploy.options import DEVICE_HELP, BenchOptions, PredictOptions
from cnnmode.deploy.video.options import VideoOptions
from cnnmode.errors import UsageError


def _shown(p) -> str:
    """A prediction as the console shows it: top-k with probabilities, or a multi-label model's label set."""
    if p.labels is not None:
        return (", ".join(f"{c} {100 * p.probs[c]:.1f}%" for c in p.labels) or "(no label)")
    verdict = "" if p.unknown is None else (f"UNKNOWN (ood {p.ood_score:.2f}) " if p.unknown
                                             else f"known (ood {p.ood_score:.2f}) ")
    return verdict + ("uncertain " if p.uncertain else "") + ", ".join(f"{c} {100 * v:.1f}%" for c, v in p.top)


def cmd_predict(args: argparse.Namespace) -> int:
    from cnnmode.deploy.predict import Predictor, write_results

    o = options_from_args(PredictOptions, args)
    predictor = Predictor(args.artifact, device=o.device, backend=o.backend, calib_data=o.calib_data,
                          reject=o.reject, coverage=o.coverage)
    print(predictor.runner.describe() + (f"; {predictor.runner.reject_note}, rejecting above "
                                         f"{predictor.reject_at:.2f}" if predictor.reject_at is not None else ""))
    results = predictor.predict(args.inputs, o.topk, o.threshold, o.batch_size)
    print_table(None, ["file", "labels" if predictor.runner.multilabel else f"top-{o.topk}"],
                [[p.file, _shown(p)] for p in results.predictions], left=2, width=None)
    for f, reason in results.failed:
        print(f"failed {f}: {reason}", file=sys.stderr)
    if o.out:
        print(f"wrote {write_results(results, Path(o.out))}")
    print(f"{len(results.predictions)} predicted, {len(results.failed)} failed")
    return 1 if results.failed and not results.predictions else 0


def cmd_video(args: argparse.Namespace) -> int:
    from cnnmode.deploy.video import run_video

    s = run_video(args.artifact, options_from_args(VideoOptions, args))
    lag = f", label {s['latency_ms_p50']:.0f} ms after the frame (median)" if s["latency_ms_p50"] is not None else ""
    print(f"{s['frames']} frames read, {s['classified']} classified, {s['dropped']} dropped in {s['seconds']:.1f} s "
          f"({s['fps']:.1f} FPS{lag})" + (" — interrupted" if s["interrupted"] else ""))
    if s["bad"]:
        print(f"skipped {s['bad']} undecodable frame(s) of the {s['expected']} the file lists (damaged or cut off)",
              file=sys.stderr)
    for what in ("output", "csv"):
        if s[what]:
            print(f"wrote {s[what]}")
    return 130 if s["interrupted"] else 0


def cmd_export(args: argparse.Namespace) -> int:
    from cnnmode.deploy.export import export

    results = export(args.artifact, args.format.split(","), args.out, args.dynamic_batch, args.opset, args.calib_data)
    for r in results:
        print(f"{r['format']:<12} {r['file']}  {r['size_bytes'] / 2**20:.2f} MiB  max|Δlogit| "
              f"{r['max_abs_logit_diff']:.2e}  top-1 agreement {100 * r['top1_agreement']:.2f}% "
              f"({r['images']} {r['verified_on']})")
    if results and "unknowns" in results[0]:
        print(f"unknown images: {results[0]['unknowns']}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from cnnmode.deploy.bench import bench
    from cnnmode.deploy.runtime import MIN_AGREEMENT

    o = options_from_args(BenchOptions, args)
    try:
        sizes = [int(b) for b in o.batch_sizes.split(",")]
    except ValueError:
        raise UsageError(f"--batch-sizes takes whole numbers separated by commas (e.g. 1,8,64), got "
                         f"{o.batch_sizes!r}") from None
    r = bench(args.artifact, sizes, o.backends.split(","), o.device, o.data, profile=o.profile,
              out=o.out, say=print)
    eager = r["backends"].get("eager")
    rows, sections = [], []
    for name, row in r["backends"].items():
        if name == "auto":
            name = f"auto: {row['backend']}"
        acc = f"{100 * row['accuracy']:.2f}%" if "accuracy" in row else "–"
        for i, bs in enumerate(sizes):
            b = row["batches"][str(bs)]
            ratio = f"{b['img_s'] / eager['batches'][str(bs)]['img_s']:.1f}x" if eager else "–"
            first = i == 0
            agree = f"{100 * row['top1_agreement']:.2f}%" + ("" if row["passes_gate"] else "*")
            rows.append([name if first else "", str(bs), f"{b['p50_ms']:.2f}", f"{b['p95_ms']:.2f}",
                         f"{b['img_s']:.0f}", ratio, agree if first else "", acc if first else ""])
        sections.append(len(rows) - 1)
    print_table(f"{r['model']} at {r['img_size']}px on {r['device']} ({r['threads']} threads); agreement with eager "
                f"fp32 on {r['eval_images']} {r['eval_data']} images",
                ["backend", "batch", "p50 ms", "p95 ms", "img/s", "x eager", "agree", "acc"], rows,
                sections=sections, width=None)
    if not all(row["passes_gate"] for row in r["backends"].values()):
        print(f"* under the parity gate: top-1 agreement with eager fp32 below {100 * MIN_AGREEMENT:.1f}%")
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


def cmd_embed(args: argparse.Namespace) -> int:
    from cnnmode.deploy.embed import embed_images, save_embeddings
    from cnnmode.engine.device import pick_device

    device = pick_device(args.device)
    print(f"embedding on {device}")
    emb, failed = embed_images(args.artifact, args.data, args.layer, args.batch_size, device)
    for path, reason in failed:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    save_embeddings(emb, Path(args.out))
    labelled = sum(1 for label in emb.labels if label)
    print(f"{args.out}: {len(emb.paths)} images x {emb.features.shape[1]} features ({labelled} labelled by their "
          f"class folder){f'; {len(failed)} unreadable skipped' if failed else ''}")
    return 0


def cmd_similar(args: argparse.Namespace) -> int:
    from cnnmode.deploy.embed import most_similar
    from cnnmode.engine.device import pick_device

    device = pick_device(args.device)
    print(f"embedding the query on {device}")
    hits = most_similar(args.artifact, args.query, Path(args.index), args.k, args.layer, device)
    print_table(f"nearest to {args.query}", ["#", "image", "label", "cosine"],
                [[str(i), path, label, f"{score:.4f}"] for i, (path, label, score) in enumerate(hits, 1)], left=3)
    return 0


def add_parsers(verbs) -> None:
    """The predict, video, export, bench, prune, embed and similar verbs."""
    p = verbs.add_parser("embed", help="features of every image (penultimate layer or --layer) to .npy/.parquet",
                         description="Run the artifact's model on images, folders or globs and save each image's "
                                     "features with its path and label (its class folder's name): the input of the "
                                     "classifier head by default, or any named layer's output, average-pooled.")
    p.add_argument("artifact", metavar="ARTIFACT")
    p.add_argument("data", nargs="+", metavar="IMAGE_OR_DIR_OR_GLOB")
    p.add_argument("--out", required=True, metavar="FILE.npy|.parquet")
    p.add_argument("--layer", help="a module name from `cnnmode summary` (default: the head's input)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.set_defaults(func=cmd_embed)

    p = verbs.add_parser("similar", help="the images of an embed index nearest to a query image (cosine)",
                         description="Embed QUERY_IMAGE the way the index was built and list the --k nearest images.")
    p.add_argument("artifact", metavar="ARTIFACT")
    p.add_argument("query", metavar="QUERY_IMAGE")
    p.add_argument("--index", required=True, metavar="FILE.npy|.parquet", help="written by `cnnmode embed`")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--layer", help="the --layer the index was built with")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.set_defaults(func=cmd_similar)

    p = verbs.add_parser("predict", help="top-k predictions for images, folders or globs",
                         description="Predict with a model.pt artifact, a run folder, or an exported .onnx/.ts file.")
    p.add_argument("artifact", metavar="ARTIFACT")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR_OR_GLOB")
    add_option_flags(p, PredictOptions)
    p.set_defaults(func=cmd_predict)

    p = verbs.add_parser("video", help="classify a camera, a video file or a stream, frame by frame",
                         description="Classify live video with a model.pt, run folder or exported file: the label and "
                                     "its confidence drawn on each frame (green at or above --threshold, yellow "
                                     "below). Files are read frame by frame, none dropped, in batches; cameras and "
                                     "streams keep only the newest frame, so the label never lags behind.")
    p.add_argument("artifact", metavar="ARTIFACT")
    add_option_flags(p, VideoOptions)
    p.set_defaults(func=cmd_video)

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
    add_option_flags(p, BenchOptions)
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
