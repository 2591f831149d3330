"""Model surgery for Lite: fewer layers, fewer heads, narrower feed-forwards, a smaller vocabulary.

Every operation slices a state dict and returns the spec of the smaller model it now fits, so
parameter count, file size and compute really drop (`torch.nn.utils.prune` only masks weights:
nothing would get smaller or faster). A model is rebuilt from the pair with `rebuild`.
Shapes: L layers, H heads, D head size, F feed-forward neurons, V vocabulary.
"""
from __future__ import annotations

import json
import string
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn.functional as F

from .encoder import Classifier
from .family import ModelSpec, build_classifier

State = dict[str, torch.Tensor]
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def rebuild(state: State, spec: ModelSpec, num_labels: int) -> Classifier:
    model = build_classifier(spec, num_labels)
    model.load_state_dict(state, strict=True)
    return model


def _block(i: int) -> str:
    return f"encoder.blocks.{i}."


def keep_layers(state: State, spec: ModelSpec, layers: list[int]) -> tuple[State, ModelSpec]:
    """Keep these blocks (e.g. every other one), renumbered 0..len-1 in the given order."""
    if not layers or any(not 0 <= i < spec.n_layers for i in layers):
        raise ValueError(f"layers {layers} must be a non-empty subset of 0..{spec.n_layers - 1}")
    out = {k: v for k, v in state.items() if not k.startswith("encoder.blocks.")}
    for new, old in enumerate(layers):
        for k, v in state.items():
            if k.startswith(_block(old)):
                out[_block(new) + k[len(_block(old)):]] = v
    return out, replace(spec, n_layers=len(layers))


def _uniform(keep: list[list[int]], what: str) -> int:
    sizes = {len(k) for k in keep}
    if len(sizes) != 1 or 0 in sizes:  # one size for every layer keeps the spec (and ONNX) simple
        raise ValueError(f"keep the same non-zero number of {what} in every layer, got {sorted(sizes)}")
    return sizes.pop()


def prune_heads(state: State, spec: ModelSpec, keep: list[list[int]]) -> tuple[State, ModelSpec]:
    """Keep heads `keep[layer]` in each layer: rows of q/k/v, columns of the output projection, and
    the heads' columns of the relative-position table (MPNet)."""
    n = _uniform(keep, "heads")
    D = spec.head_dim
    out = dict(state)
    for layer, heads in enumerate(keep):
        rows = torch.cat([torch.arange(h * D, (h + 1) * D) for h in sorted(heads)])  # (n*D,)
        p = _block(layer) + "attn."
        for proj in ("query", "key", "value"):
            out[p + proj + ".weight"] = state[p + proj + ".weight"][rows].clone()  # (n*D, C)
            out[p + proj + ".bias"] = state[p + proj + ".bias"][rows].clone()
        out[p + "out.weight"] = state[p + "out.weight"][:, rows].clone()          # (C, n*D)
        table = p + "position_bias.table.weight"
        if table in state:
            out[table] = state[table][:, sorted(heads)].clone()                   # (buckets, n)
    return out, replace(spec, n_heads=n)


def prune_ffn(state: State, spec: ModelSpec, keep: list[list[int]]) -> tuple[State, ModelSpec]:
    """Keep neurons `keep[layer]` of each feed-forward: rows of `up`, columns of `down`."""
    n = _uniform(keep, "feed-forward neurons")
    out = dict(state)
    for layer, neurons in enumerate(keep):
        idx = torch.tensor(sorted(neurons))
        p = _block(layer) + "ffn."
        out[p + "up.weight"] = state[p + "up.weight"][idx].clone()      # (n, C)
        out[p + "up.bias"] = state[p + "up.bias"][idx].clone()
        out[p + "down.weight"] = state[p + "down.weight"][:, idx].clone()  # (C, n)
    return out, replace(spec, d_ff=n)


def prune_vocab(state: State, spec: ModelSpec, keep_ids: list[int]) -> tuple[State, ModelSpec]:
    """Keep embedding rows `keep_ids` (sorted old ids); new id i is old id keep_ids[i]."""
    out = dict(state)
    out["encoder.tok_emb.weight"] = state["encoder.tok_emb.weight"][torch.tensor(keep_ids)].clone()  # (V', C)
    return out, replace(spec, vocab_size=len(keep_ids))


