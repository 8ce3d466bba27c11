"""`cnnmode data check|restore|stats|split|preview|convert`: look at a dataset before training on it."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cnnmode.cli.common import add_option_flags, options_from_args, print_table
from cnnmode.data.tools.options import CheckOptions, ConvertOptions
from cnnmode.errors import UsageError

SHOW = 8  # examples printed per kind of finding; the JSON has them all
MEANING = {
    "empty": "zero-byte files (skipped by training)",
    "truncated": "truncated files (skipped by training)",
    "not_image": "files that are not images (skipped by training)",
    "unreadable": "unreadable files (skipped by training)",
    "too_small": "images smaller than --min-size",
    "unusual_mode": "unusual modes: converted to RGB/L when read",
    "exif_rotation": "EXIF-rotated images",
    "duplicate": "duplicate groups within a split",
    "leak": "groups shared between splits (leakage: inflates test accuracy)",
    "missing_class": "classes missing from a split",
    "imbalance": "imbalanced classes",
    "layout": "layout problems",
}


def _progress():
    """A rich progress bar and the callback that advances it."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("reading"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True)
    task = bar.add_task("read", total=None)
    return bar, lambda done, total: bar.update(task, completed=done, total=total)


def _finding_row(f: dict) -> list[str]:
    if "files" in f:
        where = f.get("split") or "+".join(f["splits"])
        files = ", ".join(x["path"] for x in f["files"][:3]) + (" ..." if len(f["files"]) > 3 else "")
        labels = " (labels differ)" if f["labels_differ"] else ""
        return [files, where, f"{f['match']}, {len(f['files'])} files, distance {f['distance']}{labels}"]
    if f["kind"] == "layout":
        return [", ".join(f["paths"][:3]) + (" ..." if len(f["paths"]) > 3 else ""), "", f"{f['problem']}; fix: {f['fix']}"]
    if "classes" in f:
        return [", ".join(f["classes"]), f["split"], f["detail"]]
    return [f.get("path", ""), f.get("split", ""), f["detail"]]


def print_check(report: dict) -> None:
    """The report on the console: class counts, a summary of findings, and examples of each."""
    counts, splits = report["counts"], list(report["counts"])
    rows = [[c, *[str(counts[s].get(c, 0)) for s in splits]] for c in report["classes"]]
    ratio = [f"{report['imbalance'][s]['ratio']:g}x" if report["imbalance"][s] else "-" for s in splits]
    print(f"{report['source']}: {report['files']} files, {len(report['classes'])} classes"
          + (f" (label sets: images counted once per label; with no label: "
             f"{', '.join(f'{s} {n}' for s, n in report['unlabelled'].items()) or 'none'})"
             if report.get("task") == "multilabel" else ""))
    print_table("images per class", ["class", *splits],
                rows + [["largest/smallest", *ratio]], sections=[len(rows) - 1])
    if report["clean"]:
        print("no problems found")
        return
    print_table("findings", ["kind", "count", "meaning"],
                [[k, str(n), MEANING.get(k, "")] for k, n in report["summary"].items()])
    for kind in report["summary"]:
        found = [f for f in report["findings"] if f["kind"] == kind]
        more = f" (first {SHOW} of {len(found)}; all in --json)" if len(found) > SHOW else ""
        print_table(f"{kind}{more}", ["files", "split", "detail"], [_finding_row(f) for f in found[:SHOW]],
                    left=3, width=160)


CHECK_FAILED = 3  # `data check` could not finish: distinct from 1, "problems found"


def cmd_check(args: argparse.Namespace) -> int:
    """0: clean; 1: problems found; 2: bad input; 3: the check could not finish (an unreadable archive, a disk
    error): a script must not take a failed check for a list of problems."""
    try:
        return _check(args)
    except UsageError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure of the check itself
        print(f"error: could not check {args.path}: {e}", file=sys.stderr)
        return CHECK_FAILED


