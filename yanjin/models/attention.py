"""Attention modules. All share one signature, `forward(x (B, T, C), pad_mask (B, T)) -> (B, T, C)`,
so a block never knows which one it holds.

Shapes: B batch, T tokens, C channels, H heads, D head size, W window radius, N blocks.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class _Projections(nn.Module):
    """q, k, v and output projections, named like BERT's so pretrained weights map one to one."""

    def __init__(self, d_model: int, n_heads: int, dropout: float, head_dim: int | None = None) -> None:
        super().__init__()
        # head_dim is fixed by pretraining (C / 12 = 32); head pruning lowers n_heads, so H*D may be < C
        self.head_dim = head_dim or d_model // n_heads
        assert head_dim or d_model % n_heads == 0, "d_model must split evenly into heads"
        self.n_heads = n_heads
        self.dropout = dropout
        inner = n_heads * self.head_dim
        self.query = nn.Linear(d_model, inner)
        self.key = nn.Linear(d_model, inner)
        self.value = nn.Linear(d_model, inner)
        self.out = nn.Linear(inner, d_model)

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, T, C = x.shape
        H, D = self.n_heads, self.head_dim
        q = self.query(x).view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        k = self.key(x).view(B, T, H, D).transpose(1, 2)    # (B, H, T, D)
        v = self.value(x).view(B, T, H, D).transpose(1, 2)  # (B, H, T, D)
        return q, k, v

    def merge(self, y: torch.Tensor) -> torch.Tensor:
        B, H, T, D = y.shape
        return self.out(y.transpose(1, 2).reshape(B, T, H * D))  # (B, T, C)

    def p_drop(self) -> float:
        return self.dropout if self.training else 0.0


class RelativePositionBias(nn.Module):
    """MPNet's (T5's) learned bias per head for the signed distance between query and key, in log-spaced
    buckets: exact below 8 tokens each way, shared beyond 128. Added to the attention scores."""

    def __init__(self, n_heads: int, buckets: int = 32, max_distance: int = 128) -> None:
        super().__init__()
        self.buckets, self.max_distance = buckets, max_distance
        self.table = nn.Embedding(buckets, n_heads)

    def bucket(self, relative: torch.Tensor) -> torch.Tensor:
        half = self.buckets // 2
        n = -relative
        ret = (n < 0).long() * half                                      # keys after the query: upper half
        n = n.abs()
        exact = half // 2
        log_ratio = torch.log(n.float().clamp(min=1) / exact) / math.log(self.max_distance / exact)
        large = (exact + (log_ratio * (half - exact)).long()).clamp(max=half - 1)
        return ret + torch.where(n < exact, n, large)

    def forward(self, T: int, device: torch.device) -> torch.Tensor:
        pos = torch.arange(T, device=device)
        relative = pos[None, :] - pos[:, None]                           # (T, T): key - query
        return self.table(self.bucket(relative)).permute(2, 0, 1)        # (H, T, T)


_mask_per_query = False  # a plain global: torch.cond's branches are traced by dynamo, which reads no ContextVar


@contextlib.contextmanager
def masks_per_query():
    """While exporting to opset 23 (components/export.py): ONNX Runtime's kernel for its Attention op
    does not broadcast the mask over queries. Other opsets spell attention out and broadcast."""
    global _mask_per_query
    before, _mask_per_query = _mask_per_query, True
    try:
        yield
    finally:
        _mask_per_query = before


def per_query(keep: torch.Tensor) -> torch.Tensor:
    """(B, 1, 1, T) -> (B, 1, T, T) in a graph exported under `masks_per_query`; otherwise unchanged."""
    return keep.expand(-1, -1, keep.shape[-1], -1) if _mask_per_query and torch.compiler.is_exporting() else keep


