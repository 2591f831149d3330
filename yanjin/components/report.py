"""The evaluation as one self-contained HTML page (figures table and confusion matrix), for the Kubeflow UI."""
from __future__ import annotations

import base64
import html
from pathlib import Path


def evaluation_html(result: dict, confusion_png: str | Path) -> str:
    png = base64.b64encode(Path(confusion_png).read_bytes()).decode()
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(str(v))}</td></tr>" for k, v in result.items())
    return f"<h2>Evaluation</h2><table>{rows}</table><img src='data:image/png;base64,{png}'/>"
