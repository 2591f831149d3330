"""The drift report a reviewer reads: which model and window, each feature's distance against its
threshold and what the feature means, the texts that look least like the training data, and the
predicted intents by name. Evidently's own report (every column's distributions) is linked beside it.
"""
from __future__ import annotations

import html
import time

MEANING = {  # feature -> what a person should understand by it (monitoring/features.py computes them)
    "chars": "length of a text in characters",
    "tokens": "length in the served model's word pieces, before truncation",
    "oov_rate": "share of a text's words never seen in the training texts (new products, typos, other languages)",
    "confidence": "the model's probability for its answer: lower means texts it finds hard",
    "novelty": "how far a text lies from its nearest training texts in the model's own embedding "
               "(1 - mean cosine similarity to the 10 nearest): topics the model was not trained on",
    "label": "the mix of predicted intents",
}
MEASURE = {"wasserstein": "Wasserstein distance, in units of the reference's spread",
           "jensenshannon": "Jensen-Shannon distance (0 same mix, 1 disjoint)"}


def _cell(value) -> str:
    return html.escape(str(value))


def drift_page(summary: dict, methods: dict, examples: list[dict], labels: dict[str, tuple[int, int]],
               evidently_file: str | None) -> str:
    """`summary`: run_check's (verdict, scores, thresholds, model, version, window, calibrated, at);
    `examples`: the window's most novel texts (text, label, confidence, novelty); `labels`: intent ->
    (texts in the window, share of the reference ‰)."""
    model, version, window = summary["model"], summary["version"], summary["window"]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(summary["at"]))
    title = f"Drift check of {model} version {version}: {summary['verdict'].replace('_', ' ')}"
    rows = []
    for column, score in summary["scores"].items():
        limit = summary["thresholds"][column]
        drifted = score > limit
        rows.append(f"<tr class='{'drift' if drifted else ''}'><td><b>{_cell(column)}</b><br><small>"
                    f"{_cell(MEANING.get(column, ''))}</small></td><td>{score:.4f}</td><td>{float(limit):.4f}</td>"
                    f"<td>{'DRIFTED' if drifted else 'within'}</td><td><small>"
                    f"{_cell(MEASURE.get(methods.get(column, ''), methods.get(column, '')))}</small></td></tr>")
    novel = "".join(f"<tr><td>{e['novelty']:.3f}</td><td>{_cell(e['text'])}</td><td>{_cell(e['label'])}</td>"
                    f"<td>{e['confidence']:.2f}</td></tr>" for e in examples)
    mix = "".join(f"<tr><td>{_cell(name)}</td><td>{n}</td><td>{n / max(window, 1):.1%}</td><td>{ref:.1%}</td></tr>"
                  for name, (n, ref) in sorted(labels.items(), key=lambda kv: -kv[1][0])[:15])
    calibration = ("thresholds calibrated for this version on in-distribution windows of this size"
                   if summary.get("calibrated") else
                   "thresholds NOT calibrated for this version: the profile's defaults apply (run "
                   f"<code>yanjin monitor calibrate {_cell(model)}</code>)")
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{_cell(title)}</title><style>
body{{font-family:sans-serif;max-width:70em;margin:2em auto;line-height:1.4}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}}
tr.drift td{{background:#fde2e1}}</style></head><body>
<h1>{_cell(title)}</h1>
<p><b>Model:</b> {_cell(model)} version {_cell(version)} (the champion when checked) &nbsp; <b>Window:</b> its newest
{window} predictions, checked {when} &nbsp; <b>Verdict:</b> {_cell(summary['verdict'])} — a window drifts when any
feature's distance from the training data's exceeds its threshold; {calibration}.</p>
<h2>Features</h2><table><tr><th>feature and what it measures</th><th>distance</th><th>threshold</th><th></th>
<th>measure</th></tr>{''.join(rows)}</table>
<h2>The texts least like the training data</h2><table><tr><th>novelty</th><th>text</th><th>predicted intent</th>
<th>confidence</th></tr>{novel or '<tr><td colspan=4>no texts in the window</td></tr>'}</table>
<h2>Predicted intents in the window</h2><table><tr><th>intent</th><th>texts</th><th>share</th>
<th>share in the training data</th></tr>{mix}</table>
{f'<p>Every column’s distributions: <a href="{_cell(evidently_file)}">Evidently’s report</a>.</p>' if evidently_file else ''}
</body></html>
"""
