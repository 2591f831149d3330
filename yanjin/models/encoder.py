"""A compact BERT-family (or MPNet) encoder and the intent classifier built on it.

Read top to bottom: feed-forward, block, encoder, classifier; attention lives in attention.py.
Attention is a module handed to each block, so a variant (dense for V1/Pro, sliding-window for V2)
plugs in without the rest of the model branching on it; an MPNet base adds a relative-position bias
to each attention and numbers its absolute positions from 2.
Shapes use B batch, T tokens, C channels, H heads, D head size.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .attention import DenseAttention, RelativePositionBias


@dataclass(frozen=True)
class EncoderConfig:
    vocab_size: int = 30522      # uncased WordPiece vocabulary of the BERT tokenizer
    max_positions: int = 512     # learned absolute positions in the pretrained weights
    type_vocab_size: int = 2     # segment ids; single sentences only use segment 0
    d_model: int = 384           # MiniLM-L6-H384 width
    n_heads: int = 12            # heads per layer (fewer after Lite's head pruning)
    head_dim: int = 32           # D, fixed by pretraining: 384 / 12
    n_layers: int = 6            # fewer than 6 keeps the first layers (tiny test profile)
    d_ff: int = 1536             # 4 x d_model (narrower after Lite's FFN pruning)
    dropout: float = 0.1         # hidden and attention dropout, as in pretraining
    layer_norm_eps: float = 1e-12  # BERT's value; the weights were trained with it (MPNet: 1e-5)
    arch: str = "bert"           # bert | mpnet: how positions enter (below)

    @property
    def mpnet(self) -> bool:
        return self.arch == "mpnet"

    @property
    def position_offset(self) -> int:
        """MPNet numbers positions from padding_idx + 1 = 2 (RoBERTa's convention); BERT from 0."""
        return 2 if self.mpnet else 0


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int) -> None:
        super().__init__()
        self.up = nn.Linear(d_model, d_ff)
        self.down = nn.Linear(d_ff, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # exact (erf) GELU: the tanh approximation drifts from the pretrained activations
        return self.down(F.gelu(self.up(x)))


class Block(nn.Module):
    """Post-LayerNorm transformer block, as BERT was pretrained."""

    def __init__(self, attn: nn.Module, cfg: EncoderConfig) -> None:
        super().__init__()
        self.attn = attn
        self.ffn = FeedForward(cfg.d_model, cfg.d_ff)
        self.ln1 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.ln2 = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        x = self.ln1(x + self.drop(self.attn(x, pad_mask)))
        x = self.ln2(x + self.drop(self.ffn(x)))
        return x


AttentionFactory = Callable[[EncoderConfig], nn.Module]


def dense_attention(cfg: EncoderConfig) -> nn.Module:
    bias = RelativePositionBias(cfg.n_heads) if cfg.mpnet else None
    return DenseAttention(cfg.d_model, cfg.n_heads, cfg.dropout, cfg.head_dim, position_bias=bias)


class Encoder(nn.Module):
    def __init__(self, cfg: EncoderConfig, attention: AttentionFactory = dense_attention) -> None:
        super().__init__()
        self.cfg = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.pos_emb = nn.Embedding(cfg.max_positions, cfg.d_model)
        # MPNet has no segment embeddings (and its relative positions live in the attention)
        self.type_emb = None if cfg.mpnet else nn.Embedding(cfg.type_vocab_size, cfg.d_model)
        self.ln_emb = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(attention(cfg), cfg) for _ in range(cfg.n_layers))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        B, T = input_ids.shape
        # right padding: token t sits at position t (+ MPNet's offset); pad positions are never attended
        pos = torch.arange(T, device=input_ids.device) + self.cfg.position_offset  # (T,)
        x = self.tok_emb(input_ids) + self.pos_emb(pos)                        # (B, T, C)
        if self.type_emb is not None:
            x = x + self.type_emb.weight[0]  # segment 0 for every token: row 0 broadcast, no ids tensor needed
        x = self.drop(self.ln_emb(x))
        pad_mask = attention_mask.bool()                                       # (B, T)
        for block in self.blocks:
            x = block(x, pad_mask)
        return x                                                               # (B, T, C)


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average of the non-padding token states: the sentence embedding MiniLM was trained for."""
    m = attention_mask.unsqueeze(-1).to(hidden.dtype)                          # (B, T, 1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)                      # (B, C)


class Classifier(nn.Module):
    """Encoder + mean pooling + a linear head over the intents."""

    def __init__(self, encoder: Encoder, num_labels: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.encoder = encoder
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.cfg.d_model, num_labels)

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return mean_pool(self.encoder(input_ids, attention_mask), attention_mask)  # (B, C)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.drop(self.embed(input_ids, attention_mask)))      # (B, num_labels)
