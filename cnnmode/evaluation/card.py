"""`<run>/MODEL_CARD.md`: what a model is, what it was trained on, how well it does and where it fails, written
from what the run folder already knows (metrics.json, eval/metrics.json, config.yaml)."""
from __future__ import annotations

import json

from cnnmode.config import load_yaml_text
from cnnmode.evaluation.report import _pct
from cnnmode.files import atomic_write_text
from cnnmode.rundir import RunDir


def _table(header: list[str], rows: list[list]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *["| " + " | ".join(str(c) for c in row) + " |" for row in rows]]


def model_card(run_dir) -> str:
    """The model card's Markdown text for a finished run folder."""
    run = RunDir(run_dir)
    metrics = json.loads(run.metrics.read_text())
    ev = json.loads(run.eval_metrics.read_text()) if run.eval_metrics.exists() else {}
    cfg = load_yaml_text(run.config.read_text()) if run.config.exists() else {}
    data, env, test = metrics.get("data", {}), metrics.get("environment", {}), metrics["test"]
    classes = metrics.get("classes", [])
    counts = data.get("counts", {})
    lines = [f"# Model card: {run.path.name}", "",
             "## Model",
             f"- Architecture: `{cfg.get('model', {}).get('name', '?')}`, {metrics.get('params', 0) / 1e6:.2f} M "
             f"parameters, input {data.get('img_size', '?')} px x {data.get('channels', '?')} channel(s), "
             f"normalised with mean {data.get('mean')} and std {data.get('std')}.",
             f"- Trained with CNN Mode {env.get('cnnmode', '?')}, recipe `{cfg.get('recipe') or 'none'}`: "
             f"{metrics.get('epochs_run')} epochs, kept epoch {metrics.get('best_epoch')}, "
             f"{metrics.get('train_time_s', 0):.0f} s of training, seed {metrics.get('seed')}.",
             "- Files: `model.pt` (the artifact: weights, classes, preprocessing, temperature), `config.yaml` "
             "(everything needed to train it again).", "",
             "## Data",
             f"- Source: `{data.get('source', cfg.get('data', {}).get('path', '?'))}`; checksum "
             f"`{data.get('checksum') or 'n/a (named torchvision dataset)'}`.",
             f"- {len(classes)} classes; images per split:", ""]
    splits = list(counts)
    lines += _table(["class", *splits], [[c, *[counts[s].get(c, 0) for s in splits]] for c in classes])
    lines += ["", f"## Metrics (test split, {ev.get('count', '?')} images)", ""]
    lines += _table(["metric", "value"], _metric_rows(test))
    if ev.get("per_label"):
        lines += ["", "Per label (each present from its own threshold, fitted on held-out images):", ""]
        lines += _table(["label", "AP", "precision", "recall", "F1", "support", "threshold"],
                        [[c, _pct(v["ap"]), _pct(v["precision"]), _pct(v["recall"]), _pct(v["f1"]), v["support"],
                          f"{v['threshold']:.3f}"] for c, v in ev["per_label"].items()])
    per_class = ev.get("per_class", {})
    if per_class:
        lines += ["", "Per class:", ""]
        lines += _table(["class", "accuracy", "precision", "recall", "F1", "support"],
                        [[c, _pct(v["accuracy"]), _pct(v["precision"]), _pct(v["recall"]), _pct(v["f1"]),
                          v["support"]] for c, v in per_class.items()])
    lines += ["", "## Calibration",
              f"- Expected calibration error {_pct(test.get('ece_uncalibrated'))} before and {_pct(test.get('ece'))} "
              f"after temperature scaling (T = {test.get('temperature', 1.0):.3f}, fitted on held-out training "
              "images, never on test); every verb applies T to the probabilities it reports.", "",
              "## Known failure modes"]
    confused = ev.get("top_confused", [])[:5]
    lines += [f"- `{p['true']}` taken for `{p['predicted']}`: {p['count']} test images "
              f"({_pct(p['share'])} of `{p['true']}`)." for p in confused] or ["- No confusions on the test split."]
    weakest = sorted(per_class.items(), key=lambda kv: kv[1]["accuracy"])[:3]
    if weakest:
        lines.append("- Weakest classes: " + ", ".join(f"`{c}` {_pct(v['accuracy'])}" for c, v in weakest) + ".")
    lines += [_unknowns_line(metrics.get("unknowns")), "",
              "## Intended use",
              f"- Classifying images into the {len(classes)} classes above, for images like the training data. "
              "Check the confusions above before relying on it; do not use it for decisions about people.", "",
              "## Environment",
              f"- {env.get('device', '?')}, {env.get('precision', '?')}, {env.get('threads', '?')} threads; torch "
              f"{env.get('torch', '?')}, torchvision {env.get('torchvision', '?')}, Python {env.get('python', '?')}; "
              f"commit `{env.get('git_commit', '')[:12] or 'n/a'}`; {env.get('platform', '')}.", "",
              "## Licence",
              "- CNN Mode is MIT-licensed. The weights are derived from the training data: their use is bound by "
              "that data's licence.", ""]
    return "\n".join(lines)


def _unknowns_line(u: dict | None) -> str:
    """What happens to images of classes outside the list: rejected with --reject, or not."""
    if not u:
        return ("- Images unlike the training data (other sizes, domains, or classes outside the list above) get "
                "one of these classes anyway, with no warning: the model has no 'unknown' class.")
    t = u["test"]
    if t is None:  # label sets: the k-NN score, with no accuracy to trade against coverage
        return (f"- Images unlike the training data get labels anyway unless `--reject auto` is given (predict, "
                f"serve, video with an eager backend): then an image less familiar than {_pct(u['coverage'])} of "
                f"held-out images is answered \"unknown\", with no labels (the {u['score']} score: distance to the "
                "nearest training images). Judge it on images of your own unknowns.")
    return (f"- Images unlike the training data get one of these classes anyway unless `--reject auto` is given "
            f"(predict, serve, video): then an image less familiar than {_pct(u['coverage'])} of held-out images "
            f"is answered \"unknown\" (the {u['score']} score; {_pct(t['coverage'])} of test images kept, "
            f"{_pct(t['accuracy_kept'])} of them right). Judge it on images of your own unknowns: "
            "`cnnmode eval RUN --unknown PATH`.")


def _metric_rows(test: dict) -> list[list]:
    if "map" in test:  # label sets
        return [["mAP (macro)", _pct(test.get("map"))], ["mAP (micro)", _pct(test.get("map_micro"))],
                ["subset accuracy", _pct(test.get("subset_accuracy"))], ["F1 (examples)", _pct(test.get("f1_samples"))],
                ["Hamming loss", f"{test.get('hamming_loss', float('nan')):.4f}"],
                ["loss (BCE per image)", f"{test.get('loss', float('nan')):.4f}"]]
    return [["accuracy", _pct(test.get("accuracy"))], ["balanced accuracy", _pct(test.get("balanced_accuracy"))],
            ["top-5 accuracy", _pct(test.get("top5"))], ["F1 macro", _pct(test.get("f1_macro"))],
            ["log loss", f"{test.get('loss', float('nan')):.4f}"]]


def write_model_card(run_dir) -> None:
    """Write `<run>/MODEL_CARD.md` (atomically)."""
    atomic_write_text(RunDir(run_dir).model_card, model_card(run_dir))
