"""Lite's model surgery: pruning really removes parameters, keeps what it claims to keep, and the
distillation loss and INT8 export behave as stated."""
import math

import numpy as np
import pytest
import torch

from yanjin.models.compress import (UNLABELLED, distillation_loss, domain_vocabulary, keep_layers, prune_ffn, prune_heads,
                                    prune_tokenizer, prune_vocab, rebuild, structure_importance, top_k)
from yanjin.models.family import ModelSpec, base_tokenizer_file, build_classifier
from yanjin.models.tokenizer import TextTokenizer

SPEC = ModelSpec(variant="lite", n_layers=2, max_length=32, dropout=0.0)
TEXTS = ["I lost my card yesterday", "how do I top up by bank transfer?", "my exchange rate was wrong"]


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    model = build_classifier(SPEC, num_labels=5).eval()
    return model, {k: v.detach().clone() for k, v in model.state_dict().items()}


def logits(model, tokenizer_file=None, texts=TEXTS):
    ids, mask = TextTokenizer(tokenizer_file or base_tokenizer_file(), 32)(texts)
    with torch.no_grad():
        return model.eval()(torch.from_numpy(ids), torch.from_numpy(mask))


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_pruning_at_ratio_zero_is_the_identity(teacher):
    model, state = teacher
    s, spec = keep_layers(state, SPEC, [0, 1])
    s, spec = prune_heads(s, spec, [list(range(12))] * 2)
    s, spec = prune_ffn(s, spec, [list(range(1536))] * 2)
    s, spec = prune_vocab(s, spec, list(range(30522)))
    same = rebuild(s, spec, 5)
    assert spec == SPEC and n_params(same) == n_params(model)
    assert torch.equal(logits(same), logits(model))


def test_head_and_ffn_pruning_slice_the_tensors(teacher):
    model, state = teacher
    s, spec = prune_heads(state, SPEC, [[0, 3, 7, 11], [1, 2, 4, 5]])
    s, spec = prune_ffn(s, spec, [list(range(0, 1536, 2))] * 2)
    small = rebuild(s, spec, 5)
    assert (spec.n_heads, spec.d_ff) == (4, 768)
    removed_per_layer = 3 * (384 * 256 + 256) + 384 * 256 + 2 * 384 * 768 + 768  # q,k,v rows; out cols; FFN
    assert n_params(model) - n_params(small) == 2 * removed_per_layer
    assert small.encoder.blocks[0].attn.query.weight.shape == (128, 384)
    assert small.encoder.blocks[1].ffn.down.weight.shape == (384, 768)
    assert torch.isfinite(logits(small)).all()


def test_removing_a_head_that_contributes_nothing_changes_nothing(teacher):
    """Slicing is exact: with head 5's output columns zeroed, the 11-head layer computes the same."""
    model, state = teacher
    s = dict(state)
    s["encoder.blocks.0.attn.out.weight"] = s["encoder.blocks.0.attn.out.weight"].clone()
    s["encoder.blocks.0.attn.out.weight"][:, 5 * 32 : 6 * 32] = 0.0
    sliced, spec = prune_heads(s, SPEC, [[h for h in range(12) if h != 5], list(range(11))])
    full, small = rebuild(s, SPEC, 5).encoder.blocks[0], rebuild(sliced, spec, 5).encoder.blocks[0]
    x, pad = torch.randn(2, 7, 384), torch.ones(2, 7, dtype=torch.bool)
    assert spec.n_heads == 11 and small.attn.out.weight.shape == (384, 352)
    assert torch.allclose(full.eval()(x, pad), small.eval()(x, pad), atol=1e-5)


def test_vocabulary_pruning_is_lossless_on_domain_text(teacher, tmp_path):
    model, state = teacher
    keep = domain_vocabulary(base_tokenizer_file(), TEXTS)
    s, spec = prune_vocab(state, SPEC, keep)
    small = rebuild(s, spec, 5)
    tok = prune_tokenizer(base_tokenizer_file(), keep, tmp_path / "tokenizer.json")
    assert spec.vocab_size == len(keep) < 1000 and n_params(model) - n_params(small) == (30522 - len(keep)) * 384
    assert torch.allclose(logits(small, tok), logits(model), atol=1e-5)


