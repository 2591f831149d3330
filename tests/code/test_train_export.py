"""Training, checkpointing and ONNX export on a small slice (one short run shared by the tests)."""
import json

import numpy as np
import pytest
import torch

from yanjin.components.export import ParityError, _parity_inputs, export_onnx
from yanjin.components.train import TrainParams, train_classifier, warmup_linear_decay
from yanjin.models.family import ModelSpec, load_checkpoint
from yanjin.models.inference import OnnxClassifier, bundle_sha256

SPEC = ModelSpec(n_layers=1, max_length=32)
PARAMS = TrainParams(epochs=2, batch_size=16, learning_rate=5e-4, seed=7)


@pytest.fixture(scope="module")
def trained(small_slice, tmp_path_factory):
    train, _, labels = small_slice
    out = tmp_path_factory.mktemp("ckpt")
    epochs = []
    result = train_classifier(train, train.iloc[1::2], labels, SPEC, PARAMS, out, on_epoch=epochs.append, progress=False)
    return out, result, epochs, labels


def test_schedule_warms_up_then_decays_to_zero():
    f = warmup_linear_decay(total_steps=100, warmup_steps=10)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.5) and f(100) == 0.0


def test_training_reports_every_epoch_and_keeps_the_best(trained):
    _, result, epochs, _ = trained
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert result.best_val_accuracy == max(e["val_accuracy"] for e in epochs)
    assert epochs[-1]["train_loss"] < np.log(6)  # below chance-level cross-entropy


def test_checkpoint_is_safetensors_and_reloads(trained):
    ckpt, _, _, labels = trained
    assert (ckpt / "model.safetensors").read_bytes()[:8] != b"\x80\x02\x8a\x0a"  # not a pickle
    model, spec, loaded_labels = load_checkpoint(ckpt)
    assert spec == SPEC and loaded_labels == labels


def test_same_seed_gives_same_weights(small_slice, trained, tmp_path):
    train, _, labels = small_slice
    ckpt, _, _, _ = trained
    train_classifier(train, train.iloc[1::2], labels, SPEC, PARAMS, tmp_path, progress=False)
    a, _, _ = load_checkpoint(ckpt)
    b, _, _ = load_checkpoint(tmp_path)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(p, q, msg=name)


def test_onnx_output_equals_pytorch_on_dynamic_shapes(trained, tmp_path):
    ckpt, _, _, labels = trained
    result = export_onnx(ckpt, tmp_path / "bundle")
    assert result.max_abs_diff < 1e-4
    model, _, _ = load_checkpoint(ckpt)
    onnx_model = OnnxClassifier.from_dir(tmp_path / "bundle")
    ids, mask = _parity_inputs(30522, seed=5)[2]  # (8, 40) with a padded row
    with torch.no_grad():
        ref = model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    np.testing.assert_allclose(onnx_model.logits(ids, mask), ref, atol=1e-4)
    assert json.loads((tmp_path / "bundle" / "labels.json").read_text()) == labels


def test_bulk_predictions_in_length_batches_come_back_in_the_texts_order(small_slice, trained, tmp_path):
    """Every bulk prediction runs texts in batches of similar length (~3x fewer padded tokens); each row
    must still be its own text's, eager and in ONNX Runtime."""
    from yanjin.components.train import predict_logits
    from yanjin.models.tokenizer import TextTokenizer

    ckpt, _, _, _ = trained
    texts = small_slice[1]["text"].tolist()
    assert len(set(TextTokenizer(ckpt / "tokenizer.json", 32).lengths(texts))) > 5  # lengths that do get reordered
    model, _, _ = load_checkpoint(ckpt)
    tok = TextTokenizer(ckpt / "tokenizer.json", SPEC.max_length)
    one_by_one = np.concatenate([predict_logits(model, tok, [t], 1) for t in texts])
    np.testing.assert_allclose(predict_logits(model, tok, texts, 8), one_by_one, atol=1e-5)
    export_onnx(ckpt, tmp_path / "bundle")
    onnx_model = OnnxClassifier.from_dir(tmp_path / "bundle")
    np.testing.assert_allclose(onnx_model.text_logits(texts, 8), one_by_one, atol=1e-4)


