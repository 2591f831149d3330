"""Lite "edge": a trained teacher compressed into a small student.

1. vocabulary pruning: keep the tokens the domain corpus uses (lossless on in-domain text);
2. layer dropping: the student starts as every other teacher block;
3. distillation on the teacher's soft targets (the registered ONNX file's logits, computed once);
4. structured pruning: the least important heads and FFN neurons (gradient x activation) are
   sliced out of the weight matrices, then a recovery distillation.
The best validation epoch of the final architecture is saved as an ordinary checkpoint, so
export, evaluation and serving treat Lite like any other version. INT8 happens at export.
"""
from __future__ import annotations

import json
import time
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file

from ..config import CompressParams, ModelSpec
from ..models.compress import (UNLABELLED, distillation_loss, domain_vocabulary, keep_layers, prune_ffn, prune_heads,
                               prune_tokenizer, prune_vocab, rebuild, structure_importance, top_k)
from ..models.family import build_classifier, checkpoint_spec, encoder_config, save_checkpoint
from ..models.inference import OnnxClassifier
from ..models.pretrained import load_pretrained_encoder, resolve_base
from ..models.tokenizer import TextTokenizer
from ..registry import CHECKPOINT_WEIGHTS, LABELS_FILE, TOKENIZER_FILE
from .data import LABEL, TEXT
from .device import CPU, Placement
from .distributed import SINGLE, World
from .resume import Resume
from .train import Fit, TrainParams, fit, seed_everything, val_accuracy
from .validate import normalise


@dataclass
class DistillResult:
    best_epoch: int
    best_val_accuracy: float
    seconds: float
    teacher_params: int
    student_params: int
    vocab_size: int
    history: list[dict] = field(default_factory=list)
    student_start: str = "teacher"  # teacher (its own blocks), pretrained (student_base) or checkpoint


class TeacherMismatch(ValueError):
    """The teacher cannot teach this task (other labels)."""


class StudentMismatch(ValueError):
    """The checkpoint named to start the student cannot (another base, other labels)."""


def every_other_layer(n_layers: int) -> list[int]:
    """6 -> [1, 3, 5]: the last block (whose output the head reads) is always kept."""
    return list(range(n_layers - 1, -1, -2))[::-1]


def starts_elsewhere(teacher_base: str, params: CompressParams) -> bool:
    """Whether the student is built on another base than the teacher, so cannot start as its blocks."""
    return params.student_base not in ("teacher", teacher_base)


def n_params(state: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() for t in state.values())


def teacher_logits(teacher_bundle: str | Path, texts: list[str], labels: list[str]) -> torch.Tensor:
    """Soft targets from the teacher's registered ONNX file: exactly the model that serves."""
    teacher = OnnxClassifier.from_dir(teacher_bundle)
    if teacher.labels != labels:
        raise TeacherMismatch(f"teacher {teacher_bundle} predicts {len(teacher.labels)} labels that differ from "
                              f"this task's {len(labels)}; distil from a teacher trained on the same label set")
    return torch.from_numpy(teacher.text_logits(texts, 128))  # (N, num_labels)


