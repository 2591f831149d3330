"""WordPiece tokenization with the HF `tokenizers` library, from a `tokenizer.json` file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from tokenizers import Tokenizer


class TextTokenizer:
    """Batches of texts -> padded (input_ids, attention_mask) int64 arrays.

    Pads to the longest text in the batch (not a fixed length), so short banking queries cost
    a few dozen tokens rather than max_length.
    """

    def __init__(self, tokenizer_json: str | Path, max_length: int) -> None:
        self.path = Path(tokenizer_json)
        self.max_length = max_length
        self._tok = Tokenizer.from_file(str(self.path))
        self._tok.enable_truncation(max_length=max_length)
        # the tokenizer's own pad token (BERT: [PAD], MPNet: <pad>), padded to the batch's longest text
        pad_token = (self._tok.padding or {}).get("pad_token", "[PAD]")
        self._tok.enable_padding(pad_id=self._tok.token_to_id(pad_token), pad_token=pad_token)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def __call__(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        enc = self._tok.encode_batch(list(texts))
        ids = np.asarray([e.ids for e in enc], dtype=np.int64)              # (B, T)
        mask = np.asarray([e.attention_mask for e in enc], dtype=np.int64)  # (B, T)
        return ids, mask

    def read_shares(self, texts: list[str]) -> list[float]:
        """Share of each text's characters the model reads: 1.0 unless the text was cut at max_length tokens.
        A token covers at least one character, so only texts longer than max_length characters are encoded again."""
        shares = [1.0] * len(texts)
        long = [i for i, t in enumerate(texts) if len(t.rstrip()) > self.max_length - 2]  # [CLS] and [SEP]
        for i, e in zip(long, self._tok.encode_batch([texts[i] for i in long]) if long else []):
            kept = max((end for (_, end), m in zip(e.offsets, e.attention_mask) if m), default=0)
            shares[i] = min(1.0, kept / len(texts[i].rstrip()))
        return shares

    def lengths(self, texts: list[str]) -> np.ndarray:
        """(N,) tokens per text after truncation, padding not counted."""
        return np.asarray([sum(e.attention_mask) for e in self._tok.encode_batch(list(texts))], dtype=np.int64)

    def length_batches(self, texts: list[str], batch_size: int) -> list[np.ndarray]:
        """Indices of `texts` in batches of similar length, shortest first. A batch pads to its longest text,
        so random batches of banking queries hold ~3x the real tokens (median 13, a long tail to 64). One batch
        needs no order: serving's requests and batch-1 latency loops skip the extra tokenization."""
        if len(texts) <= batch_size:
            return [np.arange(len(texts))]
        order = np.argsort(self.lengths(texts), kind="stable")
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]

