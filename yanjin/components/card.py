"""Model cards (Mitchell et al. 2019): what a registered version is for, what it was trained on, how it
behaves per slice, how it was gated and released, written from the version's record in MLflow alone.

`read_record` gathers the record (version tags, the training run's params, its evaluation, gate and
validation artifacts, the alias history); `card_markdown` is a pure function of it. The register
step logs the card with the version (Markdown and HTML artifacts, the version's description in the
MLflow UI) and `yanjin card` prints it again, with the release history as it stands then.
"""
from __future__ import annotations

import json
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import registry as R
from ..config import PipelineConfig
from ..family import ADAPTED, FAMILY, TEACHER
from .data import combine_digests
from .fetch import DATASETS

BASE_ENCODERS = {  # model.base -> what the card says of it
    "minilm": "all-MiniLM-L6-v2 (MiniLM-L6-H384, BERT family, 22M parameters, Apache-2.0)",
    "mpnet": "all-mpnet-base-v2 (MPNet, 12 layers x 768, 110M parameters, Apache-2.0)",
}


def base_encoder(network: dict) -> str:
    """The recorded base (records from before bases were a choice are MiniLM), as a reader needs it."""
    base = network.get("base", "minilm")
    named = BASE_ENCODERS.get(base) or (f"the folder {base} ({network.get('arch', 'bert')} architecture, "
                                        f"pinned {network.get('base_sha256', '')})")
    return named + ", verified by sha256 before training"


WEAK_F1 = 0.80  # intents below this F1 are listed as known limits


@dataclass
class VersionRecord:
    """Everything a card says, as MLflow holds it for one version."""
    model: str
    version: str
    created: float                      # unix seconds
    aliases: list[str]
    tags: R.VersionTags
    run_id: str
    params: dict                        # the training run's params (data files, sizes, recipe settings)
    run_tags: dict
    per_class: dict = field(default_factory=dict)     # sklearn classification_report
    slices: dict = field(default_factory=dict)        # evaluate.slice_metrics
    confusion: dict = field(default_factory=dict)     # labels, matrix
    gate: dict = field(default_factory=dict)          # GateDecision.to_dict
    validation: dict = field(default_factory=dict)    # the Great Expectations verdict
    network: dict = field(default_factory=dict)       # the checkpoint's own spec: Lite's after pruning
    teacher_network: dict = field(default_factory=dict)  # a compressed member's teacher: its checkpoint's spec
    history: list = field(default_factory=list)     # ledger.AuditEntry: the confirmed alias changes naming this version
    approvals: list = field(default_factory=list)   # {principal, reason, at}: who approved it for champion

    @property
    def config(self) -> PipelineConfig | None:
        return PipelineConfig.from_json(self.tags.config) if self.tags.config else None

    @property
    def recipe(self):
        """The recipe as the run had it (its recorded config, a profile's changes included); the table's only
        for versions recorded before configs carried one."""
        cfg = self.config
        return cfg.recipe if cfg else FAMILY.get(self.tags.variant)


def _artifact_json(client, run_id: str, path: str, tmp: str) -> dict:
    from mlflow.exceptions import MlflowException

    try:
        return json.loads(Path(client.download_artifacts(run_id, path, tmp)).read_text())
    except (MlflowException, OSError, ValueError):
        return {}  # registered before this artifact existed: the card says it is not recorded


SPEC = f"{R.CHECKPOINT_ARTIFACT}/{R.CHECKPOINT_SPEC}"   # a run's checkpoint spec: the network as trained


def checkpoint_network(client, run_id: str) -> dict:
    """The network a run's checkpoint records (its own spec), {} when it logged none."""
    with tempfile.TemporaryDirectory() as tmp:
        return _artifact_json(client, run_id, SPEC, tmp)


def as_made(client, model: str, version: str) -> tuple[str, str]:
    """(recipe, network) of a registered version, from its recorded config and its checkpoint: what
    `yanjin status` shows beside the card."""
    mv = client.get_model_version(model, version)
    tags = R.VersionTags.from_tags(dict(mv.tags))
    recipe = PipelineConfig.from_json(tags.config).recipe.summary if tags.config else "recipe not recorded"
    network = checkpoint_network(client, mv.run_id)
    return recipe, network_line(network) if network else "network not recorded"


