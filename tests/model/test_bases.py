"""The base encoder is a choice: MiniLM (BERT) or MPNet, built in or from a pinned folder. Each is
verified file by file before use, reproduces its reference implementation, and a wrong one is refused
by name before anything trains."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from yanjin.config import ModelSpec
from yanjin.models.attention import RelativePositionBias
from yanjin.models.encoder import Encoder, mean_pool
from yanjin.models.family import build_classifier, encoder_config
from yanjin.models.pretrained import (BASE_SHA256, IntegrityError, UnsupportedBase, base_model_dir,
                                      load_pretrained_encoder, resolve_base)
from yanjin.models.tokenizer import TextTokenizer

TEXTS = [
    "I am still waiting on my card?",
    "What can I do if my card still hasn't arrived after 2 weeks?",
    "top up failed",
    "Why was I charged an extra fee when I withdrew cash abroad from an ATM in Spain last week? " * 3,
]


def pins(d: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in d.items())


@pytest.fixture(scope="module")
def mpnet():
    return resolve_base(ModelSpec(base="mpnet", n_layers=12))


def test_mpnet_sentence_embeddings_match_transformers_to_1e4(mpnet):
    transformers = pytest.importorskip("transformers")
    spec, base = mpnet
    arch = (spec.arch, spec.d_model, spec.head_dim, spec.vocab_size, spec.max_positions)
    assert arch == ("mpnet", 768, 64, 30527, 514)
    ids, mask = map(torch.from_numpy, TextTokenizer(base.file("tokenizer.json"), 256)(TEXTS))
    assert ids[0, 0].item() == 0 and ids[2, -1].item() == 1  # <s> first, <pad> (MPNet's id 1) after a short text
    ref_model = transformers.MPNetModel.from_pretrained(str(base.folder), local_files_only=True).eval()
    ours = load_pretrained_encoder(Encoder(encoder_config(spec)), base).eval()
    with torch.no_grad():
        ref = mean_pool(ref_model(input_ids=ids, attention_mask=mask).last_hidden_state, mask)
        got = mean_pool(ours(ids, mask), mask)
    np.testing.assert_allclose(got.numpy(), ref.numpy(), atol=1e-4, rtol=0)


def test_relative_buckets_match_the_reference_to_beyond_max_distance():
    transformers = pytest.importorskip("transformers")
    reference = transformers.models.mpnet.modeling_mpnet.MPNetEncoder.relative_position_bucket
    relative = torch.arange(-300, 301)[None, :]
    assert torch.equal(RelativePositionBias(4).bucket(relative), reference(relative))


def test_minilm_resolves_to_the_architecture_it_always_had():
    spec, base = resolve_base(ModelSpec())
    assert spec == ModelSpec() and base.name == "minilm"
    assert resolve_base(ModelSpec(n_layers=0))[0] == ModelSpec()   # 0: all of the base's blocks
    with pytest.raises(UnsupportedBase, match="model.n_layers=7, but the base minilm has 6 layers"):
        resolve_base(ModelSpec(n_layers=7))


@pytest.fixture
def folder(tmp_path):
    """MiniLM's files in a folder of the user's, pinned as a user would pin them."""
    out = tmp_path / "my-bert"
    out.mkdir()
    for name in BASE_SHA256:
        shutil.copyfile(base_model_dir() / name, out / name)
    return out


def test_a_pinned_folder_is_a_base(folder):
    spec, base = resolve_base(ModelSpec(base=str(folder), base_sha256=pins(BASE_SHA256), n_layers=2))
    assert base.folder == folder and (spec.arch, spec.n_layers, spec.d_model) == ("bert", 2, 384)
    model = load_pretrained_encoder(Encoder(encoder_config(spec)), base)
    reference = load_pretrained_encoder(Encoder(encoder_config(spec)))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reference.state_dict().values()))


def test_each_base_file_is_hashed_once_from_resolve_to_load(folder, monkeypatch):
    import yanjin.models.pretrained as pretrained

    hashed = []
    real = pretrained.sha256_file
    monkeypatch.setattr(pretrained, "sha256_file", lambda path: hashed.append(Path(path).name) or real(path))
    spec, base = resolve_base(ModelSpec(base=str(folder), base_sha256=pins(BASE_SHA256), n_layers=2))
    load_pretrained_encoder(Encoder(encoder_config(spec)), base)
    base.file("tokenizer.json")
    assert sorted(hashed) == sorted(BASE_SHA256)


def test_a_digest_mismatch_names_the_file(folder):
    wrong = BASE_SHA256 | {"tokenizer.json": "0" * 64}
    with pytest.raises(IntegrityError, match=f"{folder / 'tokenizer.json'}: sha256 .* does not match"):
        resolve_base(ModelSpec(base=str(folder), base_sha256=pins(wrong)))


def test_an_unpinned_folder_is_refused(folder):
    with pytest.raises(UnsupportedBase, match=r"pin the sha256 of \['config.json'\] in model.base_sha256"):
        resolve_base(ModelSpec(base=str(folder), base_sha256=pins({k: v for k, v in BASE_SHA256.items()
                                                                   if k != "config.json"})))


def test_an_unknown_architecture_names_the_config(folder):
    config = json.loads((folder / "config.json").read_text()) | {"model_type": "gpt2"}
    (folder / "config.json").write_text(json.dumps(config))
    from yanjin.registry import sha256_file

    pinned = BASE_SHA256 | {"config.json": sha256_file(folder / "config.json")}
    with pytest.raises(UnsupportedBase, match=f"{folder / 'config.json'}: model_type 'gpt2' is not an architecture"):
        resolve_base(ModelSpec(base=str(folder), base_sha256=pins(pinned)))


def test_an_unknown_base_name_is_refused():
    with pytest.raises(UnsupportedBase, match="neither a built-in base"):
        resolve_base(ModelSpec(base="bert-large"))


def test_v2_needs_a_bert_base(mpnet):
    spec, _ = mpnet
    with pytest.raises(ValueError, match="needs a BERT base"):
        build_classifier(ModelSpec(**{**spec.__dict__, "variant": "v2"}), 3)


@pytest.fixture(scope="module")
def mpnet_teacher(small_slice, tmp_path_factory):
    """A 1-block MPNet classifier fine-tuned and exported by the pipeline's own functions."""
    from yanjin.components.export import export_onnx
    from yanjin.components.train import TrainParams, train_classifier

    train, _, labels = small_slice
    out = tmp_path_factory.mktemp("mpnet")
    result = train_classifier(train, train.iloc[1::2], labels, ModelSpec(base="mpnet", n_layers=1, max_length=32),
                              TrainParams(epochs=1, batch_size=16, learning_rate=5e-5, seed=7), out / "ckpt",
                              progress=False)
    return out, result, export_onnx(out / "ckpt", out / "bundle")