def test_unknown_words_still_split_into_pieces(tmp_path):
    keep = domain_vocabulary(base_tokenizer_file(), TEXTS)
    tok = TextTokenizer(prune_tokenizer(base_tokenizer_file(), keep, tmp_path / "tokenizer.json"), 32)
    pieces = tok._tok.encode("zyxq card").tokens
    assert pieces == ["[CLS]", "z", "##y", "##x", "##q", "card", "[SEP]"]
    assert tok._tok.token_to_id("[PAD]") == 0 and tok(["card"])[0][0, 0] == tok._tok.token_to_id("[CLS]")


def test_keep_layers_renumbers_and_rejects_bad_indices(teacher):
    _, state = teacher
    s, spec = keep_layers(state, SPEC, [1])
    assert spec.n_layers == 1 and torch.equal(s["encoder.blocks.0.ffn.up.weight"], state["encoder.blocks.1.ffn.up.weight"])
    assert not any(k.startswith("encoder.blocks.1.") for k in s)
    with pytest.raises(ValueError, match="subset of 0..1"):
        keep_layers(state, SPEC, [2])
    with pytest.raises(ValueError, match="same non-zero number"):
        prune_heads(state, SPEC, [[0, 1], [0]])


def test_distillation_loss_matches_a_hand_computation():
    student, teacher, label = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), torch.tensor([0])
    T, alpha = 2.0, 0.25
    # T=2: student soft = softmax([0.5, 0]), teacher soft = softmax([0, 0.5])
    s = [math.exp(0.5) / (math.exp(0.5) + 1), 1 / (math.exp(0.5) + 1)]
    t = [s[1], s[0]]
    kl = sum(ti * math.log(ti / si) for ti, si in zip(t, s))
    ce = -math.log(math.exp(1) / (math.exp(1) + 1))
    expected = alpha * T * T * kl + (1 - alpha) * ce
    assert distillation_loss(student, teacher, label, T, alpha).item() == pytest.approx(expected, rel=1e-6)
    assert distillation_loss(teacher, teacher, torch.tensor([1]), T, 1.0).item() == pytest.approx(0.0, abs=1e-7)


def test_rows_without_a_label_are_taught_by_the_teacher_alone():
    torch.manual_seed(0)
    student, teacher = torch.randn(4, 5), torch.randn(4, 5)
    labels = torch.tensor([2, UNLABELLED, 0, UNLABELLED])
    T, alpha = 2.0, 0.25
    soft = distillation_loss(student, teacher, labels, T, 1.0)           # the KL term, over all 4 rows
    ce = torch.nn.functional.cross_entropy(student[[0, 2]], labels[[0, 2]])  # the mean over labelled rows only
    assert distillation_loss(student, teacher, labels, T, alpha).item() == pytest.approx(
        (alpha * soft + (1 - alpha) * ce).item(), rel=1e-6)
    only_teacher = torch.full((4,), UNLABELLED)
    assert distillation_loss(student, teacher, only_teacher, T, alpha).item() == pytest.approx(alpha * soft.item(), rel=1e-6)


def test_text_for_the_teacher_alone_holds_no_training_or_validation_row():
    from yanjin.components.distill import drop_words, teacher_only_texts
    from yanjin.config import CompressParams

    train, val = ["I lost my card yesterday", "top up failed"], ["where is my card?"]
    corpus = ["i lost  my card YESTERDAY", "Where is my card?", "my transfer is pending", "top up failed",
              "can I get a refund"]
    params = CompressParams(kd_corpus=True, kd_copies=2, kd_drop=0.5)
    extra = teacher_only_texts(train, val, corpus, params, seed=7)
    assert extra[:2] == ["my transfer is pending", "can I get a refund"]   # casing and spacing do not hide a row
    copies = extra[2:]
    assert len(copies) == 2 * len(train)
    for copy, source in zip(copies, train * 2):
        assert copy and set(copy.split()) <= set(source.split())             # words dropped, none invented
    assert any(c != t for c, t in zip(copies, train * 2))
    assert extra == teacher_only_texts(train, val, corpus, params, seed=7)   # the same copies for the same seed
    assert teacher_only_texts(train, val, corpus, CompressParams(), seed=7) == []  # off by default
    rng = np.random.default_rng(0)
    assert all(drop_words("one", 0.99, rng) == "one" for _ in range(20))      # a text never empties


