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
