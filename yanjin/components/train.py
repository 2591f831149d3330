"""Fine-tuning a family member on labelled text.

AdamW with linear warmup and linear decay, a fixed seed, and the best epoch on validation
accuracy kept as a safetensors checkpoint (never pickle).
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from torch.nn.parallel import DistributedDataParallel

from ..config import TrainParams
from ..models.encoder import Classifier
from ..models.family import ModelSpec, pretrained_classifier, save_checkpoint
from ..models.tokenizer import TextTokenizer
from ..progress import bar as progress_bar
from .data import LABEL, TEXT
from .device import CPU, Placement
from .distributed import SINGLE, World
from .resume import Resume, restore_rng


@dataclass
class TrainResult:
    best_epoch: int
    best_val_accuracy: float
    seconds: float
    history: list[dict] = field(default_factory=list)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def warmup_linear_decay(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 else decay).append(p)  # biases and LayerNorm weights are 1-D
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def on_device(place: Placement, *arrays: np.ndarray) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(a).to(place.torch_device, non_blocking=True) for a in arrays)


@torch.no_grad()
def _batched(forward: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], tokenizer: TextTokenizer,
             texts: list[str], batch_size: int, place: Placement, width: int) -> np.ndarray:
    out = np.zeros((len(texts), width), dtype=np.float32)
    for idx in tokenizer.length_batches(texts, batch_size):  # similar lengths: ~3x fewer padded tokens
        ids, mask = on_device(place, *tokenizer([texts[i] for i in idx]))
        with place.autocast():
            out[idx] = forward(ids, mask).float().cpu().numpy()
    return out


def predict_logits(model: Classifier, tokenizer: TextTokenizer, texts: list[str], batch_size: int,
                   place: Placement = CPU) -> np.ndarray:
    model.eval()
    return _batched(model, tokenizer, texts, batch_size, place, model.head.out_features)  # (N, labels)


def pooled_embeddings(model: Classifier, tokenizer: TextTokenizer, texts: list[str], batch_size: int,
                      place: Placement = CPU) -> np.ndarray:
    """What the head reads: the encoder's mean-pooled output, (N, C)."""
    model.eval()
    return _batched(model.embed, tokenizer, texts, batch_size, place, model.head.in_features)


PROBE_C = (0.1, 1.0, 10.0, 100.0)  # inverse L2 strengths (scikit-learn's C) tried; the validation rows pick one


def fit_probe(model: Classifier, tokenizer: TextTokenizer, texts: list[str], y: np.ndarray, val_texts: list[str],
              val_y: np.ndarray, batch_size: int, place: Placement = CPU) -> dict:
    """Fit the head alone: multinomial logistic regression (scikit-learn, L2) on the frozen encoder's pooled
    embeddings, computed once; the strength with the best validation accuracy is copied into the head.
    At a few dozen examples per intent a strong base's probe beats fine-tuning a small base, for the
    price of one forward pass (benchmarks/demo_pro.py). Returns the record of its one "epoch"."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss

    missing = sorted(set(range(model.head.out_features)) - set(y.tolist()))
    if missing:
        raise ValueError(f"train.probe: label indices {missing} have no training row, so the probe has no weights "
                         f"for them")
    model.to(place.torch_device)
    x, x_val = (pooled_embeddings(model, tokenizer, t, batch_size, place) for t in (texts, val_texts))
    fits = [LogisticRegression(C=c, max_iter=3000).fit(x, y) for c in PROBE_C]
    scores = [float(f.score(x_val, val_y)) if len(val_y) else 0.0 for f in fits]
    best = fits[scores.index(max(scores))]  # on a tie the strongest regularisation
    with torch.no_grad():
        model.head.weight.copy_(torch.as_tensor(best.coef_).to(model.head.weight))    # (labels, C)
        model.head.bias.copy_(torch.as_tensor(best.intercept_).to(model.head.bias))   # (labels,)
    return {"epoch": 1, "train_loss": float(log_loss(y, best.predict_proba(x))), "val_accuracy": max(scores),
            "probe_c": float(best.C)}


def val_accuracy(model: Classifier, tokenizer: TextTokenizer, texts: list[str], y: np.ndarray, batch_size: int,
                 place: Placement = CPU, world: World = SINGLE) -> float:
    """Accuracy on the validation rows; under torchrun on every rank's shard together."""
    correct, n = world.sum(float((predict_logits(model, tokenizer, texts, batch_size, place).argmax(1) == y).sum()),
                           float(len(y)))
    return correct / max(n, 1.0)