def _check(args: argparse.Namespace) -> int:
    from cnnmode.data.tools import check_data, class_counts_figure, quarantine
    from cnnmode.files import atomic_write_text

    opts = options_from_args(CheckOptions, args)
    plot = Path(args.plot or (Path(args.json).with_suffix(".png") if args.json else "class_counts.png"))
    pairs = plot.with_name(plot.stem + "_duplicates.png")
    pairs.unlink(missing_ok=True)  # an earlier check's picture must not pass for this one's
    bar, progress = _progress()
    with bar:
        report = check_data(args.path, opts, progress=None if args.quiet else progress, pairs_png=pairs,
                            root=args.root)
    print_check(report)
    print(f"checked {report['files']} files in {report['seconds']:.1f} s")
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(report, indent=1))
        print(f"report: {args.json}")
    class_counts_figure(report["counts"], report["classes"], plot, f"images per class: {report['source']}")
    print(f"class counts: {plot}" + (f"; leaks and duplicates: {pairs}" if pairs.exists() else ""))
    if args.fix and report["to_move"]:
        moved, manifest = quarantine(report, Path(args.path), Path(args.fix))
        print(f"moved {moved} files to {args.fix} (undo: cnnmode data restore {args.fix}; manifest {manifest})")
    elif report["to_move"]:
        print(f"--fix QUARANTINE_DIR would move {len(report['to_move'])} files (bad files and dropped duplicates)")
    print(f"mislabelled images: cnnmode cv --folds 5 data.path={args.path}, then cnnmode data labels CV_DIR")
    return 0 if report["clean"] else 1


def cmd_labels(args: argparse.Namespace) -> int:
    from cnnmode.data.tools.label_errors import held_out, quarantine_suspects, rank_label_errors, write_label_report

    if args.top < 1:
        raise UsageError(f"--top {args.top}: show at least 1 image")
    held = held_out(Path(args.target))
    held.data = args.data or held.data
    issues = rank_label_errors(held)
    files = write_label_report(held, issues, Path(args.out or Path(args.target) / "label_issues"), args.top)
    print(f"{len(issues)} likely label errors among {held.covered} (cleanlab, confident learning)")
    if issues:
        print_table(None, ["rank", "file", "given", "suggested", "score"],
                    [[str(i), r["file"], r["given"], r["suggested"], f"{r['score']:.3f}"]
                     for i, r in enumerate(issues[:SHOW], 1)], left=2, width=None)
    for f in files.values():
        print(f"wrote {f}")
    if args.fix and issues:
        moved, manifest = quarantine_suspects(issues, held.data, Path(args.fix))
        print(f"moved {moved} files to {args.fix} (undo: cnnmode data restore {args.fix}; manifest {manifest})")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from cnnmode.data.tools import restore

    n, root = restore(Path(args.folder))
    print(f"restored {n} files to {root}")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from cnnmode.data.tools import dataset_stats
    from cnnmode.files import atomic_write_text

    plot = Path(args.plot or "data_stats.png")
    bar, progress = _progress()
    with bar:
        stats = dataset_stats(args.path, sample=args.sample, seed=args.seed, progress=None if args.quiet else progress,
                              root=args.root, plot=plot)
    print(f"{stats['source']}: {stats['images']} images ({stats['unreadable']} unreadable), "
          f"{stats['seconds']:.1f} s")
    fmt = lambda d: ", ".join(f"{k} {v}" for k, v in d.items())  # noqa: E731
    rows = [["mean (R, G, B)", " ".join(f"{v:.4f}" for v in stats["mean"])],
            ["std (R, G, B)", " ".join(f"{v:.4f}" for v in stats["std"])],
            ["from", f"{stats['stats_from']} training images"],
            ["width px", fmt(stats["width"])], ["height px", fmt(stats["height"])],
            ["commonest sizes", fmt(stats["sizes"])], ["aspect ratio", fmt(stats["aspect_ratio"])],
            ["modes", fmt(stats["modes"])], ["formats", fmt(stats["formats"])], ["file KB", fmt(stats["file_kb"])],
            *[[f"{split} images", str(sum(c.values()))] for split, c in stats["counts"].items()]]
    if stats.get("task") == "multilabel":
        rows[-len(stats["counts"]):] = [[f"{split} labels given", str(sum(c.values()))]
                                        for split, c in stats["counts"].items()]
        rows += [["labels per training image", f"{stats['labels_per_image']:.2f}"],
                 ["images with no label", fmt(stats["unlabelled"]) or "none"]]
    print_table("statistics", ["", "value"], rows, left=2)
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(stats, indent=1))
        print(f"statistics: {args.json}")
    print(f"picture: {plot}" + (f"; labels together: {plot.with_name(plot.stem + '-cooccurrence.png')}"
                                if stats.get("task") == "multilabel" else ""))
    return 0