def read_record(client, model: str, version: str, ledger=None) -> VersionRecord:
    """The version's record; its release history and approvals from the release ledger (`ledger`, a
    registry.ledger.Ledger), when there is one."""
    mv = client.get_model_version(model, version)
    run = client.get_run(mv.run_id)
    with tempfile.TemporaryDirectory() as tmp:
        def art(path: str) -> dict:
            return _artifact_json(client, mv.run_id, path, tmp)

        ev = R.EVALUATION_ARTIFACT
        record = VersionRecord(
            model, str(mv.version), mv.creation_timestamp / 1000, sorted(getattr(mv, "aliases", []) or []),
            R.VersionTags.from_tags(dict(mv.tags)), mv.run_id, dict(run.data.params), dict(run.data.tags),
            art(f"{ev}/per_class.json"), art(f"{ev}/slices.json"), art(f"{ev}/confusion_matrix.json"),
            art(R.GATE_DECISION), art(R.VALIDATION_REPORT), art(SPEC))
    if record.tags.teacher_run_id:
        record.teacher_network = checkpoint_network(client, record.tags.teacher_run_id)
    if ledger is not None:
        record.history = [e for e in ledger.history(model) if e.phase == "done" and
                          record.version in (e.to_version, e.from_version)]
        record.approvals = ledger.approvals_of(model, record.version)
    return record


# -- the card as Markdown ----------------------------------------------------------------------------------
def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x:.1%}"


def _num(x: float | None, digits: int = 4) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t))


def known_dataset(data_sha256: str) -> tuple[str, str] | None:
    """(name, licence) of a public data set whose published files hash to the recorded data digest
    (train, test and optionally the label list, as data.sha256_files combines them)."""
    for name, source in DATASETS.items():
        digests = [source.files.get(f, "") for f in ("train.csv", "test.csv", "categories.json")]
        for used in (digests, digests[:2]):
            if all(used) and combine_digests(used) == data_sha256:
                return name, source.licence
    return None


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def network_line(m: dict) -> str:
    """The network as its checkpoint records it (never a profile default): the card, `yanjin status`."""
    return (f"{m.get('builder') or m['variant']} encoder ({m.get('arch', 'bert')}), {m['n_layers']} layers, "
            f"{m['n_heads']} heads, width {m.get('d_model', 384)}, FFN {m['d_ff']}, vocabulary {m['vocab_size']:,}, "
            f"up to {m['max_length']} tokens per text")


def how_trained(r: VersionRecord, cfg: PipelineConfig | None) -> str:
    """How the weights were fitted, from the recorded training settings."""
    if cfg is None:
        return "not recorded"
    if cfg.recipe.start == TEACHER:
        return (f"distilled for {cfg.compress.epochs} + {cfg.compress.recovery_epochs} epochs (temperature "
                f"{cfg.compress.temperature}, soft-target weight {cfg.compress.alpha})")
    if cfg.train.probe:
        return "encoder frozen; a linear head fitted by logistic regression on its pooled embeddings"
    return (f"fine-tuned end to end for {cfg.train.epochs} epochs (batch {cfg.train.batch_size}, peak learning rate "
            f"{cfg.train.learning_rate})")


def _details(r: VersionRecord, cfg: PipelineConfig | None) -> list[str]:
    t, member, recipe = r.tags, r.tags.variant, r.recipe
    lines = ["## Model details", f"- **Family member:** {member}" + (f" — {recipe.summary}" if recipe else "")]
    m = r.network   # as trained: the checkpoint's own spec (the config holds a profile's values, Lite's before pruning)
    lines.append(f"- **Network:** {network_line(m)}" if m else
                 "- **Network:** not recorded with this version (its checkpoint has no spec)"
                 + (f"; its config asked for {network_line(asdict(cfg.model))}" if cfg else ""))
    start = recipe.start if recipe else ""
    if start == TEACHER or t.teacher_model:
        teacher_base = base_encoder(r.teacher_network) if r.teacher_network else "a base not recorded"
        lines.append(f"- **Base:** distilled from {t.teacher_model} version {t.teacher_version} "
                     f"(run {t.teacher_run_id}), itself built on {teacher_base}; the student's encoder: "
                     f"{base_encoder(m)}"
                     + (f", started from {t.student_init_model} version {t.student_init_version}"
                        if t.student_init_model else ""))
    elif start == ADAPTED:
        lines.append(f"- **Base encoder:** {base_encoder(m)}, adapted on unlabeled in-domain text "
                     f"({r.params.get(R.RUN_PARAM_CORPUS, 'sources not recorded')})")
    else:
        lines.append(f"- **Base encoder:** {base_encoder(m)}")
    lines.append(f"- **Training:** {how_trained(r, cfg)}")
    if t.onnx_bytes:
        lines.append(f"- **Served as:** ONNX, {int(t.onnx_bytes) / 1e6:.1f} MB"
                     + (" (INT8, quantized by ONNX Runtime)" if recipe and recipe.int8 else " (FP32)"))
    lines.append(f"- **Registered:** {_when(r.created)}; aliases now: "
                 + (", ".join(f"@{a}" for a in r.aliases) or "none"))
    return lines


