"""Domain-adaptive pretraining (DAPT) of the encoder on unlabeled in-domain text, for Pro.

The objective is contrastive (unsupervised SimCSE with token deletion): each sentence is encoded
twice, once as is and once with some words deleted, both with dropout on, and the two views must
find each other among the batch. Dropout alone was measured to be too easy for MiniLM (loss 0.005
at the first step, 0.0002 after 90): the deletions give the objective something to learn. MiniLM was trained contrastively for
mean-pooled sentence embeddings, so this moves it toward banking language while keeping the
geometry fine-tuning builds on; a naive masked-LM pass with a fresh head was measured to hurt
(0.925 vs 0.932 on banking77).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from ..config import AdaptParams
from ..models.encoder import Encoder, mean_pool
from ..models.family import ModelSpec, encoder_config
from ..models.pretrained import load_pretrained_encoder, resolve_base, save_encoder_weights
from ..models.tokenizer import TextTokenizer
from ..progress import bar as progress_bar
from ..registry import TOKENIZER_FILE
from .data import DataError
from .device import CPU, Placement
from .distributed import SINGLE, World
from .train import on_device, seed_everything, warmup_linear_decay
from .validate import normalise


@dataclass
class AdaptResult:
    n_texts: int
    n_excluded_test: int
    final_loss: float
    seconds: float


def read_corpus(sources: list[str | Path], text_column: str) -> list[str]:
    """Unlabeled texts from CSV/Parquet (text column), NLU++-style JSON lists, folders of those, or .txt."""
    texts: list[str] = []
    for source in sources:
        path = Path(source)
        files = sorted(path.glob("*.json")) if path.is_dir() else [path]
        if not files:
            raise DataError(f"{path}: no corpus files")
        for f in files:
            if not f.is_file():
                raise DataError(f"{f}: corpus file not found")
            if f.suffix == ".json":
                rows = json.loads(f.read_text(encoding="utf-8"))
                texts += [r["text"] for r in rows if isinstance(r, dict) and r.get("text")]
            elif f.suffix == ".txt":
                texts += [line for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
            elif f.suffix in (".parquet", ".pq"):
                texts += pd.read_parquet(f)[text_column].astype(str).tolist()
            else:
                texts += pd.read_csv(f, dtype=str, keep_default_na=False)[text_column].tolist()
    return texts


def clean_corpus(texts: list[str], exclude: list[str]) -> tuple[list[str], int]:
    """Deduplicate and drop anything that appears in `exclude` (the test split): DAPT never sees test text."""
    keys = normalise(pd.Series(texts, dtype=str))
    banned = set(normalise(pd.Series(exclude, dtype=str)))
    frame = pd.DataFrame({"text": texts, "key": keys})
    frame = frame[frame["key"].str.len() > 0].drop_duplicates("key")
    in_test = frame["key"].isin(banned)
    return frame.loc[~in_test, "text"].tolist(), int(in_test.sum())


def delete_tokens(ids: np.ndarray, mask: np.ndarray, rate: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Drop each inner token with probability `rate` ([CLS] and [SEP] stay), then re-pad."""
    rows = []
    for row, m in zip(ids, mask):
        tokens = row[: int(m.sum())]
        inner = tokens[1:-1]
        kept = inner[rng.random(len(inner)) >= rate] if len(inner) > 1 else inner
        rows.append(np.concatenate([tokens[:1], kept, tokens[-1:]]))
    width = max(len(r) for r in rows)
    out_ids = np.zeros((len(rows), width), dtype=np.int64)
    out_mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, r in enumerate(rows):
        out_ids[i, : len(r)], out_mask[i, : len(r)] = r, 1
    return out_ids, out_mask