def test_importance_is_zero_for_a_dead_head_and_ranks_it_last(teacher):
    _, state = teacher
    s = dict(state)
    s["encoder.blocks.1.attn.out.weight"] = s["encoder.blocks.1.attn.out.weight"].clone()
    s["encoder.blocks.1.attn.out.weight"][:, 3 * 32 : 4 * 32] = 0.0
    s["encoder.blocks.0.ffn.down.weight"] = s["encoder.blocks.0.ffn.down.weight"].clone()
    s["encoder.blocks.0.ffn.down.weight"][:, 10] = 0.0
    model = rebuild(s, SPEC, 5)
    ids, mask = TextTokenizer(base_tokenizer_file(), 32)(TEXTS)
    batch = (torch.from_numpy(ids), torch.from_numpy(mask), torch.tensor([0, 1, 2]))
    heads, neurons = structure_importance(model, [batch], lambda out, y: torch.nn.functional.cross_entropy(out, y))
    assert heads.shape == (2, 12) and neurons.shape == (2, 1536)
    assert heads[1, 3] == 0 and (heads[1, torch.arange(12) != 3] > 0).all()
    assert neurons[0, 10] == 0
    assert 3 not in top_k(heads, 11)[1]
    assert all(p.grad is None for p in model.parameters())  # leaves the model as it found it


def test_int8_logits_stay_within_tolerance_of_fp32(tmp_path, small_slice):
    """INT8 (onnxruntime quantize_dynamic) vs the FP32 export on a fixed batch of real test texts, at the
    opset the pipeline exports INT8 members with (ONNX's own Attention op, one per block, survives
    quantization): per text, max |logit diff| <= 20% of that text's FP32 logit spread, and the same top-1
    on >= 95% of them. Accuracy on the whole test set is measured by the evaluate step, never assumed from this."""
    import onnx

    from yanjin.components.export import INT8_OPSET, export_onnx, quantize_bundle
    from yanjin.models.family import save_checkpoint, v1
    from yanjin.models.inference import OnnxClassifier

    train, test, labels = small_slice
    torch.manual_seed(0)
    spec = ModelSpec(n_layers=2, max_length=32, dropout=0.0)
    model = v1(spec, num_labels=len(labels)).eval()  # pretrained MiniLM layers: realistic activations
    tok = TextTokenizer(base_tokenizer_file(), 32)
    with torch.no_grad():  # fit only the head (seconds), so the logits have real margins
        ids, mask = tok(train["text"].tolist())
        z = model.embed(torch.from_numpy(ids), torch.from_numpy(mask))
    y = torch.tensor([labels.index(l) for l in train["label"]])
    opt = torch.optim.Adam(model.head.parameters(), lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model.head(z), y).backward()
        opt.step()
    save_checkpoint(model, spec, labels, tmp_path / "ckpt")
    export_onnx(tmp_path / "ckpt", tmp_path / "bundle", opset=INT8_OPSET)
    fp32 = OnnxClassifier.from_dir(tmp_path / "bundle")
    ids, mask = fp32.tokenizer(test["text"].tolist())
    before = fp32.logits(ids, mask)
    q = quantize_bundle(tmp_path / "bundle")
    after = OnnxClassifier.from_dir(tmp_path / "bundle").logits(ids, mask)
    ops = [n.op_type for n in onnx.load(str(tmp_path / "bundle" / "model.onnx")).graph.node]
    assert ops.count("Attention") == spec.n_layers and "QAttention" not in ops
    assert q.int8_bytes < q.fp32_bytes / 3
    spread = before.max(1) - before.min(1)                  # per text, ~16 on average here
    assert (np.abs(after - before).max(1) / spread).max() <= 0.2  # measured 0.15
    assert (after.argmax(1) == before.argmax(1)).mean() >= 0.95