def length_grouped(order: torch.Tensor, lengths: torch.Tensor, batch_size: int, generator: torch.Generator,
                   window: int = 50) -> torch.Tensor:
    """`order` regrouped so that every run of `batch_size` rows has similar lengths, still random: it is cut
    into windows of `window` batches, each sorted by length and cut into batches, and the full batches are
    shuffled; a short one stays last, so every other batch keeps its boundaries (as Hugging Face's
    `group_by_length`)."""
    batches = []
    for w in range(0, len(order), window * batch_size):
        chunk = order[w : w + window * batch_size]
        batches += list(chunk[torch.argsort(lengths[chunk], descending=True, stable=True)].split(batch_size))
    short = [batches.pop()] if batches and len(batches[-1]) < batch_size else []
    shuffled = [batches[i] for i in torch.randperm(len(batches), generator=generator)]
    return torch.cat(shuffled + short) if shuffled or short else order


LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (logits, batch indices) -> loss


@dataclass
class Fit:
    """Epoch loop state shared by fine-tuning and distillation: history and the best epoch so far."""

    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0
    best_val_accuracy: float = -1.0


def fit(model: Classifier, tokenizer: TextTokenizer, texts: list[str], loss_fn: LossFn, epochs: int,
        params: TrainParams, val_texts: list[str], val_y: np.ndarray, save: Callable[[], None],
        state: Fit | None = None, on_epoch: Callable[[dict], None] | None = None, progress: bool = True,
        phase: str = "", place: Placement = CPU, world: World = SINGLE, resume: Resume | None = None,
        key: str = "fit") -> Fit:
    """AdamW with linear warmup and decay for `epochs` on `place` (the model is moved there; `loss_fn`'s
    targets must live there too); after each epoch, `save()` if validation accuracy beat every earlier
    epoch (of this and previous `state`).

    Under torchrun (`world`), `texts` and `val_texts` are this rank's shard: each rank takes
    batch_size / ranks of every global batch, wrapping around a shard shorter than the longest, and
    validation counts are summed over ranks, so every rank agrees on the best epoch; only rank 0
    saves and reports. With `resume`, the loop continues from the checkpoint `key` when there is one.
    """
    state = state or Fit()
    model.to(place.torch_device)
    net = DistributedDataParallel(model) if world.parallel else model  # averages gradients over ranks
    scaler = place.scaler()
    local_batch = params.batch_size // world.size
    epoch_rows = world.max(len(texts))  # the longest shard sets the steps every rank takes
    steps_per_epoch = (epoch_rows + local_batch - 1) // local_batch
    total = max(1, steps_per_epoch * epochs)
    optimizer = torch.optim.AdamW(param_groups(model, params.weight_decay), lr=params.learning_rate)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_linear_decay(total, int(total * params.warmup_ratio))
    )
    generator = torch.Generator().manual_seed(params.seed + len(state.history))
    first, skip, running = 0, 0, 0.0
    saved = resume.load(key, world) if resume else None
    if saved is not None:  # continue after the last completed step
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        scaler.load_state_dict(saved["scaler"])
        state.history, state.best_epoch = list(saved["history"]), saved["best_epoch"]
        state.best_val_accuracy = saved["best_val_accuracy"]
        first, skip = saved["epoch_index"], saved["step"]
        running = saved["running"] if world.lead else 0.0  # the ranks' sum so far, carried by rank 0
        generator.set_state(saved["generator"])
        restore_rng(saved["rng"], world)
        if world.lead:
            where = "finished before the restart" if first == epochs else f"epoch {first + 1}, step {skip}"
            print(f"{phase}resumed from {resume.path(key)}: {where}")
    last = len(state.history) - first + epochs
    lengths = torch.from_numpy(tokenizer.lengths(texts)) if params.group_by_length else None

    def checkpoint(epoch_index: int, step: int, epoch_start, running: float) -> None:
        resume.save(key, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                          "schedule": schedule.state_dict(), "scaler": scaler.state_dict(),
                          "history": state.history, "best_epoch": state.best_epoch,
                          "best_val_accuracy": state.best_val_accuracy, "epoch_index": epoch_index, "step": step,
                          "running": world.sum(running)[0], "generator": epoch_start}, world)

    for epoch_index in range(first, epochs):
        epoch = len(state.history) + 1
        net.train()
        epoch_start = generator.get_state()  # a resumed epoch draws the same order again
        order = torch.randperm(len(texts), generator=generator)
        if lengths is not None:
            order = length_grouped(order, lengths, local_batch, generator)
        positions = torch.arange(epoch_rows) % len(texts)  # a shorter shard wraps around
        bar = progress_bar(range(steps_per_epoch), f"{phase}epoch {epoch}/{last}", disable=not progress or not world.lead)
        for step in bar:
            if step < skip:  # done before the restart
                continue
            idx = order[positions[step * local_batch : (step + 1) * local_batch]]
            ids, mask = on_device(place, *tokenizer([texts[i] for i in idx]))
            with place.autocast():
                loss = loss_fn(net(ids, mask), idx)  # logits (B, num_labels)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)  # clip the true gradients
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            scaler.step(optimizer)
            scaler.update()
            schedule.step()
            running += loss.item()
            bar.set_postfix(loss=f"{running / (step + 1):.4f}")
            if resume and resume.due(epoch_index * steps_per_epoch + step + 1) and step + 1 < steps_per_epoch:
                checkpoint(epoch_index, step + 1, epoch_start, running)
        skip = 0
        acc = val_accuracy(model, tokenizer, val_texts, val_y, params.eval_batch_size, place, world)
        loss_sum, = world.sum(running)
        record = {"epoch": epoch, "train_loss": loss_sum / world.size / max(1, steps_per_epoch), "val_accuracy": acc,
                  "lr": schedule.get_last_lr()[0]}
        state.history.append(record)
        if on_epoch and world.lead:
            on_epoch(record)
        if acc > state.best_val_accuracy:
            state.best_epoch, state.best_val_accuracy = epoch, acc
            if world.lead:
                save()
        running = 0.0
        if resume:
            checkpoint(epoch_index + 1, 0, generator.get_state(), 0.0)
    world.barrier()  # the best checkpoint is whole before any rank reads or returns
    return state


