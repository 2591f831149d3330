"""The family benchmark's headline ratios and goal verdicts are computed from the measured rows."""
import pytest

from yanjin.components.compare import GOALS, markdown_table, summarise

ROWS = {
    "v1": {"accuracy": 0.926, "onnx_bytes": 90_000_000, "ort_latency_ms_p50_b1": 2.0, "eager_latency_ms_p50_b1": 6.0},
    "pro": {"accuracy": 0.928, "onnx_bytes": 90_000_000, "ort_latency_ms_p50_b1": 2.1},
    "lite": {"accuracy": 0.915, "onnx_bytes": 4_500_000, "ort_latency_ms_p50_b1": 0.5, "eager_latency_ms_p50_b1": 1.5},
}


def test_ratios_and_goals():
    s = summarise(ROWS, {"accuracy": 0.9117})
    assert s["lite_size_ratio_vs_pro"] == pytest.approx(0.05)
    assert s["lite_accuracy_ratio_vs_pro"] == pytest.approx(0.915 / 0.928)
    assert s["lite_latency_ratio_vs_v1_ort"] == pytest.approx(0.25)
    assert s["lite_latency_ratio_vs_v1_eager"] == pytest.approx(0.5 / 6.0)  # Lite as shipped (ORT) vs V1 eager
    assert s["lite_eager_latency_ratio_vs_v1_eager"] == pytest.approx(0.25)
    assert all(g["met"] for g in s["goals"].values())
    worse = summarise(ROWS | {"lite": ROWS["lite"] | {"accuracy": 0.90, "ort_latency_ms_p50_b1": 0.7}}, {"accuracy": 0.9117})
    assert not worse["goals"]["lite_minus_tfidf_accuracy"]["met"]
    assert not worse["goals"]["lite_latency_ratio_vs_v1_ort"]["met"]  # 0.35 > 1/3
    assert worse["goals"]["lite_accuracy_ratio_vs_pro"]["met"] is False  # 0.970 < 0.97 by a hair


def test_lites_ratios_to_its_teacher_are_held_to_the_gate_that_registered_it():
    """A demo Lite (its gate: 90% of the teacher) is not reported as missing the full profile's 97%."""
    from yanjin.components.compare import goals_for
    from yanjin.config import load_config, with_variant

    demo, full = (with_variant(load_config(p), "lite").to_json() for p in ("demo", "full"))
    assert goals_for("") is GOALS and goals_for(full)["lite_accuracy_ratio_vs_pro"][:2] == GOALS["lite_accuracy_ratio_vs_pro"]
    rows = ROWS | {"lite": ROWS["lite"] | {"accuracy": 0.96 * 0.928}}
    held = summarise(rows, {"accuracy": 0.88}, goals_for(demo))["goals"]["lite_accuracy_ratio_vs_pro"]
    assert held["met"] and held["goal"] == ">= 0.9 (Lite's gate, profile demo)"
    assert not summarise(rows, {"accuracy": 0.88}, goals_for(full))["goals"]["lite_accuracy_ratio_vs_pro"]["met"]
    assert summarise(rows, {"accuracy": 0.88}, goals_for(demo))["goals"]["lite_size_ratio_vs_pro"]["goal"].startswith("<= 0.1 ")


def test_a_pro_that_gets_nothing_right_leaves_the_accuracy_ratio_out():
    s = summarise(ROWS | {"pro": ROWS["pro"] | {"accuracy": 0.0}}, {"accuracy": 0.9})
    assert "lite_accuracy_ratio_vs_pro" not in s["goals"] and s["goals"]["lite_size_ratio_vs_pro"]["met"]


def test_missing_versions_leave_ratios_out():
    s = summarise({"v1": ROWS["v1"]}, {"accuracy": 0.9})
    assert "lite_size_ratio_vs_pro" not in s and s["goals"] == {}


def test_table_marks_missing_figures():
    table = markdown_table({"pro": ROWS["pro"]})
    assert table.splitlines()[2].startswith("| pro | 0.9280 | – |") and "| 90.0 |" in table
