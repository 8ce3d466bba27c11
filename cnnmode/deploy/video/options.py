"""What `cnnmode video` is told: every flag of the verb, with its default and help text, in one dataclass."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cnnmode.config import opt
from cnnmode.deploy.options import COVERAGE_HELP, DEVICE_HELP, REJECT_HELP
from cnnmode.errors import UsageError

CODECS = {".avi": "MJPG", ".mp4": "mp4v"}
BACKENDS_HELP = ("eager (labels equal to predict's), eager-bf16, compile, onnxruntime, int8, int8-x86, openvino, "
                 "openvino-int8")


@dataclass
class VideoOptions:
    """Everything `cnnmode video` takes besides the model; each field is the flag of the same name."""
    source: str = opt("0", "a camera index (0), a video file, or a stream URL (rtsp://, http://)")
    output: str | None = opt(None, "write the annotated video (MJPG .avi, mp4v .mp4)", metavar="OUT.avi|.mp4")
    show: bool = opt(False, "show a window (q or Esc quits) where a display exists")
    stride: int = opt(1, "classify every N-th frame; the others hold the label")
    threshold: float = opt(0.7, "confidence at which the label turns green")
    topk: int = opt(1, "classes per frame in the CSV; above 1, bars on the frame")
    backend: str | None = opt("auto", "runtime backend for a model.pt: auto (the fastest that passes the parity "
                              "gate on this CPU kind), " + BACKENDS_HELP)
    device: str = opt("auto", DEVICE_HELP)
    batch_size: int = opt(8, "frames per model call for files (live: 1)")
    csv: str | None = opt(None, "one row per classified frame: index, time, top-k", metavar="FILE.csv")
    max_frames: int | None = opt(None, "stop after this many frames")
    http: int | None = opt(None, "also stream the annotated frames as MJPEG on PORT", metavar="PORT")
    host: str = opt("127.0.0.1", "address for --http (127.0.0.1: this machine only)")
    calib_data: str | None = opt(None, "real images to calibrate the int8 backends on (default: the run folder's "
                                 "own validation split)", metavar="PATH")
    reject: str = opt("off", REJECT_HELP + "; an unknown frame is labelled \"unknown\"", metavar="auto|off|T")
    coverage: float | None = opt(None, COVERAGE_HELP, metavar="SHARE")

    def check(self) -> VideoOptions:
        """Refuse bad values and unusable outputs before any capture starts."""
        if self.stride < 1 or self.batch_size < 1 or self.topk < 1 or not 0 <= self.threshold <= 1:
            raise UsageError("--stride, --batch-size and --topk must be >= 1 and --threshold in [0, 1]")
        if self.max_frames is not None and self.max_frames < 1:
            raise UsageError("--max-frames must be >= 1")
        if self.http is not None and not 0 <= self.http < 65536:
            raise UsageError(f"--http takes a port number (0-65535), got {self.http}")
        check_output(self.output, CODECS, "--output")
        check_output(self.csv, (".csv",), "--csv")
        for flag, path in (("--output", self.output), ("--csv", self.csv)):
            if path is not None and same_file(path, self.source):
                raise UsageError(f"{flag} {path} is the --source file itself; writing it would destroy the input: "
                                 "give another file name")
        return self


def same_file(a: str, b: str) -> bool:
    """True when two paths name one file (through links, `..` or letter case where the file system ignores it)."""
    try:
        return Path(a).resolve() == Path(b).resolve() or (Path(a).exists() and Path(b).exists()
                                                          and Path(a).samefile(Path(b)))
    except OSError:
        return False


def check_output(path: str | None, suffixes: dict | tuple, what: str) -> Path | None:
    """Refuse an output whose folder does not exist or whose extension is not one of `suffixes`."""
    if path is None:
        return None
    out = Path(path)
    if out.suffix.lower() not in suffixes:
        raise UsageError(f"{what} {path}: unsupported extension; use one of {', '.join(suffixes)}")
    if not out.parent.is_dir():
        raise UsageError(f"{what} {path}: the folder {out.parent} does not exist")
    if not os.access(out.parent, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise UsageError(f"{what} {path}: not writable here (permissions); choose another folder")
    return out
