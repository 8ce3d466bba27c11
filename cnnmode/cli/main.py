"""`cnnmode VERB ...`: the parser assembled from one module per verb family, and the one place errors become a
single line on stderr with exit code 2 (bad input) or 1 (a failure while running)."""
from __future__ import annotations

import argparse
import os
import sys

from cnnmode.cli import data, deploy, evaluate, experiments, serve, train
from cnnmode.errors import CnnModeError

FAMILIES = (train, evaluate, deploy, serve, experiments, data)
RESUMABLE_VERBS = ("ablate", "cv", "search")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every verb."""
    from cnnmode import __version__

    parser = argparse.ArgumentParser(
        prog="cnnmode", description="Train, evaluate and deploy image classifiers with PyTorch.",
        epilog="Quick start: cnnmode train data.path=cifar10   (or a folder / .tar.gz of class folders)")
    parser.add_argument("--version", action="version", version=f"cnnmode {__version__}")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    for family in FAMILIES:
        family.add_parsers(verbs)
    return parser


def tolerate_console_encoding() -> None:
    """A console that cannot show a character (a Windows code page, LANG=C) gets `?` instead of a crash."""
    for stream in (sys.stdout, sys.stderr):
        encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
        if encoding != "utf8" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")


def lost_a_peer(error: Exception) -> bool:
    """Under torchrun: whether `error` is this rank's side of another rank's failure."""
    if "RANK" not in os.environ:
        return False
    from cnnmode.engine.distributed import lost_a_peer as lost

    return lost(error)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `cnnmode` console script."""
    tolerate_console_encoding()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and os.environ.get("RANK", "0") != "0":
        sys.stdout = open(os.devnull, "w")  # under torchrun only rank 0 prints progress; errors still reach stderr
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
    except BrokenPipeError:  # the reader went away (`cnnmode models | head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes at exit
        return 0
    except KeyboardInterrupt:
        hint = ("rerun the same command to continue where it stopped" if args.verb in RESUMABLE_VERBS
                else "a run can be continued with --resume RUN_DIR")
        print(f"interrupted; {hint}", file=sys.stderr)
        return 130
    except Exception as e:  # an unforeseen failure still gets one line; CNNMODE_DEBUG=1 shows the traceback
        if os.environ.get("CNNMODE_DEBUG"):
            raise
        if lost_a_peer(e):  # not gloo's own words beside the other rank's real error
            print(f"error: rank {os.environ.get('RANK')} stopped because another rank of the job failed (its "
                  "error says why)", file=sys.stderr)
            return 1
        print(f"error: {type(e).__name__}: {e} (set CNNMODE_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1