def domain_vocabulary(tokenizer_json: str | Path, texts: Iterable[str]) -> list[int]:
    """Old ids to keep: every token the domain corpus uses, the special tokens, and every ASCII
    character as a word start and as a `##` continuation, so that any unseen ASCII word still
    splits into pieces instead of collapsing to [UNK]."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    vocab = tok.get_vocab()
    keep = {vocab[t] for t in SPECIAL_TOKENS if t in vocab} | set(tok.get_added_tokens_decoder())  # MPNet: <s>, <pad>...
    for c in string.ascii_lowercase + string.digits + string.punctuation:
        keep.update(vocab[p] for p in (c, "##" + c) if p in vocab)
    for enc in tok.encode_batch(list(texts), add_special_tokens=False):
        keep.update(enc.ids)
    return sorted(keep)


def prune_tokenizer(tokenizer_json: str | Path, keep_ids: list[int], out_path: str | Path) -> Path:
    """The same WordPiece tokenizer over the kept tokens, ids renumbered in the old order.

    Greedy longest-match on a subset of the vocabulary returns the same pieces for any word whose
    pieces were all kept, so in-domain text tokenizes exactly as before."""
    spec = json.loads(Path(tokenizer_json).read_text())
    old_vocab = spec["model"]["vocab"]
    by_id = {i: t for t, i in old_vocab.items()}
    new_id = {old: new for new, old in enumerate(keep_ids)}
    spec["model"]["vocab"] = {by_id[old]: new for old, new in new_id.items()}
    for added in spec.get("added_tokens", []):
        added["id"] = new_id[added["id"]]  # special tokens are always kept
    for special in spec["post_processor"].get("special_tokens", {}).values():
        special["ids"] = [new_id[i] for i in special["ids"]]
    if spec.get("padding"):
        spec["padding"]["pad_id"] = new_id[spec["padding"]["pad_id"]]
    Path(out_path).write_text(json.dumps(spec, ensure_ascii=False))
    return Path(out_path)


UNLABELLED = -1  # a distillation row the teacher labels alone (unlabeled domain text, an augmented copy)


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
                      temperature: float, alpha: float) -> torch.Tensor:
    """alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(student, labels) (Hinton et al.).

    T^2 keeps the soft-target gradients on the same scale as the hard-label ones for any T. The KL term
    averages over every row, the CE term over the rows with a label (not UNLABELLED); a batch of
    unlabeled rows alone has no CE term."""
    soft = F.kl_div(F.log_softmax(student / temperature, dim=-1), F.log_softmax(teacher / temperature, dim=-1),
                    log_target=True, reduction="batchmean")
    labelled = (labels != UNLABELLED).sum().clamp(min=1)
    hard = F.cross_entropy(student, labels, ignore_index=UNLABELLED, reduction="sum") / labelled
    return alpha * temperature**2 * soft + (1 - alpha) * hard


def structure_importance(model: Classifier, batches: Iterable[tuple[torch.Tensor, ...]],
                         loss_fn: Callable[..., torch.Tensor],
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """First-order (gradient x activation) importance of every head and FFN neuron: per example
    |sum over tokens of a * dL/da|, i.e. how much the loss would change if the unit's output were
    zeroed (Michel et al. 2019; Molchanov et al. 2017), summed over the data. Returns (L, H), (L, F).

    `batches` yield (input_ids, attention_mask, *targets); the loss is `loss_fn(logits, *targets)`. It
    runs where the model is, in fp32: products of activations and gradients underflow in half precision.
    """
    device = next(model.parameters()).device
    blocks = list(model.encoder.blocks)
    H, D = blocks[0].attn.n_heads, blocks[0].attn.head_dim
    heads = torch.zeros(len(blocks), H)
    neurons = torch.zeros(len(blocks), blocks[0].ffn.up.out_features)
    captured: dict[tuple[str, int], torch.Tensor] = {}

    def capture(kind: str, layer: int):
        def hook(_module, inputs):
            inputs[0].retain_grad()
            captured[(kind, layer)] = inputs[0]
        return hook

    handles = [b.attn.out.register_forward_pre_hook(capture("heads", i)) for i, b in enumerate(blocks)]
    handles += [b.ffn.down.register_forward_pre_hook(capture("ffn", i)) for i, b in enumerate(blocks)]
    was_training = model.training
    model.eval()  # no dropout: score the network as it will run
    try:
        for ids, mask, *targets in batches:
            captured.clear()
            model.zero_grad(set_to_none=True)
            loss_fn(model(ids.to(device), mask.to(device)), *targets).backward()
            for i in range(len(blocks)):
                ctx = captured[("heads", i)]                                       # (B, T, H*D)
                per_head = (ctx * ctx.grad).unflatten(-1, (H, D)).sum(dim=(1, 3))  # (B, H)
                heads[i] += per_head.abs().sum(0).detach().cpu()
                act = captured[("ffn", i)]                                         # (B, T, F)
                neurons[i] += (act * act.grad).sum(dim=1).abs().sum(0).detach().cpu()   # (F,)
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return heads, neurons


def top_k(scores: torch.Tensor, k: int) -> list[list[int]]:
    """Per row, the indices of the k highest scores (ascending index order)."""
    return [sorted(row.topk(k).indices.tolist()) for row in scores]