def _use(r: VersionRecord, cfg: PipelineConfig | None) -> list[str]:
    n_labels = r.params.get("data.n_labels", "?")
    threshold = cfg.evaluate.review_threshold if cfg else 0.7
    max_length = r.network.get("max_length") or (cfg.model.max_length if cfg else "?")
    return [
        "## Intended use",
        f"- Routing English customer-service messages to one of the {n_labels} intents of its training label set, "
        f"with a confidence; answers below confidence {threshold} go to a human reviewer (the serving default).",
        "- Served behind yanjin's A/B rollout, prediction log and drift monitor, which watch it in production.",
        "",
        "## Out-of-scope use",
        "- Messages outside the label set: it has no *other* class and always answers one of its intents; "
        "the drift monitor, not the model, notices such traffic.",
        "- Other languages or domains than the training data's; texts longer than "
        f"{max_length} tokens are cut.",
        "- Decisions with legal or financial effect on a customer without a person in the loop.",
    ]


def _kept(r: VersionRecord) -> str:
    data_run = r.run_tags.get(R.DATA_RUN_TAG)
    return (f"kept apart from the model in run {data_run} of `{R.CUSTOMER_DATA_EXPERIMENT}`" if data_run
            else "logged with the training run")


def _data(r: VersionRecord, cfg: PipelineConfig | None) -> list[str]:
    t, p = r.tags, r.params
    known = known_dataset(t.data_sha256)
    licence = (cfg.data.licence if cfg and cfg.data.licence else known[1] if known
               else "not recorded: set data.licence in the profile")
    lines = ["## Training data",
             f"- **Files as given:** train `{p.get(R.RUN_PARAM_TRAIN, '?')}`, test `{p.get(R.RUN_PARAM_TEST, '?')}`, "
             f"labels `{p.get(R.RUN_PARAM_LABELS) or 'from the training file'}`"
             + (f" — the public {known[0]} data set" if known else ""),
             f"- **Columns:** text `{cfg.data.text_column}`, label `{cfg.data.label_column}`" if cfg else
             "- **Columns:** not recorded",
             f"- **sha256 of the files:** `{t.data_sha256 or 'not recorded'}`",
             f"- **sha256 of the training split:** `{t.training_data_sha256 or 'not recorded'}` "
             f"(the drift monitor's reference, {_kept(r)})",
             f"- **Sizes:** {p.get('data.n_train', '?')} training, {p.get('data.n_val', '?')} validation, "
             f"{p.get('data.n_test', '?')} test texts; {p.get('data.n_labels', '?')} intents",
             f"- **Licence:** {licence}"]
    if cfg and (cfg.data.max_per_class or cfg.data.max_classes):
        lines.append(f"- **Sampled:** at most {cfg.data.max_per_class or 'all'} examples per intent"
                     + (f", the first {cfg.data.max_classes} intents" if cfg.data.max_classes else "")
                     + f" (profile {cfg.profile})")
    if r.validation:
        lines.append(f"- **Data contract (Great Expectations):** {'passed' if r.validation.get('success', True) else 'failed'}")
    return lines


def _headline(r: VersionRecord) -> list[str]:
    t = r.tags
    return ["## Metrics (held-out test set)",
            *_table(["accuracy", "macro-F1", "ECE", "latency p50 (batch 1)", "test texts"],
                    [[t.accuracy[:6] or "–", t.macro_f1[:6] or "–", t.ece[:6] or "–",
                      f"{float(t.latency_ms_p50_b1):.2f} ms" if t.latency_ms_p50_b1 else "–",
                      str(r.params.get("data.n_test", "–"))]])]


