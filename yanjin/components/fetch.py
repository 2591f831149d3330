"""Downloading public data sets from their source, verified by sha256 before use."""
from __future__ import annotations

import hashlib
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from ..registry import sha256_file


@dataclass(frozen=True)
class DatasetSource:
    base_url: str
    files: dict[str, str]  # file name -> sha256
    licence: str


DATASETS = {
    "banking77": DatasetSource(
        base_url="https://raw.githubusercontent.com/PolyAI-LDN/task-specific-datasets/master/banking_data",
        files={
            "train.csv": "b06e26ac675513959a63135f11b94ea7786ed02da65db93a5650d8838cbc664b",
            "test.csv": "d12d6e3bc4c3103966ae786dc435913c0c563dfa328f5a3646d0e62cfeeb474d",
            "categories.json": "53261da888122daf2d120d925458631d9619e15d82e56052e7a42e535ce32b63",
        },
        licence="CC BY 4.0 — Casanueva et al., NLP4ConvAI 2020 (arXiv:2003.04807)",
    ),
}


class FetchError(RuntimeError):
    pass


def fetch_dataset(name: str, dest: str | Path, base_url: str | None = None, timeout: float = 60) -> Path:
    """Download every file of `name` into `dest`; a file lands only after its sha256 matches."""
    if name not in DATASETS:
        raise FetchError(f"unknown data set {name!r}; known: {sorted(DATASETS)}")
    source = DATASETS[name]
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    for fname, expected in source.files.items():
        target = out / fname
        if target.is_file() and sha256_file(target) == expected:
            continue
        url = f"{(base_url or source.base_url).rstrip('/')}/{fname}"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r:
                payload = r.read()
        except OSError as e:
            raise FetchError(f"{url}: download failed ({e})") from None
        actual = hashlib.sha256(payload).hexdigest()
        if actual != expected:
            raise FetchError(f"{url}: sha256 {actual} does not match the published {expected}; not saved")
        with tempfile.NamedTemporaryFile(dir=out, delete=False) as tmp:
            tmp.write(payload)
        Path(tmp.name).replace(target)
    return out