def test_an_mpnet_classifier_trains_checkpoints_and_exports_to_onnx(mpnet_teacher, small_slice):
    """The second base end to end through the pipeline's functions: fine-tune, checkpoint, ONNX parity."""
    from yanjin.models.family import load_checkpoint

    out, result, exported = mpnet_teacher
    _, spec, _ = load_checkpoint(out / "ckpt")
    assert (spec.base, spec.arch, spec.n_layers, spec.d_model) == ("mpnet", "mpnet", 1, 768)
    base_tokenizer = resolve_base(spec)[1].folder / "tokenizer.json"
    assert (out / "ckpt" / "tokenizer.json").read_bytes() == base_tokenizer.read_bytes()
    assert result.best_val_accuracy > 1 / len(small_slice[2])
    assert exported.max_abs_diff < 1e-4


def test_lite_under_an_mpnet_teacher_is_a_minilm_student(mpnet_teacher, small_slice, tmp_path):
    """A 768-channel teacher's blocks cannot be sliced into a small student: MiniLM learns from its logits."""
    from yanjin.components.distill import distill_classifier
    from yanjin.components.train import TrainParams
    from yanjin.config import CompressParams
    from yanjin.models.family import load_checkpoint

    out, _, _ = mpnet_teacher
    train, _, labels = small_slice
    # with rows the teacher labels alone: two corpus texts that are no training row, one word-dropped copy each
    params = CompressParams(epochs=1, recovery_epochs=1, batch_size=16, importance_batches=2, kd_corpus=True, kd_copies=1)
    corpus = train["text"].tolist() + ["where is my new card", "cancel my transfer please"]
    result = distill_classifier(train, train.iloc[1::2], labels, out / "ckpt", out / "bundle", corpus,
                                params, TrainParams(seed=7), tmp_path, progress=False,
                                student=ModelSpec(variant="lite", n_layers=2, max_length=32))
    _, spec, _ = load_checkpoint(tmp_path)
    assert (spec.base, spec.arch, spec.d_model, spec.n_layers, spec.n_heads) == ("minilm", "bert", 384, 1, 6)
    assert TextTokenizer(tmp_path / "tokenizer.json", 32)._tok.id_to_token(0) == "[PAD]"   # MiniLM's pieces, pruned
    assert result.student_params < result.teacher_params / 5