def distill_classifier(
    train_df: pd.DataFrame, val_df: pd.DataFrame, labels: list[str], teacher_checkpoint: str | Path,
    teacher_bundle: str | Path, corpus: list[str], params: CompressParams, train: TrainParams,
    out_dir: str | Path, on_epoch: Callable[[dict], None] | None = None, progress: bool = True,
    student: ModelSpec = ModelSpec(variant="lite"), place: Placement = CPU, world: World = SINGLE,
    resume: Resume | None = None, student_checkpoint: str | Path | None = None,
) -> DistillResult:
    """Compress the teacher into `student.variant` (built by `student.builder`) on `place`; the best
    validation epoch after pruning is saved to `out_dir`. The student starts as the teacher, or, when
    the teacher is built on another base, as `student_checkpoint` (a classifier on `params.student_base`
    trained on these labels, e.g. V1) or else that base's pretrained encoder; its sizes then come from
    the pruning. Under torchrun the frames are this rank's shards: the kept vocabulary and the
    importance scores are pooled over all ranks, so every rank prunes the same network."""
    seed_everything(train.seed)
    start = time.perf_counter()
    state, spec, source_tokenizer = _classifier_checkpoint(Path(teacher_checkpoint), labels, TeacherMismatch, "teacher")
    teacher_size = n_params(state)
    student_start = "teacher"
    if starts_elsewhere(spec.base, params):  # the teacher's blocks would not fit the student
        if student_checkpoint:  # e.g. V1 under an MPNet Pro
            state, spec, source_tokenizer = _classifier_checkpoint(Path(student_checkpoint), labels, StudentMismatch,
                                                                   "student")
            if spec.base != params.student_base:
                raise StudentMismatch(f"student checkpoint {student_checkpoint} is built on {spec.base!r}, not on "
                                      f"compress.student_base {params.student_base!r}")
            student_start = "checkpoint"
        else:
            state, spec, source_tokenizer = _pretrained_student(student, params.student_base, len(labels), train.seed)
            student_start = "pretrained"
    spec = replace(spec, variant=student.variant, builder=student.network,
                   max_positions=state["encoder.pos_emb.weight"].shape[0], max_length=min(spec.max_length, 512))

    index = {name: i for i, name in enumerate(labels)}
    labelled = train_df[TEXT].tolist()
    val_texts, val_y = val_df[TEXT].tolist(), np.array([index[l] for l in val_df[LABEL]])
    extra = teacher_only_texts(labelled, val_texts, corpus, params, train.seed, world)
    y = torch.tensor([index[l] for l in train_df[LABEL]] + [UNLABELLED] * len(extra), device=place.torch_device)
    texts = labelled + extra
    soft = teacher_logits(teacher_bundle, texts, labels).to(place.torch_device)  # (N, num_labels)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer_file = out / TOKENIZER_FILE
    if params.prune_vocab:
        # the extra rows add no word: they are corpus texts, or training texts with fewer words
        keep_ids = world.union(domain_vocabulary(source_tokenizer, corpus + labelled))
        state, spec = prune_vocab(state, spec, keep_ids)
        prune_tokenizer(source_tokenizer, keep_ids, tokenizer_file)
    else:
        tokenizer_file.write_bytes(source_tokenizer.read_bytes())
    layers = [int(i) for i in params.layers.split(",")] if params.layers else every_other_layer(spec.n_layers)
    state, spec = keep_layers(state, spec, layers)
    tokenizer = TextTokenizer(tokenizer_file, spec.max_length)

    def kd(logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return distillation_loss(logits, soft[idx], y[idx], params.temperature, params.alpha)

    recipe = replace(train, batch_size=params.batch_size, learning_rate=params.learning_rate)
    # phase 1: the layer-dropped student learns from the teacher (kept only as a starting point)
    model = rebuild(state, spec, len(labels))
    first = fit(model, tokenizer, texts, kd, params.epochs, recipe, val_texts, val_y, save=lambda: None,
                on_epoch=on_epoch, progress=progress, phase="distil ", place=place, world=world, resume=resume,
                key="distil")
    # phase 2: slice out the least important heads and neurons, then recover
    heads, neurons = structure_importance(model, _importance_batches(tokenizer, texts, params), kd)
    heads, neurons = world.sum_tensor(heads), world.sum_tensor(neurons)
    state = {k: v.detach() for k, v in model.state_dict().items()}
    state, spec = prune_heads(state, spec, top_k(heads, max(1, round(spec.n_heads * params.head_keep))))
    state, spec = prune_ffn(state, spec, top_k(neurons, max(1, round(spec.d_ff * params.ffn_keep))))
    model = rebuild(state, spec, len(labels)).to(place.torch_device)
    save = lambda: save_checkpoint(model, spec, labels, out, tokenizer_file)  # noqa: E731
    pruned = Fit(history=first.history)  # epochs keep counting; "best" restarts for the new architecture
    if params.recovery_epochs == 0:
        pruned.best_epoch = len(first.history)
        pruned.best_val_accuracy = val_accuracy(model, tokenizer, val_texts, val_y, train.eval_batch_size, place, world)
        if world.lead:
            save()
    fit(model, tokenizer, texts, kd, params.recovery_epochs, recipe, val_texts, val_y, save=save,
        state=pruned, on_epoch=on_epoch, progress=progress, phase="recover ", place=place, world=world,
        resume=resume, key="recover")
    return DistillResult(pruned.best_epoch, pruned.best_val_accuracy, time.perf_counter() - start,
                         teacher_size, n_params(model.state_dict()), spec.vocab_size, pruned.history, student_start)


def _classifier_checkpoint(ckpt: Path, labels: list[str], mismatch: type[ValueError],
                           role: str) -> tuple[dict[str, torch.Tensor], ModelSpec, Path]:
    """A trained classifier's weights, spec and tokenizer file; it must predict this task's labels."""
    state = load_file(str(ckpt / CHECKPOINT_WEIGHTS))
    spec = checkpoint_spec(ckpt)
    if json.loads((ckpt / LABELS_FILE).read_text()) != labels:
        raise mismatch(f"{role} checkpoint {ckpt} was trained on other labels than this task's")
    positions = 512 + encoder_config(spec).position_offset  # V2's 4096 back to the base's 512
    state["encoder.pos_emb.weight"] = state["encoder.pos_emb.weight"][:positions]
    return state, spec, ckpt / TOKENIZER_FILE


def teacher_only_texts(train_texts: list[str], val_texts: list[str], corpus: list[str], params: CompressParams,
                       seed: int, world: World = SINGLE) -> list[str]:
    """The rows only the teacher labels (CompressParams.kd_corpus, kd_copies): this rank's share of the
    corpus texts that are no training or validation row of any rank (the validation rows pick the best
    epoch, so the student never sees them), then word-dropped copies of this rank's training texts."""
    extra: list[str] = []
    if params.kd_corpus:
        # every rank's rows, as CRC32s of their keys (a collision only drops a corpus text)
        rows = normalise(pd.Series(train_texts + val_texts, dtype=str))
        seen = set(world.union([zlib.crc32(k.encode()) for k in rows]))
        fresh = [t for t, k in zip(corpus, normalise(pd.Series(corpus, dtype=str))) if zlib.crc32(k.encode()) not in seen]
        extra += fresh[world.rank :: world.size]
    rng = np.random.default_rng([seed, world.rank])
    for _ in range(params.kd_copies):
        extra += [drop_words(t, params.kd_drop, rng) for t in train_texts]
    return extra


def drop_words(text: str, rate: float, rng: np.random.Generator) -> str:
    """`text` with each word dropped with probability `rate`; at least one word stays."""
    words = text.split()
    kept = [w for w in words if rng.random() >= rate]
    return " ".join(kept or [words[rng.integers(len(words))]]) if words else text


def _pretrained_student(student: ModelSpec, base: str, num_labels: int, seed: int) -> tuple[dict, ModelSpec, Path]:
    """A smaller base's verified pretrained encoder and a fresh head: the student when the teacher is
    built on another base, whose blocks it could not hold (e.g. MiniLM's 384 channels under MPNet's 768)."""
    pins = student.base_sha256 if base == student.base else ""
    spec, found = resolve_base(replace(student, base=base, base_sha256=pins))
    torch.manual_seed(seed)  # the fresh head
    model = build_classifier(spec, num_labels)
    load_pretrained_encoder(model.encoder, found)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, spec, found.file(TOKENIZER_FILE)


def _importance_batches(tokenizer: TextTokenizer, texts: list[str], params: CompressParams):
    """A fixed sample of training batches as (input_ids, attention_mask, indices)."""
    order = torch.randperm(len(texts), generator=torch.Generator().manual_seed(0))
    for b in range(min(params.importance_batches, (len(texts) + params.batch_size - 1) // params.batch_size)):
        idx = order[b * params.batch_size : (b + 1) * params.batch_size]
        ids, mask = tokenizer([texts[i] for i in idx])
        yield torch.from_numpy(ids), torch.from_numpy(mask), idx
