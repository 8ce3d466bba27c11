"""`cnnmode data check|restore|stats|split|preview|convert`: look at a dataset before training on it."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from cnnmode.cli.common import print_table

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
    print(f"{report['source']}: {report['files']} files, {len(report['classes'])} classes")
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


def cmd_check(args: argparse.Namespace) -> int:
    from cnnmode.data.tools import CheckOptions, check_data, class_counts_figure, quarantine
    from cnnmode.files import atomic_write_text

    opts = CheckOptions(min_size=args.min_size, near=args.near, max_imbalance=args.max_imbalance)
    bar, progress = _progress()
    with bar:
        report = check_data(args.path, opts, progress=None if args.quiet else progress)
    print_check(report)
    print(f"checked {report['files']} files in {report['seconds']:.1f} s")
    if args.json:
        atomic_write_text(Path(args.json), json.dumps(report, indent=1))
        print(f"report: {args.json}")
    plot = Path(args.plot or (Path(args.json).with_suffix(".png") if args.json else "class_counts.png"))
    class_counts_figure(report["counts"], report["classes"], plot, f"images per class: {report['source']}")
    print(f"class counts: {plot}")
    if args.fix and report["to_move"]:
        manifest = quarantine(report, Path(args.path), Path(args.fix))
        print(f"moved {len(report['to_move'])} files to {args.fix} (undo: cnnmode data restore {args.fix}; "
              f"manifest {manifest})")
    elif report["to_move"]:
        print(f"--fix QUARANTINE_DIR would move {len(report['to_move'])} files (bad files and dropped duplicates)")
    return 0 if report["clean"] else 1


def cmd_restore(args: argparse.Namespace) -> int:
    from cnnmode.data.tools import restore

    n, root = restore(Path(args.folder))
    print(f"restored {n} files to {root}")
    return 0


def add_parsers(verbs) -> None:
    """`data` and its sub-verbs."""
    data = verbs.add_parser("data", help="check, describe, split, preview and convert datasets",
                            description="Look at a dataset before training on it.")
    sub = data.add_subparsers(dest="data_verb", metavar="SUBVERB", required=True)
    p = sub.add_parser("check", help="find corrupt files, duplicates, leakage between splits, imbalance, layout "
                                     "problems",
                       description="Check a dataset (a class-folder tree or a .tar/.tar.gz/.zip of one). Exit code "
                                   "0: clean; 1: problems found; 2: bad input.",
                       epilog="example: cnnmode data check ../shared/datasets/cifar10-jpeg.tar.gz --json check.json")
    p.add_argument("path", metavar="PATH", help="class-folder tree or archive (any data.path form but a named set)")
    p.add_argument("--fix", metavar="QUARANTINE_DIR", help="move bad files and dropped duplicates there (a folder "
                   "source only), keeping relative paths; undo with `cnnmode data restore QUARANTINE_DIR`")
    p.add_argument("--min-size", type=int, default=16, metavar="PX", help="flag images smaller than this on a side "
                   "(default 16)")
    p.add_argument("--near", type=int, default=4, metavar="BITS", help="near-duplicates: perceptual hashes at most "
                   "this many bits apart of 64 (default 4; -1: exact duplicates only)")
    p.add_argument("--max-imbalance", type=float, default=10.0, metavar="RATIO",
                   help="flag a largest/smallest train class ratio from this up (default 10)")
    p.add_argument("--json", metavar="FILE", help="write the full report as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="class-count picture (default: beside --json, else "
                   "./class_counts.png)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("restore", help="undo `data check --fix`: move quarantined files back",
                       description="Move every file listed in QUARANTINE_DIR/manifest.json back to its place.")
    p.add_argument("folder", metavar="QUARANTINE_DIR")
    p.set_defaults(func=cmd_restore)
