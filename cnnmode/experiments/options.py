"""What `cnnmode search` and `cnnmode baseline` are told besides config overrides: every flag, its default and
help text, written once here (the command line builds its flags from these dataclasses)."""
from __future__ import annotations

from dataclasses import dataclass

from cnnmode.config import opt

PRUNERS = ("median", "halving", "none")


@dataclass
class SearchOptions:
    """Each field is the `cnnmode search` flag of the same name."""
    space: str = opt(None, "the search space file (see below)", metavar="SPACE.yaml")
    trials: int = opt(10, "number of trials: the study's total with --jobs or a postgresql:// or mysql:// storage; "
                      "with the default SQLite file and no --jobs, the trials this process runs")
    storage: str | None = opt(None, "Optuna storage URL (default sqlite:///<study folder>/study.db; "
                              "postgresql://USER:PASS@HOST/DB needs psycopg2-binary)", metavar="URL")
    jobs: int | None = opt(None, "worker processes on this machine sharing the study, each with 1/J of the CPU "
                           "cores (J > 1 needs a postgresql:// or mysql:// --storage)", metavar="J")
    study: str | None = opt(None, "study name (default: the space file's name)", metavar="NAME")
    timeout: float | None = opt(None, "stop starting trials after S seconds", metavar="S")
    pruner: str = opt("median", "prune trials on per-epoch validation accuracy", PRUNERS)
    seed: int | None = opt(None, "sampler seed")
    out: str | None = opt(None, "study folder (default <run.dir>/search/<study>)", metavar="DIR")


@dataclass
class BaselineOptions:
    """Each field is the `cnnmode baseline` flag of the same name."""
    data: str | None = opt(None, "data.path (default: cifar10)")
    img_size: int = opt(0, "resize images to this side first (0 = as they are)")
    kernel: str = opt("rbf", "the SVM's kernel: an RBF kernel map (Nystroem) or none", ("rbf", "linear"))
    components: int = opt(3000, "Nystroem components for the RBF kernel map")
    C: float = opt(1.0, "SVM regularisation (smaller = stronger)")
    cell: int = opt(4, "HOG cell size in pixels (a second HOG uses twice this)")
    thumbnail: int = opt(8, "also feed the image's colours averaged to this many pixels a side (0 = HOG only)")
