"""Verbs across runs: `compare`, `lr-find`, `baseline`, `ablate`, `search`, `cv`."""
from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path

from cnnmode.cli.common import add_config_options, add_option_flags, config_base, options_from_args, print_table
from cnnmode.experiments.options import BaselineOptions, SearchOptions


def cmd_compare(args: argparse.Namespace) -> int:
    from cnnmode.experiments.compare import COLUMNS, compare_runs, differing_keys, format_cell

    rows, out = compare_runs(args.runs, args.out)
    columns = COLUMNS[:2] + differing_keys(rows) + COLUMNS[2:]
    print_table("comparison", columns, [[format_cell(c, row.get(c)) for c in columns] for row in rows], left=2)
    print(f"comparison: {out / 'comparison.md'} (also .csv and .png)")
    return 0


def cmd_lr_find(args: argparse.Namespace) -> int:
    from cnnmode.config import resolve_config
    from cnnmode.experiments.lr_find import run_lr_find

    cfg = resolve_config(config_base(args), args.overrides)
    r = run_lr_find(cfg, args.out, start_lr=args.start_lr, end_lr=args.end_lr, steps=args.steps)
    print(f"suggested lr {r['suggested_lr']:.3g} (steepest descent of the smoothed loss; minimum at "
          f"{r['min_loss_lr']:.3g}) after {len(r['lrs'])} steps")
    print(f"plot: {r['plot']}")
    return 0


def cmd_baseline(args: argparse.Namespace) -> int:
    from cnnmode.config import resolve_config
    from cnnmode.experiments.baseline import run_hog_svm

    o = options_from_args(BaselineOptions, args)
    overrides = list(args.overrides) + ([f"data.path={o.data}"] if o.data else [])
    run_dir = run_hog_svm(resolve_config(None, overrides), o)
    m = json.loads((run_dir / "metrics.json").read_text())
    print(f"hog-svm ({o.kernel}): test accuracy {100 * m['test']['accuracy']:.2f}%  F1 macro "
          f"{100 * m['test']['f1_macro']:.2f}%  fit {m['train_time_s']:.0f} s on {m['baseline']['features']} "
          f"features per image")
    print(f"run: {run_dir}")
    return 0


def cmd_ablate(args: argparse.Namespace) -> int:
    from cnnmode.experiments.ablate import run_study, summary

    r = run_study(args.study, args.base, args.overrides, args.epochs, args.subset, args.seeds, args.out, args.quiet)
    print_table(f"ablation: {r['study']}", ["setting", "runs", "test acc (mean ± std)", "train time (mean)"],
                [[s["setting"], str(s["runs"]),
                  f"{100 * s['mean_test_acc']:.2f}% ± {100 * s['std_test_acc']:.2f}" if s["runs"] else "failed",
                  f"{s['mean_train_time_s']:.1f} s" if s["runs"] else ""] for s in summary(r["rows"])])
    failed = sum(row["status"] == "failed" for row in r["rows"])
    print(f"results: {r['dir'] / 'results.md'} (also results.csv, all_results.json, plots)"
          + (f"; {failed} run(s) failed (see error.txt in their folders)" if failed else ""))
    return 1 if failed == len(r["rows"]) else 0


def cmd_search(args: argparse.Namespace) -> int:
    from cnnmode.experiments.search import HEARTBEAT
    from cnnmode.experiments.search_workers import parse_heartbeat, run_search

    heartbeat = parse_heartbeat(args.heartbeat) if args.heartbeat else HEARTBEAT
    r = run_search(options_from_args(SearchOptions, args), args.overrides, args.quiet, heartbeat=heartbeat)
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

    r = run_cv(args.folds, config_base(args), args.overrides, args.out, args.quiet)
    print_table(f"{r['folds']}-fold cross-validation", ["fold", "best val acc", "best epoch", "test acc"],
                [[str(f["fold"]), f"{100 * f['best_val_acc']:.2f}%", str(f["best_epoch"]),
                  f"{100 * f['test_acc']:.2f}%"] for f in r["per_fold"]])
    print(f"validation accuracy {100 * r['mean_val_acc']:.2f}% ± {100 * r['std_val_acc']:.2f} (mean ± std)")
    print(f"cv: {r['dir']}/cv.md (also cv.json, cv.csv)")
    return 0


def _studies_help() -> str:
    from cnnmode.experiments.studies import STUDIES

    return "built-in studies:\n" + "\n".join(f"  {n:<16} {STUDIES.describe(n)}" for n in STUDIES.names())


def cmd_runs(args: argparse.Namespace) -> int:
    from cnnmode.experiments.compare import differing_keys, format_cell
    from cnnmode.experiments.runs_table import COLUMNS, list_runs

    rows = list_runs(Path(args.dir), args.sort, True if args.desc else (False if args.asc else None))
    columns = COLUMNS[:4] + differing_keys(rows) + COLUMNS[4:]
    cells = {"val_acc": "val acc", "test_acc": "test acc", "gap": "train-test", "balanced_acc": "balanced",
             "train_time_s": "train s", "img_s": "img/s", "infer_img_s": "infer img/s", "peak_mem_mb": "peak MB"}
    print_table(f"{len(rows)} run(s) in {args.dir}", [cells.get(c, c) for c in columns],
                [[format_cell(c, r.get(c, r["config"].get(c))) for c in columns] for r in rows], left=4)
    return 0


