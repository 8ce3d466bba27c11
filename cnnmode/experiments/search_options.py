"""What `cnnmode search` is told besides the config overrides: every flag, its default and help text."""
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