def cmd_split(args: argparse.Namespace) -> int:
    from cnnmode.data.tools import split_dataset

    counts = split_dataset(args.path, Path(args.out), args.val, args.test, args.seed, args.mode, root=args.root)
    classes = sorted({c for per in counts.values() for c in per})
    print_table(f"{args.out} ({args.mode})", ["class", *counts],
                [[c, *[str(counts[s].get(c, 0)) for s in counts]] for c in classes])
    target = Path(args.out) / "index.csv" if args.mode == "csv" else Path(args.out)
    print(f"train with: cnnmode train data.path={target}")
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    from cnnmode.data.tools import preview_grid

    shown = preview_grid(args.path, Path(args.out), args.n, args.seed, root=args.root)
    print(f"{args.out}: " + ", ".join(f"{n} {split} images" for split, n in shown.items()))
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from cnnmode.data.tools import convert_coco, convert_idx

    o = options_from_args(ConvertOptions, args)
    if o.coco_images:
        counts = {o.split or "all": convert_coco(Path(args.source), Path(o.coco_images), Path(o.out), o.min_size,
                                                 o.pad, o.split)}
    else:
        names = [n.strip() for n in o.names.split(",")] if o.names else None
        counts = convert_idx(Path(args.source), Path(o.out), names)
    for split, per in counts.items():
        print(f"{split}: {sum(per.values())} images in {len(per)} classes")
    print(f"wrote {o.out}; train with: cnnmode train data.path={o.out}")
    return 0