def test_grouped_training_batches_hold_every_row_once_in_batches_of_similar_length():
    from yanjin.components.train import length_grouped

    lengths = torch.from_numpy(np.random.default_rng(0).integers(1, 65, 1000))
    order = torch.randperm(1000, generator=torch.Generator().manual_seed(1))
    grouped = length_grouped(order, lengths, 32, torch.Generator().manual_seed(2), window=8)
    assert sorted(grouped.tolist()) == list(range(1000))
    last_window = order[768:]  # windows of 8 x 32 rows: the last holds 232, so 7 batches and 8 rows left over
    assert torch.equal(grouped[-8:], last_window[torch.argsort(lengths[last_window], descending=True, stable=True)][-8:])
    padded = lambda o: sum(int(lengths[b].max()) * len(b) for b in o.split(32))  # noqa: E731
    assert padded(grouped) < 0.7 * padded(order)  # uniform lengths: random batches pad ~1.9x, grouped ~1.2x
    again = length_grouped(order, lengths, 32, torch.Generator().manual_seed(2), window=8)
    assert torch.equal(grouped, again)  # the generator decides, so a resumed epoch draws the same batches


def test_parity_failure_is_an_error(trained, tmp_path):
    ckpt, _, _, _ = trained
    with pytest.raises(ParityError, match="ONNX logits differ from PyTorch"):
        export_onnx(ckpt, tmp_path / "bundle", tolerance=0.0)


def test_bundle_digest_changes_when_any_file_changes(trained, tmp_path):
    ckpt, _, _, _ = trained
    bundle = tmp_path / "bundle"
    export_onnx(ckpt, bundle)
    before = bundle_sha256(bundle)
    (bundle / "labels.json").write_text((bundle / "labels.json").read_text().replace("card", "kard", 1))
    assert bundle_sha256(bundle) != before


def test_a_probe_fits_the_head_and_leaves_the_encoder_as_it_started(small_slice, tmp_path):
    """train.probe: the base's encoder untouched, a head that predicts, the chosen strength on record."""
    from dataclasses import replace

    from yanjin.components.data import LABEL
    from yanjin.components.train import PROBE_C, predict_logits
    from yanjin.models.family import pretrained_classifier
    from yanjin.models.tokenizer import TextTokenizer

    train, test, labels = small_slice
    epochs = []
    result = train_classifier(train, train.iloc[1::2], labels, SPEC, replace(PARAMS, probe=True), tmp_path,
                              on_epoch=epochs.append, progress=False)
    assert len(epochs) == 1 and epochs[0]["probe_c"] in PROBE_C and result.best_val_accuracy == epochs[0]["val_accuracy"]
    probe, _, _ = load_checkpoint(tmp_path)
    base, _, _ = pretrained_classifier(SPEC, len(labels))
    for (name, p), q in zip(probe.encoder.state_dict().items(), base.encoder.state_dict().values()):
        torch.testing.assert_close(p, q, msg=name)
    pred = predict_logits(probe, TextTokenizer(tmp_path / "tokenizer.json", SPEC.max_length), test["text"].tolist(), 32)
    accuracy = float(np.mean(pred.argmax(1) == np.array([labels.index(y) for y in test[LABEL]])))
    assert accuracy > 0.6, accuracy  # 6 intents: chance is 0.17


def test_a_probe_needs_a_training_row_of_every_label(small_slice, tmp_path):
    from dataclasses import replace

    from yanjin.components.data import LABEL

    train, _, labels = small_slice
    short = train[train[LABEL] != labels[2]]
    with pytest.raises(ValueError, match=r"label indices \[2\] have no training row"):
        train_classifier(short, short.iloc[1::2], labels, SPEC, replace(PARAMS, probe=True), tmp_path, progress=False)
