"""Temperature scaling: the fitted temperature undoes a known miscalibration, and folding it into the
checkpoint's head changes no prediction while the confidences come to mean what they say."""
import numpy as np
import pytest
import torch

from yanjin.components.calibrate import calibrate_checkpoint, fit_temperature
from yanjin.components.data import LABEL, TEXT
from yanjin.components.evaluate import expected_calibration_error
from yanjin.components.train import TrainParams, predict_logits, train_classifier
from yanjin.models.family import ModelSpec, load_checkpoint, save_checkpoint
from yanjin.models.tokenizer import TextTokenizer


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_the_fitted_temperature_undoes_a_known_one():
    rng = np.random.default_rng(0)
    true = rng.normal(0, 3, size=(20000, 10))                        # calibrated logits
    y = np.array([rng.choice(10, p=p) for p in softmax(true)])         # labels drawn from them
    assert fit_temperature(true, y) == pytest.approx(1.0, abs=0.05)
    assert fit_temperature(true / 4, y) == pytest.approx(0.25, rel=0.05)   # underconfident: sharpened
    assert fit_temperature(true * 3, y) == pytest.approx(3.0, rel=0.05)    # overconfident: softened


def ece_and_predictions(ckpt, frame, labels):
    model, spec, _ = load_checkpoint(ckpt)
    probs = softmax(predict_logits(model, TextTokenizer(ckpt / "tokenizer.json", spec.max_length),
                                   frame[TEXT].tolist(), 64))
    y = np.array([labels.index(label) for label in frame[LABEL]])
    return expected_calibration_error(probs.max(1), probs.argmax(1) == y, 15), probs.argmax(1)


def test_calibrating_a_checkpoint_keeps_its_predictions_and_fixes_its_confidence(small_slice, tmp_path):
    train, test, labels = small_slice
    train_classifier(train, train.iloc[1::2], labels, ModelSpec(n_layers=1, max_length=32),
                     TrainParams(epochs=3, batch_size=16, learning_rate=5e-4, seed=7), tmp_path, progress=False)
    model, spec, _ = load_checkpoint(tmp_path)
    with torch.no_grad():  # an underconfident classifier: the same ranking, logits 10x flatter
        model.head.weight /= 10
        model.head.bias /= 10
    save_checkpoint(model, spec, labels, tmp_path, tmp_path / "tokenizer.json")
    before, predicted = ece_and_predictions(tmp_path, test, labels)

    temperature = calibrate_checkpoint(tmp_path, test)
    after, predicted_after = ece_and_predictions(tmp_path, test, labels)
    assert temperature < 0.5
    assert (predicted_after == predicted).all()
    assert after < before / 2

    weights = (tmp_path / "model.safetensors").read_bytes()
    assert calibrate_checkpoint(tmp_path, test) == pytest.approx(1.0, abs=1e-3)  # already calibrated: left alone
    assert (tmp_path / "model.safetensors").read_bytes() == weights
