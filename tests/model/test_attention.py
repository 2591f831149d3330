"""V2's sliding-window attention: exact where it must be, and it really skips the masked work."""
import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from yanjin.models.attention import DenseAttention, SlidingWindowAttention

C, H = 384, 12


def pair(radius: int, dense_below: int = 0):
    torch.manual_seed(0)
    dense = DenseAttention(C, H, 0.0).eval()
    sparse = SlidingWindowAttention(C, H, 0.0, radius=radius, dense_below=dense_below).eval()
    sparse.load_state_dict(dense.state_dict())
    return dense, sparse


def inputs(batch: int, T: int, pad_from: int | None = None):
    x = torch.randn(batch, T, C)
    mask = torch.ones(batch, T, dtype=torch.bool)
    if pad_from is not None:
        mask[-1, pad_from:] = False
    return x, mask


@pytest.mark.parametrize("T", [7, 64, 130])
def test_window_covering_the_sequence_equals_dense(T):
    dense, sparse = pair(radius=T)
    x, mask = inputs(2, T, pad_from=T // 2)
    with torch.no_grad():
        a, b = dense(x, mask), sparse(x, mask)
    torch.testing.assert_close(b[mask], a[mask], atol=1e-5, rtol=0)


def test_windowed_equals_dense_attention_under_the_longformer_mask():
    T, radius = 300, 32
    dense, sparse = pair(radius)
    x, mask = inputs(2, T, pad_from=250)
    i = torch.arange(T)
    pattern = (i[:, None] - i[None, :]).abs() <= radius
    pattern[0, :] = pattern[:, 0] = True  # [CLS] is global both ways
    with torch.no_grad():
        q, k, v = dense.heads(x)
        keep = pattern[None, None] & mask[:, None, None, :]
        ref = dense.merge(torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=keep))
        got = sparse(x, mask)
    torch.testing.assert_close(got[mask], ref[mask], atol=1e-5, rtol=0)


def test_short_inputs_fall_back_to_dense():
    dense, sparse = pair(radius=4, dense_below=64)
    x, mask = inputs(1, 40)
    with torch.no_grad():
        torch.testing.assert_close(sparse(x, mask), dense(x, mask))


class LargestTensor(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else [out]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_windowed_path_never_builds_the_full_score_matrix():
    T, radius = 2048, 64
    _, sparse = pair(radius)
    x, mask = inputs(1, T)
    with torch.no_grad(), LargestTensor() as probe:
        sparse(x, mask)
    # a T x T score matrix per head would be H*T*T elements; the band is about H*T*(3*radius+1)
    assert probe.largest < H * T * T / 8
    assert probe.largest <= H * T * (3 * radius + 1) * 1.1


def test_positions_extend_to_4096_by_copying_the_learned_ones():
    from yanjin.models.encoder import Encoder, EncoderConfig
    from yanjin.models.pretrained import load_pretrained_encoder

    enc = load_pretrained_encoder(Encoder(EncoderConfig(n_layers=1, max_positions=4096)))
    table = enc.pos_emb.weight
    assert table.shape == (4096, 384)
    torch.testing.assert_close(table[512:1024], table[:512])
    torch.testing.assert_close(table[4096 - 512 :], table[:512])


def test_v2_onnx_export_equals_pytorch_on_both_paths(tmp_path):
    from yanjin.components.export import export_onnx
    from yanjin.models.family import ModelSpec, build_classifier, load_checkpoint, save_checkpoint
    from yanjin.models.inference import OnnxClassifier

    spec = ModelSpec(variant="v2", n_layers=1, max_length=512, max_positions=4096, attention_radius=8, dense_below=16)
    torch.manual_seed(0)
    save_checkpoint(build_classifier(spec, 5), spec, list("abcde"), tmp_path / "ckpt")
    result = export_onnx(tmp_path / "ckpt", tmp_path / "bundle")  # its own parity check covers T > dense_below
    assert result.max_abs_diff < 1e-4
    model, _, _ = load_checkpoint(tmp_path / "ckpt")
    session = OnnxClassifier.from_dir(tmp_path / "bundle")
    rng = np.random.default_rng(1)
    for T in (9, 16, 17, 200):  # dense, at the switch, windowed
        ids = rng.integers(1000, 30000, size=(2, T))
        ids[:, 0] = 101
        mask = np.ones_like(ids)
        mask[1, T // 2 :] = 0
        with torch.no_grad():
            ref = model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
        np.testing.assert_allclose(session.logits(ids, mask), ref, atol=1e-4)