def _metrics(r: VersionRecord) -> list[str]:
    t, s = r.tags, r.slices
    lines = _headline(r)
    if not s:
        return lines + ["", "Per-slice figures were not recorded for this version (registered before model cards)."]
    review = s["review"]
    lines += ["", "### Calibration and review",
              f"Expected calibration error {t.ece[:6]}. Below confidence {review['threshold']} a prediction is sent "
              f"to review: **{_pct(review['share'])} of the test set**, where accuracy is "
              f"{_pct(review['accuracy_reviewed'])}; the rest is answered automatically at "
              f"{_pct(review['accuracy_automatic'])}.", "",
              *_table(["confidence", "texts", "accuracy", "mean confidence"],
                      [[b, str(v["n"]), _pct(v["accuracy"]), _pct(v["mean_confidence"])]
                       for b, v in s["by_confidence"].items()]),
              "", "### By text length (words)",
              *_table(["words", "texts", "accuracy"],
                      [[b, str(v["n"]), _pct(v["accuracy"])] for b, v in s["by_length_words"].items()])]
    return lines


def _intents(r: VersionRecord) -> list[str]:
    per = {k: v for k, v in r.per_class.items() if isinstance(v, dict) and k not in ("macro avg", "weighted avg")}
    if not per:
        return []
    rows = sorted(per.items(), key=lambda kv: (kv[1]["f1-score"], kv[0]))
    return ["### Per intent (weakest first)",
            *_table(["intent", "precision", "recall", "F1", "test texts"],
                    [[k, _num(v["precision"], 3), _num(v["recall"], 3), _num(v["f1-score"], 3), str(int(v["support"]))]
                     for k, v in rows])]


def _confusions(r: VersionRecord, top: int = 5) -> list[str]:
    if not r.confusion:
        return []
    labels, m = r.confusion["labels"], r.confusion["matrix"]
    pairs = sorted(((m[i][j], labels[i], labels[j]) for i in range(len(labels)) for j in range(len(labels))
                    if i != j and m[i][j]), reverse=True)[:top]
    return [f"- Most confused: " + "; ".join(f"{a} → {b} ({n})" for n, a, b in pairs)] if pairs else []


def _limits(r: VersionRecord, cfg: PipelineConfig | None) -> list[str]:
    lines = ["## Known limits"]
    weak = sorted((v["f1-score"], k) for k, v in r.per_class.items()
                  if isinstance(v, dict) and "f1-score" in v and k not in ("macro avg", "weighted avg")
                  and v["f1-score"] < WEAK_F1)
    if weak:
        lines.append(f"- {len(weak)} intents below F1 {WEAK_F1}: " + ", ".join(f"{k} ({f:.2f})" for f, k in weak[:10])
                     + (" …" if len(weak) > 10 else ""))
    lines += _confusions(r)
    by_len = {k: v for k, v in r.slices.get("by_length_words", {}).items() if v["n"] >= 20 and v["accuracy"] is not None}
    if by_len:
        worst = min(by_len, key=lambda k: by_len[k]["accuracy"])
        lines.append(f"- Weakest length slice: {worst} words, accuracy {_pct(by_len[worst]['accuracy'])} "
                     f"({by_len[worst]['n']} texts)")
    if cfg and (cfg.data.max_per_class or cfg.data.max_classes):
        lines.append(f"- Trained on a sample (profile {cfg.profile}); the full profile is the quality reference.")
    lines.append("- Measured on the test set of the training data's source; production traffic can differ: "
                 "read the drift monitor's verdicts.")
    return lines


def _gate(r: VersionRecord, cfg: PipelineConfig | None) -> list[str]:
    g = r.gate
    if not g:
        return ["## Gate", "The gate's decision was not recorded with this version."]
    lines = ["## Gate", f"Verdict: **{g['verdict']}**."]
    if cfg:
        p = cfg.gate
        lines.append(f"Floors: accuracy ≥ {p.min_accuracy}, macro-F1 ≥ {p.min_macro_f1}, ECE ≤ {p.max_ece}; "
                     f"margin over each champion {p.min_improvement:+}.")
    lines += [f"- {reason}" for reason in g.get("reasons", [])] or ["- every floor met"]
    lines += [_against(r, c, cfg) for c in g.get("champions", [])] if g["verdict"] == "register" else []
    if g.get("teacher"):
        tch = g["teacher"]
        lines.append(f"- teacher {tch['model']} v{tch['version']}: accuracy {tch['accuracy']:.4f}, "
                     f"ONNX {tch['onnx_bytes']:,} bytes")
    return lines


def _against(r: VersionRecord, champion: dict, cfg: PipelineConfig | None) -> str:
    """The gate's evidence against a champion, said as it is: "beat" only when the candidate measured higher."""
    mine, theirs = float(r.tags.accuracy or "nan"), champion["accuracy"]
    margin = cfg.gate.min_improvement if cfg else 0.0
    verb = ("beat" if mine > theirs else "matched" if mine == theirs
            else f"stayed within the allowed margin ({margin:+}) of")
    return (f"- {verb} {champion['model']} champion v{champion['version']}: accuracy {mine:.4f} vs {theirs:.4f} "
            f"on the same test set ({champion.get('source', 're-scored')})")