def _add_root(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", default="./data", help="where named datasets are kept or downloaded to (data.root; "
                   "default ./data)")


def _add_tool_parsers(sub) -> None:
    p = sub.add_parser("stats", help="channel mean/std, sizes, aspect ratios, modes, formats",
                       description="The numbers of a dataset before training: per-channel mean/std of the "
                                   "training images (what train normalises with), size and aspect-ratio histograms, "
                                   "modes, formats, file sizes; a picture of them.")
    p.add_argument("path", metavar="PATH")
    _add_root(p)
    p.add_argument("--sample", type=int, default=5000, help="training images the mean/std come from (0 = all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--plot", metavar="FILE.png", help="default ./data_stats.png")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("split", help="stratified train/val/test folder tree (links or copies) or index CSV",
                       description="Carve val/ and test/ from train, class by class, reproducibly by --seed. "
                                   "Splits the source already has are kept as they are.")
    p.add_argument("path", metavar="PATH")
    _add_root(p)
    p.add_argument("--out", required=True, metavar="DIR", help="a new folder")
    p.add_argument("--val", type=float, default=0.1, help="fraction of train for val/ (default 0.1)")
    p.add_argument("--test", type=float, default=0.1, help="fraction of train for test/ when the source has "
                   "none (default 0.1)")
    p.add_argument("--seed", type=int, default=0)
    how = p.add_mutually_exclusive_group()
    how.add_argument("--link", dest="mode", action="store_const", const="link",
                     help="symbolic links to the source files (default; archives are copied)")
    how.add_argument("--copy", dest="mode", action="store_const", const="copy", help="copies of the files")
    how.add_argument("--csv", dest="mode", action="store_const", const="csv",
                     help="DIR/index.csv of path,label,split rows (a data.path of its own)")
    p.set_defaults(func=cmd_split, mode="link")

    p = sub.add_parser("preview", help="a grid of random images with their labels, per split",
                       description="Draw --n random images of each split with their labels into one picture.")
    p.add_argument("path", metavar="PATH")
    _add_root(p)
    p.add_argument("--n", type=int, default=25, help="images per split (default 25: a 5x5 grid)")
    p.add_argument("--out", default="preview.png", metavar="FILE.png", help="default ./preview.png")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_preview)

    p = sub.add_parser("convert", help="MNIST IDX files or COCO boxes → a class-folder tree",
                       description="IDX: SOURCE is a folder with train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                                   "t10k-* (optionally .gz). COCO: SOURCE is an instances_*.json, --coco-images its "
                                   "image folder; each object box becomes a crop in its category's folder.",
                       epilog="examples:\n  cnnmode data convert data/MNIST/raw --out mnist-png\n"
                              "  cnnmode data convert instances_val2017.json --coco-images val2017 --out coco-crops "
                              "--split test", formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", metavar="SOURCE")
    add_option_flags(p, ConvertOptions, required=("out",))
    p.set_defaults(func=cmd_convert)


def add_parsers(verbs) -> None:
    """`data` and its sub-verbs."""
    data = verbs.add_parser("data", help="check, describe, split, preview and convert datasets",
                            description="Look at a dataset before training on it.")
    sub = data.add_subparsers(dest="data_verb", metavar="SUBVERB", required=True)
    p = sub.add_parser("check", help="find corrupt files, duplicates, leakage between splits, imbalance, layout "
                                     "problems",
                       description="Check a dataset for files training would skip, odd images, duplicates, "
                                   "leakage between splits, imbalance and layout problems, before training on it. "
                                   "Exit code 0: clean; 1: problems found; 2: bad input; 3: the check could not "
                                   "finish (e.g. an unreadable archive).",
                       epilog="example: cnnmode data check ../shared/datasets/cifar10-jpeg.tar.gz --json check.json")
    p.add_argument("path", metavar="PATH", help="any data.path: a class-folder tree, an archive, a CSV list, or "
                   "cifar10/cifar100/mnist/fashion-mnist")
    _add_root(p)
    p.add_argument("--fix", metavar="QUARANTINE_DIR", help="move bad files and dropped duplicates there (a folder "
                   "source only), keeping relative paths; undo with `cnnmode data restore QUARANTINE_DIR`")
    add_option_flags(p, CheckOptions)
    p.add_argument("--json", metavar="FILE", help="write the full report as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="class-count picture (default: beside --json, else "
                   "./class_counts.png); the first leaks and duplicates go beside it as *_duplicates.png")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("labels", help="likely mislabelled images, from a cv study's out-of-fold predictions",
                       description="Rank likely label errors with cleanlab's confident learning from predictions "
                                   "made by models that did not train on the images: a `cnnmode cv` study covers "
                                   "every training image; a single run folder covers its held-out images. Writes "
                                   "label_issues.csv (rank, file, given, suggested, score) and suspects.png.",
                       epilog="example: cnnmode cv --recipe speed --folds 5 data.path=DATA && "
                              "cnnmode data labels runs/cv-speed-k5")
    p.add_argument("target", metavar="RUN_OR_CV_STUDY")
    p.add_argument("data", nargs="?", metavar="DATA", help="where the images are (default: the data the runs "
                                                            "trained on)")
    p.add_argument("--out", metavar="DIR", help="where the CSV and picture go (default: TARGET/label_issues)")
    p.add_argument("--top", type=int, default=24, metavar="N", help="suspects in the picture (default 24)")
    p.add_argument("--fix", metavar="QUARANTINE_DIR", help="move the flagged images there (a folder source only); "
                                                            "undo with `cnnmode data restore QUARANTINE_DIR`")
    p.set_defaults(func=cmd_labels)

    p = sub.add_parser("restore", help="undo `data check --fix`: move quarantined files back",
                       description="Move every file listed in QUARANTINE_DIR/manifest.json back to its place.")
    p.add_argument("folder", metavar="QUARANTINE_DIR")
    p.set_defaults(func=cmd_restore)
    _add_tool_parsers(sub)
