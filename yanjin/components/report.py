"""What the Kubeflow UI shows of a run: the evaluation as one self-contained HTML page (figures and
confusion matrix), the evaluation, the gate's decision and the family table as Markdown."""
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


def gate_markdown(decision: dict, evaluation: dict, floors: dict, member: str, after: dict | None = None) -> str:
    """The verdict first, then every reason (each failed condition), the floors and the champions;
    `after`: the members this run built first so that their champions are current (model -> version)."""
    lines = [f"## Gate: **{decision['verdict']}** ({member})", ""]
    lines += [f"Gated after this run's {m}: " + (f"v{v} registered" if v else "rejected") + "\n"
              for m, v in (after or {}).items()]
    lines += [f"- {r}" for r in decision["reasons"]] or ["- every floor met and every champion beaten"]
    lines += ["", "| condition | required | candidate |", "|---|---|---|"]
    lines += [f"| {name} | {bound} | {_shown(evaluation.get(metric, '–'))} |" for name, (metric, bound) in floors.items()]
    if decision["champions"]:
        lines += ["", "| champion | version | accuracy on this test set | how |", "|---|---|---|---|"]
        lines += [f"| {c['model']} | {c['version']} | {c['accuracy']:.4f} | {c.get('source', 're-scored')} |"
                  for c in decision["champions"]]
    if decision.get("teacher"):
        t = decision["teacher"]
        lines += ["", f"Teacher: {t['model']} v{t['version']}, accuracy {t['accuracy']:.4f} "
                      f"({t.get('source', 're-scored')}), ONNX {t['onnx_bytes']:,} bytes"]
    return "\n".join(lines) + "\n"


def family_row(registered_model: str, gate: str, version: str, evaluation: dict, lineage: dict) -> dict:
    """One member's line of the family table: what the run made of it."""
    return ({"registered_model": registered_model, "gate": gate, "version": version or ""}
            | {k: evaluation[k] for k in FAMILY_SHOWN + ("run_id",) if k in evaluation}
            | {k: lineage[k] for k in ("teacher_model", "teacher_version") if lineage.get(k)})


FAMILY_SHOWN = ("accuracy", "macro_f1", "ece", "latency_ms_p50_b1", "onnx_bytes")


def family_markdown(rows: dict[str, dict], profile: str) -> str:
    """The family run's table, a member a row, then where each compressed member's teacher came from:
    this run's version, or (when this run rejected it) the champion."""
    lines = [f"## The family, profile {profile}", "",
             "| member | registered model | gate | version | accuracy | macro-F1 | ECE | p50 ms (batch 1) | ONNX MB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for member, r in rows.items():
        figures = [_shown(r.get(k, "–")) for k in FAMILY_SHOWN[:4]] + [f"{r['onnx_bytes'] / 1e6:.1f}" if "onnx_bytes" in r else "–"]
        lines.append(f"| {member} | {r['registered_model']} | {r['gate']} | {r['version'] or '–'} | " + " | ".join(figures) + " |")
    by_model = {r["registered_model"]: r for r in rows.values()}
    notes = []
    for member, r in rows.items():
        if "teacher_model" not in r:
            continue
        teacher = by_model.get(r["teacher_model"])
        if teacher and teacher["version"] == r["teacher_version"]:
            notes.append(f"- {member} learnt from {r['teacher_model']} v{r['teacher_version']}, registered by this run")
        else:
            why = "; this run's was rejected by its gate" if teacher else ""
            notes.append(f"- {member} learnt from {r['teacher_model']} v{r['teacher_version']}, the champion{why}")
    return "\n".join(lines + ([""] + notes if notes else [])) + "\n"


def _shown(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)