def _lineage(r: VersionRecord, cfg: PipelineConfig | None) -> list[str]:
    t = r.tags
    lines = ["## Lineage",
             f"- **Code commit:** `{t.git_commit or 'not recorded'}`; profile `{t.profile}`",
             f"- **Seeds:** training {cfg.train.seed}, data split {cfg.data.seed}" if cfg else "- **Seeds:** not recorded",
             f"- **Training run:** `{r.run_id}`" + (f" (family run `{r.run_tags[R.RUN_FAMILY]}`)"
                                                    if R.RUN_FAMILY in r.run_tags else ""),
             f"- **Digests:** bundle `{t.artifact_sha256}`, checkpoint `{t.checkpoint_sha256 or 'not recorded'}`",
             f"- **Rebuild and compare:** `yanjin reproduce {r.model} {r.version}`",
             "", "### Release history"]
    lines += [f"- {e.when} {e.who}: {e.action} @{e.alias} v{e.from_version or '–'} → v{e.to_version or '–'}"
              f" ({e.reason}{', forced' if e.forced else ''})" for e in r.history] or ["- no alias changes recorded"]
    lines += ["", "### Approvals"]
    lines += [f"- {_when(a['at'])} approved by {a['principal']}: {a['reason']}" for a in r.approvals] or \
        ["- none recorded (the profile's `release.approvals` says how many a promotion to champion needs)"]
    if t.config:
        config = json.loads(t.config)  # a section a line: readable, and still JSON
        body = ",\n".join(f" {json.dumps(k)}: {json.dumps(v, sort_keys=True)}" for k, v in sorted(config.items()))
        lines += ["", "### Resolved config", "```json", "{\n" + body + "\n}", "```"]
    return lines


def card_markdown(r: VersionRecord) -> str:
    cfg = r.config
    sections = [[f"# Model card: {r.model} version {r.version}",
                 f"*Written by yanjin from the version's record in MLflow on {_when(time.time())}.*"],
                _details(r, cfg), _use(r, cfg), _data(r, cfg), _metrics(r), _intents(r), _limits(r, cfg),
                _gate(r, cfg), _lineage(r, cfg)]
    return "\n\n".join("\n".join(s) for s in sections if s) + "\n"


def card_html(markdown_text: str, title: str) -> str:
    import markdown

    body = markdown.markdown(markdown_text, extensions=["tables", "fenced_code"])
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title><style>"
            "body{font-family:sans-serif;max-width:60em;margin:2em auto;line-height:1.4}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}"
            "pre{background:#f6f6f6;padding:1em;overflow:auto;max-height:30em}</style></head>"
            f"<body>{body}</body></html>")


DESCRIPTION_CHARS = 5000  # MLflow's column for a version's description (PostgreSQL enforces it)


def card_summary(r: VersionRecord) -> str:
    """The card's head for the version's description in the MLflow UI: details, headline metrics, review
    share and gate; the whole card is the run's artifact."""
    cfg = r.config
    parts = [[f"# Model card: {r.model} version {r.version}"], _details(r, cfg), _headline(r),
             [f"Sent to review below confidence {r.slices['review']['threshold']}: "
              f"{_pct(r.slices['review']['share'])} of the test set."] if r.slices else [],
             _gate(r, cfg), [f"The whole card (data, calibration, slices, per intent, lineage): artifact "
                             f"`{R.CARD_MARKDOWN}` of run `{r.run_id}`, or `yanjin card {r.model} {r.version}`."]]
    text = "\n\n".join("\n".join(p) for p in parts if p)
    return text if len(text) <= DESCRIPTION_CHARS else text[: DESCRIPTION_CHARS - 2] + " …"


def write_card(client, model: str, version: str, ledger=None) -> str:
    """The card of a version just registered: logged with its run (Markdown and HTML), its head set as the
    version's description, which the MLflow UI renders; returns the Markdown."""
    record = read_record(client, model, version, ledger)
    text = card_markdown(record)
    client.log_text(record.run_id, text, R.CARD_MARKDOWN)
    client.log_text(record.run_id, card_html(text, f"{model} v{version}"), R.CARD_HTML)
    client.update_model_version(model, version, description=card_summary(record))
    return text