class DenseAttention(_Projections):
    """Full softmax attention over all non-padding tokens: O(T^2) work, plus a relative-position
    bias when the base has one (MPNet)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float, head_dim: int | None = None,
                 position_bias: RelativePositionBias | None = None) -> None:
        super().__init__(d_model, n_heads, dropout, head_dim)
        self.position_bias = position_bias

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        q, k, v = self.heads(x)
        keep = pad_mask[:, None, None, :]                    # (B, 1, 1, T): True = attend
        if self.position_bias is None:
            keep = per_query(keep)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=self.p_drop())  # (B, H, T, D)
            return self.merge(y)
        # written out rather than SDPA with a float mask, whose decomposition the ONNX exporter mis-strides
        bias = self.position_bias(x.shape[1], x.device).to(q.dtype)                # (H, T, T)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim) + bias          # (B, H, T, T)
        probs = F.dropout(scores.masked_fill(~keep, float("-inf")).softmax(-1), self.p_drop())
        return self.merge(probs @ v)                                                # (B, H, T, D) -> (B, T, C)


class SlidingWindowAttention(_Projections):
    """Longformer-style sparse attention: each token attends to tokens within `radius` positions
    and to the global [CLS] token (position 0); [CLS] attends to every token.

    The sequence is cut into blocks of `radius` tokens; each query block scores only its own and
    the two neighbouring key blocks plus the [CLS] column, so the work is O(T * 3W) instead of
    O(T^2) -- the masked-out scores are never computed. At or below `dense_below` tokens the
    dense kernel is faster and is used instead.
    """

    def __init__(self, d_model: int, n_heads: int, dropout: float, radius: int = 64, dense_below: int = 256,
                 head_dim: int | None = None) -> None:
        super().__init__(d_model, n_heads, dropout, head_dim)
        self.radius = radius
        self.dense_below = dense_below

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_exporting():
            # keep both paths in the exported graph (an ONNX If), chosen by length at run time
            return torch.cond(x.shape[1] <= self.dense_below, self.dense, self.windowed, (x, pad_mask))
        return self.dense(x, pad_mask) if x.shape[1] <= self.dense_below else self.windowed(x, pad_mask)

    def dense(self, x: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        q, k, v = self.heads(x)
        keep = per_query(pad_mask[:, None, None, :])
        return self.merge(F.scaled_dot_product_attention(q, k, v, attn_mask=keep, dropout_p=self.p_drop()))

    def windowed(self, x: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        H, D, W = self.n_heads, self.head_dim, self.radius
        C = H * D                                                         # inner width (< d_model once pruned)
        extra = (W - T % W) % W                                           # pad T up to whole blocks
        N = (T + extra) // W
        # pad once before projecting: one block of keys before the first query block and one after
        # the last, so every query block reads blocks (n-1, n, n+1) as a strided window, no gathers
        xp = F.pad(x, (0, 0, W, W + extra))                               # (B, W + N*W + W, C)
        q = self.query(xp[:, W : W + T + extra]).view(B, N, W, H, D)      # (B, N, W, H, D)
        k = self.key(xp).view(B, -1, H, D)                                # (B, Tp, H, D)
        v = self.value(xp).view(B, -1, H, D)                              # (B, Tp, H, D)

        def window(t: torch.Tensor) -> torch.Tensor:                     # -> (B*N, H, 1+3W, D)
            cls = t[:, W : W + 1].unsqueeze(1).repeat(1, N, 1, 1, 1)     # (B, N, 1, H, D) global [CLS]
            local = t.unfold(1, 3 * W, W).permute(0, 1, 4, 2, 3)         # (B, N, 3W, H, D)
            win = torch.cat([cls, local], dim=2)                          # (B, N, 1+3W, H, D)
            return win.transpose(2, 3).reshape(B * N, H, 1 + 3 * W, D)

        # a key's offset from its query is the same in every block: keep |offset| <= W
        rows = torch.arange(W, device=x.device)[:, None]
        cols = torch.arange(3 * W, device=x.device)[None, :]
        band = (cols - W - rows).abs() <= W                               # (W, 3W)
        valid = F.pad(pad_mask, (W, W + extra), value=False)             # (B, Tp)
        valid = valid & (torch.arange(valid.shape[1], device=x.device) != W)  # [CLS] only via its column
        key_ok = valid.unfold(1, 3 * W, W).reshape(B * N, 1, 1, 3 * W)   # (B*N, 1, 1, 3W)
        bias = torch.zeros((), dtype=x.dtype).masked_fill(~(band & key_ok), float("-inf"))  # (B*N, 1, W, 3W)
        bias = F.pad(bias, (1, 0), value=0.0)                            # [CLS] column always open

        q_blocks = q.permute(0, 1, 3, 2, 4).reshape(B * N, H, W, D)      # (B*N, H, W, D)
        y = F.scaled_dot_product_attention(q_blocks, window(k), window(v), attn_mask=bias,
                                           dropout_p=self.p_drop())      # (B*N, H, W, D)
        y = y.view(B, N, H, W, D).permute(0, 1, 3, 2, 4).reshape(B, T + extra, C)[:, :T]  # (B, T, C)
        # global row: [CLS] reads the whole sequence
        q0 = q[:, 0, :1].transpose(1, 2)                                  # (B, H, 1, D)
        k_all, v_all = (t[:, W : W + T].transpose(1, 2) for t in (k, v))  # (B, H, T, D)
        cls = F.scaled_dot_product_attention(q0, k_all, v_all, attn_mask=pad_mask[:, None, None, :],
                                             dropout_p=self.p_drop())    # (B, H, 1, D)
        y = torch.cat([cls.transpose(1, 2).reshape(B, 1, C), y[:, 1:]], dim=1)  # (B, T, C)
        return self.out(y)
