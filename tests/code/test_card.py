"""The model card as a pure function of a version's record: what it says, and what it says is missing."""
import hashlib

from yanjin import registry as R
from yanjin.components.card import VersionRecord, card_markdown, card_summary, known_dataset
from yanjin.components.fetch import DATASETS
from yanjin.config import load_config


def record(**changes) -> VersionRecord:
    cfg = load_config("demo", ["model.variant=lite"])
    tags = R.VersionTags(variant="lite", profile="demo", config=cfg.to_json(), data_sha256="ab" * 32,
                         git_commit="c0ffee", accuracy="0.8812", macro_f1="0.88", ece="0.05",
                         latency_ms_p50_b1="1.2", onnx_bytes="6000000", artifact_sha256="d" * 64,
                         teacher_model="banking77-pro", teacher_version="3", teacher_run_id="r3")
    base = dict(model="banking77-lite", version="4", created=0.0, aliases=["challenger"], tags=tags, run_id="r4",
                params={R.RUN_PARAM_TRAIN: "train.csv", R.RUN_PARAM_TEST: "test.csv", "data.n_train": "2772",
                        "data.n_val": "308", "data.n_test": "3080", "data.n_labels": "77"}, run_tags={})
    return VersionRecord(**(base | changes))


def test_a_version_registered_before_cards_says_what_is_not_recorded():
    text = card_markdown(record())
    assert "Per-slice figures were not recorded for this version" in text
    assert "The gate's decision was not recorded" in text
    assert "Licence:** not recorded: set data.licence" in text       # unknown data, no licence in the profile
    assert "distilled from banking77-pro version 3" in text           # Lite's base is its teacher version
    assert "started from" not in text
    started = R.VersionTags(**{**record().tags.__dict__, "student_init_model": "banking77-v1", "student_init_version": "2"})
    assert "started from banking77-v1 version 2" in card_markdown(record(tags=started))
    assert "(INT8, quantized by ONNX Runtime)" in text and "77 intents" in text


def test_the_licence_comes_from_the_profile_or_a_recognised_public_set():
    files = DATASETS["banking77"].files
    digest = hashlib.sha256("".join(files[f] for f in ("train.csv", "test.csv", "categories.json")).encode()).hexdigest()
    assert known_dataset(digest)[0] == "banking77"
    assert known_dataset("0" * 64) is None
    assert "CC BY 4.0" in card_markdown(record(tags=R.VersionTags(**{**record().tags.__dict__, "data_sha256": digest})))


def test_a_rejected_gate_lists_its_reasons_and_the_history_names_the_promoter():
    gate = {"verdict": "reject", "register": False, "reasons": ["accuracy 0.80 does not beat banking77-pro champion"],
            "champions": [], "teacher": None}
    from yanjin.registry.ledger import AuditEntry

    history = [AuditEntry(1, 0.0, "ana@bank", "banking77-v1", "promote", "done", R.CHAMPION, "3", "4", "quarterly review")]
    approvals = [{"principal": "ben@bank", "reason": "CAB-123", "at": 0.0}]
    text = card_markdown(record(gate=gate, history=history, approvals=approvals))
    assert "Verdict: **reject**" in text and "- accuracy 0.80 does not beat" in text
    assert "ana@bank: promote @champion v3 → v4 (quarterly review)" in text
    assert "approved by ben@bank: CAB-123" in text


def test_the_mlflow_description_fits_its_column():
    per_class = {f"intent_{i}": {"precision": 0.5, "recall": 0.5, "f1-score": 0.5, "support": 40} for i in range(300)}
    summary = card_summary(record(per_class=per_class))
    assert summary.startswith("# Model card: banking77-lite version 4") and len(summary) <= 5000
    assert "yanjin card banking77-lite 4" in summary


def test_the_network_is_the_one_trained_not_the_config_before_pruning():
    pruned = {"variant": "lite", "builder": "v1", "n_layers": 2, "max_length": 64, "n_heads": 6, "d_ff": 768,
              "vocab_size": 3208}
    assert "2 layers, 6 heads, width 384, FFN 768, vocabulary 3,208" in card_markdown(record(network=pruned))
    assert "not recorded with this version (its checkpoint has no spec); its config asked for" in card_markdown(record())


def test_the_card_names_the_base_the_version_was_built_on():
    student = {"variant": "lite", "builder": "v1", "n_layers": 2, "max_length": 64, "n_heads": 6, "d_ff": 768,
               "vocab_size": 3208, "base": "minilm", "arch": "bert"}
    teacher = {"variant": "pro", "builder": "v1", "n_layers": 12, "max_length": 64, "n_heads": 12, "d_ff": 3072,
               "vocab_size": 30527, "base": "mpnet", "arch": "mpnet", "d_model": 768}
    text = card_markdown(record(network=student, teacher_network=teacher))   # a MiniLM Lite taught by an MPNet Pro
    assert "itself built on all-mpnet-base-v2 (MPNet" in text and "the student's encoder: all-MiniLM-L6-v2" in text
    assert "all-MiniLM-L6-v2 (MiniLM-L6-H384" in card_markdown(record())   # recorded before bases were a choice