def train_classifier(
    train_df: pd.DataFrame,
    val_df: pd.DataFrame,
    labels: list[str],
    spec: ModelSpec,
    params: TrainParams,
    out_dir: str | Path,
    on_epoch: Callable[[dict], None] | None = None,
    progress: bool = True,
    encoder_weights: str | Path | None = None,
    place: Placement = CPU,
    world: World = SINGLE,
    resume: Resume | None = None,
    recipe_start: str = "",
) -> TrainResult:
    """Fine-tune the `spec.variant` preset on `place`; the best validation epoch is saved to `out_dir`.
    Under torchrun the frames are this rank's shards (`fit`).

    `encoder_weights` starts from an adapted encoder (Pro) instead of the pretrained base (`spec.base`);
    `recipe_start`: the run's recipe's start (`pretrained_classifier`).
    `params.probe`: the encoder stays as it starts and only the head is fitted (`fit_probe`).
    """
    seed_everything(params.seed)
    index = {name: i for i, name in enumerate(labels)}
    texts = train_df[TEXT].tolist()
    y = torch.tensor([index[l] for l in train_df[LABEL]], device=place.torch_device)
    val_texts, val_y = val_df[TEXT].tolist(), np.array([index[l] for l in val_df[LABEL]])

    adapted = Path(encoder_weights) if encoder_weights else None
    model, spec, tokenizer_file = pretrained_classifier(spec, len(labels), adapted, recipe_start)  # spec: with the base's architecture
    tokenizer = TextTokenizer(tokenizer_file, spec.max_length)
    save = lambda: save_checkpoint(model, spec, labels, out_dir, tokenizer_file)  # noqa: E731
    start = time.perf_counter()
    if params.probe:
        if world.parallel:
            raise ValueError("train.probe fits the head in one process: run it without torchrun (distributed.ranks=1)")
        record = fit_probe(model, tokenizer, texts, y.cpu().numpy(), val_texts, val_y, params.eval_batch_size, place)
        if on_epoch:
            on_epoch(record)
        save()
        return TrainResult(1, record["val_accuracy"], time.perf_counter() - start, [record])
    if params.epochs == 0:  # no training asked: the untrained head is the candidate
        acc = val_accuracy(model, tokenizer, val_texts, val_y, params.eval_batch_size, world=world)
        if world.lead:
            save()
        return TrainResult(0, acc, time.perf_counter() - start)
    result = fit(model, tokenizer, texts, lambda logits, idx: torch.nn.functional.cross_entropy(logits, y[idx]),
                 params.epochs, params, val_texts, val_y, save, on_epoch=on_epoch, progress=progress, place=place,
                 world=world, resume=resume, key="train")
    return TrainResult(result.best_epoch, result.best_val_accuracy, time.perf_counter() - start, result.history)
