"""`<run>/report.html`: one self-contained page (images embedded) with config, curves, metrics and every plot."""
from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from cnnmode.files import atomic_write_text
from cnnmode.rundir import RunDir

STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;
color:#222;background:#fff}h1{margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.3em .7em;text-align:right}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #eee;
margin:.5em 0}figure{margin:1em 0}figcaption{color:#555;font-size:.9em}pre{background:#f6f8fa;padding:1em;
overflow:auto;font-size:.85em}.cards{display:flex;flex-wrap:wrap;gap:1em}.card{border:1px solid #ddd;
border-radius:8px;padding:.7em 1.2em;min-width:9em}.card b{display:block;font-size:1.5em}
"""

EVAL_PLOTS = [("confusion_matrix.png", "Confusion matrix"),
              ("confusion_matrix_normalized.png", "Confusion matrix, normalised by true class"),
              ("per_class_accuracy_all.png", "Per-class accuracy"),
              ("per_class_accuracy_top_bottom.png", "Best and worst classes"),
              ("top_confused_pairs.png", "Most confused pairs"),
              ("reliability_diagram.png", "Calibration"),
              ("predictions.png", "Random test predictions")]

MULTILABEL_PLOTS = [("per_label_ap.png", "Average precision per label"),
                    ("pr_curves.png", "Precision-recall curves"),
                    ("error_cooccurrence.png", "Errors that come together"),
                    ("reliability_diagram.png", "Calibration (every label's probability)"),
                    ("predictions.png", "Random test predictions")]


def _img(path: Path, alt: str) -> str:
    if not path.exists():
        return f"<p><em>{html.escape(alt)}: not available</em></p>"
    data = base64.b64encode(path.read_bytes()).decode()
    return (f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(alt)}</figcaption></figure>")


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _pct(x) -> str:
    return f"{100 * x:.2f}%" if isinstance(x, (int, float)) else "–"


def build_report(run_dir: Path) -> str:
    """The report's HTML text for a run folder."""
    run = RunDir(run_dir)
    metrics = json.loads(run.metrics.read_text()) if run.metrics.exists() else {}
    ev = json.loads(run.eval_metrics.read_text()) if run.eval_metrics.exists() else {}
    history = run.history_rows()
    config = run.config.read_text() if run.config.exists() else ""
    if ev.get("task") == "multilabel":
        return _page(run, metrics, history, config, _multilabel_cards(ev, metrics), _multilabel_sections(run, ev))
    cards = [("test accuracy", _pct(ev.get("accuracy", metrics.get("test", {}).get("accuracy")))),
             ("top-5", _pct(ev.get("top5"))),
             ("balanced accuracy", _pct(ev.get("balanced_accuracy"))), ("F1 macro", _pct(ev.get("f1_macro"))),
             ("ECE", _pct(ev.get("ece")))] + _common_cards(metrics)
    sections = []
    if ev:
        sections += ["<h2>Metrics</h2>",
                     _table(["metric", "value"], [[k, _pct(ev[k])] for k in (
                         "accuracy", "balanced_accuracy", "top5", "precision_macro", "recall_macro", "f1_macro",
                         "precision_weighted", "recall_weighted", "f1_weighted", "ece")]
                            + [["loss", f"{ev['loss']:.4f}"]] + _calibration_rows(ev)),
                     "<h3>Per class</h3>",
                     _table(["class", "accuracy", "precision", "recall", "F1", "support"],
                            [[c, _pct(v["accuracy"]), _pct(v["precision"]), _pct(v["recall"]), _pct(v["f1"]),
                              v["support"]] for c, v in ev["per_class"].items()]),
                     "<h2>Evaluation plots</h2>"]
        sections += [_img(run.eval / name, caption) for name, caption in EVAL_PLOTS]
        sections += ["<h2>Misclassified gallery</h2>", _img(run.eval / "misclassified.png",
                                                             "The most confident mistakes")]
        sections += _rejection_section(run, ev.get("rejection"))
    return _page(run, metrics, history, config, cards, sections)