def add_parsers(verbs) -> None:
    """The compare, runs, lr-find, baseline, ablate, search and cv verbs."""
    p = verbs.add_parser("runs", help="a table of the runs in a folder (finished or not), sortable",
                         description="List the run folders under DIR (default ./runs, three levels deep): name, "
                                     "recipe, model, data, the config keys that differ between the runs, epochs, "
                                     "validation and test accuracy (mAP for label sets), the train-test gap, "
                                     "balanced accuracy, training time, training and inference img/s, peak memory, "
                                     "date, status.")
    p.add_argument("dir", nargs="?", default="runs", metavar="DIR")
    p.add_argument("--sort", default="date", help="column to sort by: run, recipe, model, data, epochs, val_acc, "
                   "test_acc, gap, balanced_acc, train_time_s, img_s, infer_img_s, peak_mem_mb, date, status "
                   "(default date, newest first)")
    order = p.add_mutually_exclusive_group()
    order.add_argument("--asc", action="store_true", help="ascending")
    order.add_argument("--desc", action="store_true", help="descending")
    p.set_defaults(func=cmd_runs)

    p = verbs.add_parser("compare", help="one table and bar plot across run folders",
                         description="Compare finished run folders: the config keys that differ between them, "
                                     "validation and test accuracy, the train-test gap (training accuracy at the "
                                     "kept epoch minus test accuracy), top-5, F1 macro, best epoch, training time, "
                                     "training and inference img/s, peak memory, parameters. Writes "
                                     "comparison.csv/.md/.png.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--out", default="comparison", help="output folder (default ./comparison)")
    p.set_defaults(func=cmd_compare)

    p = verbs.add_parser("lr-find", help="exponential learning-rate sweep with a suggested LR",
                         description="Train fresh weights for a few hundred steps while the LR grows exponentially; "
                                     "plots the smoothed loss against the LR and marks the suggested LR.")
    add_config_options(p, quiet=False)
    p.add_argument("--start-lr", type=float, default=1e-6)
    p.add_argument("--end-lr", type=float, default=10.0)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--out", help="output folder (default <run.dir>/lr-find-<time>)")
    p.set_defaults(func=cmd_lr_find)

    p = verbs.add_parser("baseline", help="a classical baseline (HOG + SVM) reported like a CNN run",
                         description="HOG features (scikit-image) at two cell sizes plus a colour thumbnail, "
                                     "standardised, then a linear SVM on an RBF kernel map (scikit-learn "
                                     "Nystroem), fitted on the train split and scored on the test split; writes a run "
                                     "folder with metrics.json and eval/ like `cnnmode train`.")
    p.add_argument("method", choices=["hog-svm"])
    add_option_flags(p, BaselineOptions)
    add_config_options(p, recipe=False, quiet=False, overrides_help="config keys (data.*, run.*, train.seed)")
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
    add_config_options(p, recipe=False, overrides_help="config keys for every run")
    p.set_defaults(func=cmd_ablate)

    p = verbs.add_parser("search", help="Optuna hyperparameter search (TPE, pruning, shareable storage)",
                         formatter_class=argparse.RawDescriptionHelpFormatter,
                         description="Search config keys with Optuna's TPE sampler, pruning trials on per-epoch "
                                     "validation accuracy. With a database server (--storage postgresql://...) or "
                                     "--jobs, --trials is the study's total: --jobs J worker processes here share "
                                     "it, splitting the CPU cores, and the same command on other machines joins "
                                     "the same study and helps finish it; no trial runs twice. With the default "
                                     "SQLite file and no --jobs, every process runs --trials trials of the study.",
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
              cnnmode search --space space.yaml --trials 40 --study lr --storage postgresql://user:pw@db/optuna \\
                  --jobs 4   (the same on each machine: 40 trials in all)
            a killed worker's trial is marked failed once its heartbeat has been silent 90 s; the others go on."""))
    add_option_flags(p, SearchOptions, required=("space",))
    p.add_argument("--heartbeat", metavar="INTERVAL,GRACE", help=argparse.SUPPRESS)  # seconds; tests shorten it
    add_config_options(p, recipe=False, overrides_help="config keys for every trial")
    p.set_defaults(func=cmd_search)

    p = verbs.add_parser("cv", help="stratified K-fold cross-validation on the training split",
                         description="Train one run per fold (fold i validates on the i-th stratified fold of the "
                                     "training split, via data.folds/data.fold); prints per-fold best validation "
                                     "accuracy and mean ± std; writes cv.json/.csv/.md. Rerunning resumes.")
    p.add_argument("--folds", type=int, required=True, metavar="K")
    p.add_argument("--out", metavar="DIR", help="cv folder (default <run.dir>/cv-<recipe>-k<K>)")
    add_config_options(p)
    p.set_defaults(func=cmd_cv)
