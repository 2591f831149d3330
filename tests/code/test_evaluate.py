"""Evaluation metrics on hand-checked cases."""
import numpy as np
import pytest

from yanjin.components.evaluate import expected_calibration_error, score_predictions


def test_ece_is_zero_when_confidence_equals_accuracy():
    conf = np.array([0.75] * 4)
    correct = np.array([1, 1, 1, 0], dtype=float)
    assert expected_calibration_error(conf, correct, bins=10) == pytest.approx(0.0)


def test_ece_of_overconfident_model():
    conf = np.array([1.0, 1.0, 0.5, 0.5])        # two bins: {1.0, 1.0} and {0.5, 0.5}
    correct = np.array([1, 0, 1, 1], dtype=float)  # accuracies 0.5 and 1.0
    # 0.5 * |0.5 - 1.0| + 0.5 * |1.0 - 0.5|
    assert expected_calibration_error(conf, correct, bins=10) == pytest.approx(0.5)


def test_scores_on_string_labels():
    s = score_predictions(["a", "b", "b", "c"], ["a", "b", "c", "c"], np.ones(4), bins=5)
    assert s["accuracy"] == pytest.approx(0.75)
    assert s["macro_f1"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    assert s["ece"] == pytest.approx(0.25)


def test_slices_on_a_hand_checked_case():
    from yanjin.components.evaluate import slice_metrics

    texts = ["card", "where is my card now please", "a b c d e f g h i j k l", "x y"]
    s = slice_metrics(texts, ["a", "b", "c", "d"], ["a", "b", "x", "x"], np.array([0.9, 0.61, 0.65, 0.95]), bins=10,
                      review_threshold=0.7)
    assert s["by_length_words"]["1-5"] == {"n": 2, "accuracy": 0.5, "mean_confidence": pytest.approx(0.925)}
    assert s["by_length_words"]["6-10"]["n"] == 1 and s["by_length_words"]["11-20"]["accuracy"] == 0.0
    assert s["by_length_words"]["21+"]["n"] == 0 and s["by_length_words"]["21+"]["accuracy"] is None
    # two texts below 0.7 go to review: one right, one wrong; of the two answered automatically, one is right
    assert s["review"] == {"threshold": 0.7, "share": 0.5, "accuracy_reviewed": 0.5, "accuracy_automatic": 0.5}
    assert sum(b["n"] for b in s["by_confidence"].values()) == 4
    assert s["by_confidence"]["0.60-0.70"] == {"n": 2, "accuracy": 0.5, "mean_confidence": pytest.approx(0.63)}