def _rejection_section(run: RunDir, r: dict | None) -> list[str]:
    """Accuracy against coverage and, after `eval --unknown`, how unknown images were told apart."""
    if not r:
        return []
    rows = [["score", r["score"]], ["threshold (--reject auto)", f"{r['threshold']:.2f}"],
            ["known images kept", _pct(r["coverage"])], ["accuracy of those kept", _pct(r["accuracy_kept"])],
            ["accuracy of all", _pct(r["accuracy_all"])]]
    if "unknown" in r:
        u = r["unknown"]
        rows += [["unknown images rejected", f"{_pct(u['rejected'])} of {u['count']}"]]
        rows += [[f"AUROC ({name})", f"{auc:.3f}"] for name, auc in u["auroc"].items()]
    return (["<h2>Unknown images</h2>", _table(["", "value"], rows),
             _img(run.eval / "risk_coverage.png", "Accuracy against coverage")]
            + ([_img(run.eval / "unknown_scores.png", "Known vs unknown images")] if "unknown" in r else []))


def _calibration_rows(ev: dict) -> list[list]:
    return ([["ECE before temperature scaling", _pct(ev["ece_uncalibrated"])],
             ["temperature", f"{ev['temperature']:.3f}"]] if "temperature" in ev else [])


def _common_cards(metrics: dict) -> list[tuple[str, object]]:
    return [("best epoch", metrics.get("best_epoch", "–")),
            ("train time", f"{metrics['train_time_s']:.0f} s" if "train_time_s" in metrics else "–"),
            ("parameters", f"{metrics['params'] / 1e6:.2f} M" if "params" in metrics else "–")]


def _multilabel_cards(ev: dict, metrics: dict) -> list[tuple[str, object]]:
    return [("test mAP", _pct(ev.get("map"))), ("mAP micro", _pct(ev.get("map_micro"))),
            ("subset accuracy", _pct(ev.get("subset_accuracy"))), ("F1 examples", _pct(ev.get("f1_samples"))),
            ("Hamming loss", f"{ev['hamming_loss']:.4f}"), ("ECE", _pct(ev.get("ece")))] + _common_cards(metrics)


def _multilabel_sections(run: RunDir, ev: dict) -> list[str]:
    rows = [[k, _pct(ev[k])] for k in ("map", "map_micro", "subset_accuracy", "f1_samples", "f1_macro", "f1_micro",
                                       "precision_macro", "recall_macro", "ece")]
    rows += [["Hamming loss", f"{ev['hamming_loss']:.4f}"], ["loss (BCE per image)", f"{ev['loss']:.4f}"]]
    return (["<h2>Metrics (multi-label)</h2>", _table(["metric", "value"], rows + _calibration_rows(ev)),
             "<h3>Per label</h3>",
             _table(["label", "AP", "precision", "recall", "F1", "support", "threshold", "ECE"],
                    [[c, _pct(v["ap"]), _pct(v["precision"]), _pct(v["recall"]), _pct(v["f1"]), v["support"],
                      f"{v['threshold']:.3f}", _pct(v["ece"])] for c, v in ev["per_label"].items()]),
             "<h2>Evaluation plots</h2>"] + [_img(run.eval / name, caption) for name, caption in MULTILABEL_PLOTS])


def _page(run: RunDir, metrics: dict, history: list[dict], config: str, cards: list, sections: list[str]) -> str:
    env = metrics.get("environment", {})
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>CNN Mode report: {html.escape(run.path.name)}"
             f"</title><style>{STYLE}</style></head><body>",
             f"<h1>CNN Mode report: {html.escape(run.path.name)}</h1>",
             f"<p>{html.escape(env.get('device', ''))} · {html.escape(env.get('precision', ''))} · torch "
             f"{html.escape(env.get('torch', ''))} · commit {html.escape(env.get('git_commit', '')[:10])}</p>",
             "<div class='cards'>" + "".join(f"<div class='card'>{html.escape(k)}<b>{html.escape(str(v))}</b></div>"
                                             for k, v in cards) + "</div>",
             "<h2>Training curves</h2>", _img(run.plots / "training_curves.png", "Loss, accuracy and learning rate")]
    parts += sections
    if history:
        parts += ["<h2>History</h2>", _table(list(history[0]), [list(r.values()) for r in history])]
    parts += ["<h2>Configuration</h2>", f"<pre>{html.escape(config)}</pre>", "</body></html>"]
    return "\n".join(parts)


def write_report(run_dir: Path) -> Path:
    """Write `<run>/report.html` atomically."""
    return atomic_write_text(RunDir(run_dir).report, build_report(run_dir))