def contrastive_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE over the batch: row i of z1 must pick row i of z2 among all rows."""
    sim = F.normalize(z1, dim=-1) @ F.normalize(z2, dim=-1).T / temperature  # (B, B)
    return F.cross_entropy(sim, torch.arange(len(z1), device=z1.device))


def adapt_encoder(texts: list[str], exclude: list[str], spec: ModelSpec, params: AdaptParams,
                  out_path: str | Path, on_step: Callable[[int, float], None] | None = None,
                  progress: bool = True, place: Placement = CPU, world: World = SINGLE) -> AdaptResult:
    """Continue pretraining the base encoder (`spec.base`) on `texts` (minus `exclude`) on `place`;
    saves encoder weights as safetensors.

    Under torchrun every rank takes every size-th text of the cleaned corpus and batch_size / ranks of
    each global batch; its in-batch negatives are its own rows (the contrastive task of a batch of that
    size), the gradients are averaged, and rank 0 saves."""
    seed_everything(params.seed)
    spec, base = resolve_base(spec)  # a wrong base stops here, before any work
    corpus, n_excluded = clean_corpus(texts, exclude)
    if params.max_texts > 0:
        corpus = corpus[: params.max_texts]
    if len(corpus) < 2 * params.batch_size:
        raise DataError(f"adaptation corpus has {len(corpus)} texts after cleaning; need at least {2 * params.batch_size}")
    n_texts, corpus = len(corpus), corpus[world.rank :: world.size]
    batch_size = params.batch_size // world.size
    encoder = load_pretrained_encoder(Encoder(encoder_config(spec)), base).to(place.torch_device)
    net = DistributedDataParallel(encoder) if world.parallel else encoder
    scaler = place.scaler()
    tokenizer = TextTokenizer(base.file(TOKENIZER_FILE), params.max_length)
    # drop the ragged last batch: it weakens the negatives; every rank takes the steps of the shortest shard
    steps_per_epoch = -world.max(-(len(corpus) // batch_size))
    total = steps_per_epoch * params.epochs
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=params.learning_rate, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_linear_decay(total, int(total * params.warmup_ratio)))
    generator = torch.Generator().manual_seed(params.seed)
    rng = np.random.default_rng(params.seed)
    start, loss_value, step = time.perf_counter(), float("nan"), 0
    encoder.train()  # dropout on: it is what makes the two views differ
    for epoch in range(params.epochs):
        order = torch.randperm(len(corpus), generator=generator)
        bar = progress_bar(range(steps_per_epoch), f"adapt {epoch + 1}/{params.epochs}",
                           disable=not progress or not world.lead)
        for i in bar:
            batch = [corpus[j] for j in order[i * batch_size : (i + 1) * batch_size]]
            ids, mask = tokenizer(batch)
            ids2, mask2 = delete_tokens(ids, mask, params.token_deletion, rng)
            ids, mask, ids2, mask2 = on_device(place, ids, mask, ids2, mask2)
            with place.autocast():
                if world.parallel:  # DDP allows one forward per backward: both views in one pass
                    z1, z2 = both_views(net, ids, mask, ids2, mask2)
                else:
                    z1 = mean_pool(encoder(ids, mask), mask)              # (B, C)
                    z2 = mean_pool(encoder(ids2, mask2), mask2)           # (B, C), fewer words, other dropout
            # outside autocast: at temperature 0.05 the similarities need fp32's mantissa
            loss = contrastive_loss(z1.float(), z2.float(), params.temperature)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(encoder.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            loss_value, step = loss.item(), step + 1
            bar.set_postfix(loss=f"{loss_value:.4f}")
            if on_step and step % 20 == 0 and world.lead:
                on_step(step, loss_value)
    if world.lead:
        save_encoder_weights(encoder, out_path)
    world.barrier()
    return AdaptResult(n_texts, n_excluded, loss_value, time.perf_counter() - start)


def both_views(net: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor, ids2: torch.Tensor,
               mask2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean-pooled embeddings of both views from one forward pass (padded to one width): (B, C) each."""
    width = ids.shape[1]
    ids2 = F.pad(ids2, (0, width - ids2.shape[1]))   # deletions only shorten a row
    mask2 = F.pad(mask2, (0, width - mask2.shape[1]))
    both_ids, both_mask = torch.cat([ids, ids2]), torch.cat([mask, mask2])
    z = mean_pool(net(both_ids, both_mask), both_mask)                   # (2B, C)
    return z[: len(ids)], z[len(ids) :]