def test_lite_under_an_mpnet_teacher_can_start_from_a_trained_minilm_member(mpnet_teacher, small_slice, tmp_path):
    """compress.student_from: the student starts from a MiniLM classifier of the task (V1) instead of
    the pretrained encoder. With no training and nothing pruned it is that classifier's kept blocks and
    head; a checkpoint on another base than student_base is refused by name before the teacher labels."""
    from safetensors.torch import load_file

    from yanjin.components.distill import StudentMismatch, distill_classifier
    from yanjin.components.train import TrainParams, train_classifier
    from yanjin.config import CompressParams

    out, _, _ = mpnet_teacher
    train, _, labels = small_slice
    minilm = tmp_path / "v1"
    train_classifier(train, train.iloc[1::2], labels, ModelSpec(n_layers=2, max_length=32),
                     TrainParams(epochs=1, batch_size=16, seed=7), minilm, progress=False)
    params = CompressParams(epochs=0, recovery_epochs=0, head_keep=1.0, ffn_keep=1.0, importance_batches=1,
                            prune_vocab=False)
    student = ModelSpec(variant="lite", n_layers=2, max_length=32)
    result = distill_classifier(train, train.iloc[1::2], labels, out / "ckpt", out / "bundle", [], params,
                                TrainParams(seed=7), tmp_path / "lite", progress=False, student=student,
                                student_checkpoint=minilm)
    assert result.student_start == "checkpoint"
    v1, lite = load_file(str(minilm / "model.safetensors")), load_file(str(tmp_path / "lite" / "model.safetensors"))
    assert torch.equal(lite["head.weight"], v1["head.weight"])     # the fine-tuned head, not a fresh one
    block = [k for k in lite if k.startswith("encoder.blocks.0.")]
    assert block and all(torch.equal(lite[k], v1[k.replace("blocks.0.", "blocks.1.")]) for k in block)  # kept: [1]
    with pytest.raises(StudentMismatch, match=f"{out / 'ckpt'}.*'mpnet'.*'minilm'"):
        distill_classifier(train, train.iloc[1::2], labels, out / "ckpt", out / "bundle", [], params,
                           TrainParams(seed=7), tmp_path / "bad", progress=False, student=student,
                           student_checkpoint=out / "ckpt")
    assert not (tmp_path / "bad").exists()


def test_pruning_an_mpnet_head_slices_its_relative_position_column():
    from yanjin.models.compress import prune_heads, rebuild

    torch.manual_seed(0)
    spec = ModelSpec(arch="mpnet", d_model=64, head_dim=16, n_heads=4, d_ff=128, n_layers=1, vocab_size=100,
                     max_positions=66, layer_norm_eps=1e-5, dropout=0.0)
    state = {k: v.clone() for k, v in build_classifier(spec, 3).state_dict().items()}
    state["encoder.blocks.0.attn.out.weight"][:, 16:32] = 0.0  # head 1 contributes nothing
    sliced, small_spec = prune_heads(state, spec, [[0, 2, 3]])
    full, small = rebuild(state, spec, 3).encoder.blocks[0], rebuild(sliced, small_spec, 3).encoder.blocks[0]
    assert small.attn.position_bias.table.weight.shape == (32, 3)
    x, pad = torch.randn(2, 9, 64), torch.ones(2, 9, dtype=torch.bool)
    assert torch.allclose(full.eval()(x, pad), small.eval()(x, pad), atol=1e-5)
