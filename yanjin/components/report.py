"""What the Kubeflow UI shows of a run: the evaluation as one self-contained HTML page (figures and
confusion matrix), the evaluation and the gate's decision as Markdown."""
from __future__ import annotations

import base64
import html
from pathlib import Path


def evaluation_html(result: dict, confusion_png: str | Path) -> str:
    png = base64.b64encode(Path(confusion_png).read_bytes()).decode()
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>" for k, v in result.items())
    return f"<h2>Evaluation</h2><table>{rows}</table><img src='data:image/png;base64,{png}'/>"


SHOWN = ("accuracy", "macro_f1", "ece", "latency_ms_p50_b1", "latency_ms_p95_b1", "throughput_texts_per_s_b32",
         "onnx_bytes", "n_test", "provider")


def evaluation_markdown(result: dict, member: str) -> str:
    rows = "\n".join(f"| {k} | {_shown(result[k])} |" for k in SHOWN if k in result)
    return f"## Evaluation of {member} on the test set\n\n| figure | value |\n|---|---|\n{rows}\n"


def gate_markdown(decision: dict, evaluation: dict, floors: dict, member: str) -> str:
    """The verdict first, then every reason (each failed condition), the floors and the champions."""
    lines = [f"## Gate: **{decision['verdict']}** ({member})", ""]
    lines += [f"- {r}" for r in decision["reasons"]] or ["- every floor met and every champion beaten"]
    lines += ["", "| condition | required | candidate |", "|---|---|---|"]
    lines += [f"| {name} | {bound} | {_shown(evaluation.get(metric, '–'))} |" for name, (metric, bound) in floors.items()]
    if decision["champions"]:
        lines += ["", "| champion | version | accuracy on this test set |", "|---|---|---|"]
        lines += [f"| {c['model']} | {c['version']} | {c['accuracy']:.4f} |" for c in decision["champions"]]
    if decision.get("teacher"):
        t = decision["teacher"]
        lines += ["", f"Teacher: {t['model']} v{t['version']}, accuracy {t['accuracy']:.4f}, ONNX {t['onnx_bytes']:,} bytes"]
    return "\n".join(lines) + "\n"


def _shown(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)
