"""Traffic windows for calibrating the drift check: in-distribution windows, and planted shifts.

Planted shifts are built from real text only:
  ood_25       25% of the window replaced by real non-banking text (fortune-cookie files, Debian's
               `fortunes` package: quotes, jokes, proverbs; anything mentioning money is dropped)
  ood_100      the whole window out of domain
  collapsed    the intent mix collapsed to three intents
  nlupp        differently worded banking traffic (NLU++ banking)
  typos        every text with ~10% of its letters dropped, doubled or swapped
  truncated    every text cut to its first three words
"""
from __future__ import annotations

import json
import random
import re
from pathlib import Path

import pandas as pd

FORTUNES_DIR = Path("/usr/share/games/fortunes")
FORTUNE_FILES = ("food", "kids", "education", "people", "pets", "sports", "science", "wisdom", "work", "love",
                 "literature", "miscellaneous", "platitudes", "songs-poems", "fortunes", "humorists", "cookie")
MONEY = re.compile(r"\b(bank|money|cash|card|loan|account|pay|paid|dollar|credit|debt|tax|price|cost|buy|sell)",
                   re.IGNORECASE)


class MissingText(FileNotFoundError):
    pass


def fortune_texts(folder: Path = FORTUNES_DIR, max_chars: int = 160) -> list[str]:
    """Short single-paragraph fortunes without attributions or money words, deduplicated, in file order."""
    if not folder.is_dir():
        raise MissingText(f"{folder} not found: install Debian's `fortunes` package (apt-get install fortunes) "
                          f"or pass another folder of %-separated real non-banking text")
    seen, out = set(), []
    for name in FORTUNE_FILES:
        path = folder / name
        if not path.is_file():
            continue
        for chunk in path.read_text(encoding="utf-8", errors="replace").split("\n%\n"):
            lines = [ln.strip() for ln in chunk.strip().splitlines() if ln.strip() and not ln.strip().startswith("--")]
            text = " ".join(lines)
            if not 15 <= len(text) <= max_chars or "\t" in chunk or MONEY.search(text) or text in seen:
                continue
            if sum(c.isalpha() for c in text) < 0.7 * len(text):   # ascii art, tables
                continue
            seen.add(text)
            out.append(text)
    return out


def nlupp_texts(folder: Path) -> list[str]:
    texts = []
    for path in sorted(folder.glob("fold*.json")):
        texts += [row["text"] for row in json.loads(path.read_text())]
    return list(dict.fromkeys(texts))


def typos(text: str, rng: random.Random, rate: float = 0.1) -> str:
    out = []
    chars = list(text)
    i = 0
    while i < len(chars):
        c = chars[i]
        r = rng.random()
        if c.isalpha() and r < rate / 3:
            pass                                   # dropped
        elif c.isalpha() and r < 2 * rate / 3:
            out += [c, c]                          # doubled
        elif c.isalpha() and r < rate and i + 1 < len(chars):
            out += [chars[i + 1], c]               # swapped with the next
            i += 1
        else:
            out.append(c)
        i += 1
    return "".join(out)


def truncated(text: str, words: int = 3) -> str:
    return " ".join(text.split()[:words])


def windows(texts: list[str], size: int) -> list[list[str]]:
    """Disjoint windows, in order; a short tail is dropped."""
    return [texts[i: i + size] for i in range(0, len(texts) - size + 1, size)]


def planted(name: str, base: pd.DataFrame, size: int, n: int, ood: list[str], nlupp: list[str],
            seed: int = 0) -> list[list[str]]:
    """n windows of `size` texts for one planted shift; `base` is in-distribution traffic (text, category)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        sample = base.sample(size, random_state=rng.randrange(2**31))["text"].tolist()
        if name == "ood_25":
            k = size // 4
            sample = sample[: size - k] + rng.sample(ood, k)
            rng.shuffle(sample)
        elif name == "ood_100":
            sample = rng.sample(ood, size)
        elif name == "collapsed":
            few = rng.sample(sorted(base["category"].unique()), 3)
            pool = base[base["category"].isin(few)]["text"].tolist()
            sample = [rng.choice(pool) for _ in range(size)]
        elif name == "nlupp":
            sample = rng.sample(nlupp, size)
        elif name == "typos":
            sample = [typos(t, rng) for t in sample]
        elif name == "truncated":
            sample = [truncated(t) for t in sample]
        else:
            raise ValueError(f"unknown scenario {name!r}")
        out.append(sample)
    return out


SCENARIOS = ("ood_25", "ood_100", "collapsed", "nlupp", "typos", "truncated")
