"""Make a finished run folder a model that ships with the package (`cnnmode/pretrained/NAME.pt`, `.md`, `.json`).

    python scripts/ship_model.py RUN_DIR --name cifar10 --data ../shared/datasets/cifar10-jpeg.tar.gz \
        --command "cnnmode train --recipe speed data.path=... train.seed=0"

The artifact's floating-point weights are stored in bf16 (half the size; they load into the fp32 model). Both the
run's own model.pt and the shipped file are then evaluated by `cnnmode eval` on the data's test split, the same way
on this CPU; the script refuses to ship when their top-1 predictions agree on fewer than 99.5% of the images.
NAME.json records the shipped file's test accuracy, the agreement, the command, seed, CPU and date; NAME.md is
the run's model card under a header saying the same. Last, the unknown-image score (`--reject auto`) is fitted for
the shipped weights on the held-out images of the run that trained them (NAME.unknowns.pt, an index of
--index-size training images). `--unknowns-only` does just that for a model already shipped: the held-out split
is rebuilt from the training command kept in NAME.json (its recipe, seed and data), so the score is never fitted
on images the model learned from.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import json
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from cnnmode.config import resolve_config  # noqa: E402
from cnnmode.config.parse import dump_yaml  # noqa: E402
from cnnmode.engine.cpu import cpu_kind  # noqa: E402
from cnnmode.evaluation.rejection import calibrate  # noqa: E402
from cnnmode.evaluation.evaluate import run_eval  # noqa: E402
from cnnmode.files import atomic_torch_save, atomic_write_text, torch_load  # noqa: E402
from cnnmode.pretrained import HERE  # noqa: E402
from cnnmode.rundir import RunDir  # noqa: E402

MIN_AGREEMENT = 0.995
INDEX_SIZE = 2000  # training embeddings in the shipped k-NN index: 2 bytes per feature each, so the package stays small


def in_bf16(blob: dict) -> dict:
    """The artifact with its floating-point tensors stored in bf16."""
    state = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in blob["state_dict"].items()}
    return {**blob, "state_dict": state}


def predicted(out: Path) -> list[str]:
    with open(out / "predictions.csv", newline="") as f:
        return [row["predicted"] for row in csv.DictReader(f)]


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def fit_unknowns(name: str, command: str, data: str, index_size: int) -> Path:
    """NAME.unknowns.pt for the shipped NAME.pt, fitted on the held-out images of the run `command` made (its
    config rebuilt from the command: the same recipe, keys and seed give the same split)."""
    words = shlex.split(command)
    recipe = words[words.index("--recipe") + 1] if "--recipe" in words else "default"
    overrides = [w for w in words if "=" in w and not w.startswith("-") and not w.startswith("data.path=")]
    cfg = resolve_config(recipe, [*overrides, f"data.path={data}"], cuda=False)
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(HERE / f"{name}.pt", Path(tmp) / "model.pt")
        (Path(tmp) / "config.yaml").write_text(dump_yaml(cfg))
        fitted, rejector = calibrate(tmp, index_size=index_size, device="cpu")
        out = HERE / f"{name}.unknowns.pt"
        shutil.copy(fitted, out)
    rows = 0 if rejector.index is None else len(rejector.index)
    info_path = HERE / f"{name}.json"
    info = json.loads(info_path.read_text())
    info["unknowns"] = {"file": out.name, "score": rejector.score, "index_images": rows,
                        "held_out_images": len(rejector.held["msp"]), "coverage": rejector.coverage,
                        "date": datetime.date.today().isoformat()}
    atomic_write_text(info_path, json.dumps(info, indent=2) + "\n")
    print(f"fitted {out} ({out.stat().st_size / 2**20:.1f} MiB): the {rejector.score} score, {rows} training "
          f"images in its index, --reject auto keeping {100 * rejector.coverage:.0f}% of the held-out images")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, nargs="?", help="the run folder (not needed with --unknowns-only)")
    ap.add_argument("--name", required=True)
    ap.add_argument("--data", required=True, help="the data whose test split measures the model")
    ap.add_argument("--command", help="the exact command that trained the run (default with --unknowns-only: the "
                                      "one in NAME.json)")
    ap.add_argument("--index-size", type=int, default=INDEX_SIZE, help=f"default {INDEX_SIZE}")
    ap.add_argument("--unknowns-only", action="store_true", help="only fit NAME.unknowns.pt for a shipped model")
    args = ap.parse_args()
    if args.unknowns_only:
        command = args.command or json.loads((HERE / f"{args.name}.json").read_text())["command"]
        fit_unknowns(args.name, command, args.data, args.index_size)
        return
    if args.run is None or args.command is None:
        ap.error("RUN and --command are needed to ship a run")
    run = RunDir(args.run)
    blob = torch_load(run.model)
    shipped = HERE / f"{args.name}.pt"
    atomic_torch_save(in_bf16(blob), shipped)
    with tempfile.TemporaryDirectory() as tmp:
        _, before = run_eval(str(run.model), args.data, out=f"{tmp}/fp32")
        _, after = run_eval(str(shipped), args.data, out=f"{tmp}/shipped")
        a, b = predicted(Path(tmp) / "fp32"), predicted(Path(tmp) / "shipped")
    agreement = sum(x == y for x, y in zip(a, b)) / len(a)
    print(f"fp32 {100 * before['accuracy']:.2f}%, shipped (bf16 weights) {100 * after['accuracy']:.2f}%, "
          f"top-1 agreement {100 * agreement:.2f}% on {len(a)} test images")
    if agreement < MIN_AGREEMENT:
        shipped.unlink()
        raise SystemExit(f"not shipped: agreement {100 * agreement:.2f}% < {100 * MIN_AGREEMENT:.1f}%")
    metrics = json.loads(run.metrics.read_text())
    info = {"name": args.name, "model": blob["model"]["name"], "classes": blob["classes"],
            "img_size": blob["preprocess"]["img_size"], "test_accuracy": round(after["accuracy"], 4),
            "test_accuracy_fp32_weights": round(before["accuracy"], 4), "top1_agreement_with_fp32": agreement,
            "test_set": f"the {len(a):,} test images of {Path(args.data).name}, measured by `cnnmode eval`",
            "run_test_accuracy_with_tta": metrics["test"]["accuracy"], "train_time_s": metrics.get("train_time_s"),
            "command": args.command, "seed": metrics.get("seed", None),
            "cpu": f"{cpu_name()} ({cpu_kind().name})", "torch": torch.__version__,
            "date": datetime.date.today().isoformat(), "weights": "bf16, loaded into fp32"}
    atomic_write_text(HERE / f"{args.name}.json", json.dumps(info, indent=2) + "\n")
    card = run.model_card.read_text() if run.model_card.exists() else ""
    header = (f"# {args.name}: shipped with cnnmode\n\n"
              f"- Trained by: `{args.command}`\n- On: {info['cpu']}, torch {info['torch']}, {info['date']}\n"
              f"- Test accuracy of this file: {100 * after['accuracy']:.2f}% ({info['test_set']}; "
              f"{100 * metrics['test']['accuracy']:.2f}% in the run, with test-time augmentation)\n"
              f"- Weights stored in bf16 ({shipped.stat().st_size / 2**20:.1f} MiB): top-1 agreement with the fp32 "
              f"weights {100 * agreement:.2f}%\n\nThe run's own model card follows.\n\n")
    atomic_write_text(HERE / f"{args.name}.md", header + card)
    print(f"shipped {shipped} ({shipped.stat().st_size / 2**20:.1f} MiB), {args.name}.json, {args.name}.md")
    fit_unknowns(args.name, args.command, args.data, args.index_size)


if __name__ == "__main__":
    main()
