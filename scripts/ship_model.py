"""Make a finished run folder a model that ships with the package (`cnnmode/pretrained/NAME.pt`, `.md`, `.json`).

    python scripts/ship_model.py RUN_DIR --name cifar10 --data ../shared/datasets/cifar10-jpeg.tar.gz \
        --command "cnnmode train --recipe speed data.path=... train.seed=0"

The artifact's floating-point weights are stored in bf16 (half the size; they load into the fp32 model). Both the
run's own model.pt and the shipped file are then evaluated by `cnnmode eval` on the data's test split, the same way
on this CPU; the script refuses to ship when their top-1 predictions agree on fewer than 99.5% of the images.
NAME.json records the shipped file's test accuracy, the agreement, the command, seed, CPU and date; NAME.md is
the run's model card under a header saying the same.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from cnnmode.engine.cpu import cpu_kind  # noqa: E402
from cnnmode.evaluation.evaluate import run_eval  # noqa: E402
from cnnmode.files import atomic_torch_save, atomic_write_text, torch_load  # noqa: E402
from cnnmode.pretrained import HERE  # noqa: E402
from cnnmode.rundir import RunDir  # noqa: E402

MIN_AGREEMENT = 0.995


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--name", required=True)
    ap.add_argument("--data", required=True, help="the data whose test split measures the model")
    ap.add_argument("--command", required=True, help="the exact command that trained the run")
    args = ap.parse_args()
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


if __name__ == "__main__":
    main()
