"""Loading labelled text data, hashing it for lineage, and splitting it.

Loading fails loudly with the file's name and the problem (missing columns, empty file,
bytes that are not UTF-8), so a bad file stops a run before any training starts.
"""
from __future__ import annotations

import hashlib
import math
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from sklearn.model_selection import train_test_split

from ..config import DataParams
from ..registry import RUN_PARAM_LABELS, RUN_PARAM_TEST, RUN_PARAM_TRAIN, sha256_file

TEXT, LABEL = "text", "label"  # canonical column names inside the pipeline


class DataError(ValueError):
    """A data file cannot be used; the message names the file and the problem."""


def sha256_files(paths: list[str | Path]) -> str:
    """One digest over several files, order-sensitive, for the data lineage tag."""
    return combine_digests([sha256_file(p) for p in paths])


def combine_digests(digests: list[str]) -> str:
    """The lineage digest of files whose own sha256 (hex) are known, in order: what sha256_files computes."""
    return hashlib.sha256("".join(digests).encode()).hexdigest()


def frame_sha256(df: pd.DataFrame) -> str:
    """sha256 of the rows' (text, label) in order: the same rows whatever file holds them. A version records it
    for its test figures, so the gate can tell when re-scoring it would only repeat them."""
    digest = hashlib.sha256()
    for text, label in zip(df[TEXT], df[LABEL]):
        digest.update(json.dumps([text, label]).encode())
    return digest.hexdigest()


def read_table(path: str | Path, text_column: str, label_column: str) -> pd.DataFrame:
    """CSV or Parquet -> DataFrame with columns (text, label), both strings."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty")
    try:
        if path.suffix.lower() in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        else:
            raw = path.read_bytes()
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                line = raw[: e.start].count(b"\n") + 1
                raise DataError(
                    f"{path}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start}, line {line})"
                ) from None
            df = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8")
    except DataError:
        raise
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: file has no header and no rows") from None
    except Exception as e:  # parser errors of CSV/Parquet readers
        raise DataError(f"{path}: cannot be parsed ({type(e).__name__}: {e})") from None
    missing = [c for c in (text_column, label_column) if c not in df.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {missing}; found {list(df.columns)}. "
            f"Set the text/label column names in the config."
        )
    if df.empty:
        raise DataError(f"{path}: has a header but no rows")
    out = pd.DataFrame({TEXT: df[text_column].astype(str), LABEL: df[label_column].astype(str)})
    return out.reset_index(drop=True)


ARTIFACT_SCHEMES = ("runs:/", "mlflow-artifacts:/")   # files kept in the registry's store


def local_file(location: str, tracking_uri: str | None = None, dest: str | Path | None = None) -> str:
    """A data file's local path: as given, or downloaded from the registry's store when it is an artifact URI
    (how a cluster run reads a training set that retraining stored)."""
    if not location.startswith(ARTIFACT_SCHEMES):
        return location
    import tempfile

    import mlflow

    try:
        return mlflow.artifacts.download_artifacts(location, dst_path=str(dest or tempfile.mkdtemp(prefix="data-")),
                                                   tracking_uri=tracking_uri)
    except Exception as e:  # noqa: BLE001 - the store's errors are many; the message names the URI
        raise DataError(f"{location}: cannot be read from the registry's store ({type(e).__name__}: {e})") from None


@dataclass(frozen=True)
class DataSource:
    """One owner of the data layout: where a version's data is (files, or artifact URIs in the registry's store),
    how to read it (format from the file name, the text and label columns) and its label list. Resolved once when
    a pipeline starts, recorded with the version (run params and its config), read back by retraining, reproduce,
    the drift reference and the model card; a retraining set is written in the same format and columns."""
    train: str
    test: str
    labels: str = ""            # a JSON list of label names; "": the labels seen in training
    text_column: str = "text"
    label_column: str = "category"

    @classmethod
    def in_folder(cls, folder: str | Path, params: DataParams) -> "DataSource":
        """A data folder's conventional files: train.csv, test.csv and categories.json when present."""
        folder = Path(folder).resolve()
        labels = folder / "categories.json"
        return cls(str(folder / "train.csv"), str(folder / "test.csv"), str(labels) if labels.is_file() else "",
                   params.text_column, params.label_column)

    @classmethod
    def recorded(cls, run_params: dict, params: DataParams) -> "DataSource | None":
        """What a version's run recorded (None for a run that recorded no files); the columns are its config's."""
        if not (run_params.get(RUN_PARAM_TRAIN) and run_params.get(RUN_PARAM_TEST)):
            return None
        return cls(run_params[RUN_PARAM_TRAIN], run_params[RUN_PARAM_TEST], run_params.get(RUN_PARAM_LABELS, ""),
                   params.text_column, params.label_column)

    def run_params(self) -> dict:
        return {RUN_PARAM_TRAIN: self.train, RUN_PARAM_TEST: self.test, RUN_PARAM_LABELS: self.labels}

    @property
    def files(self) -> list[str]:
        return [self.train, self.test] + ([self.labels] if self.labels else [])

    def read(self, which: str, tracking_uri: str | None = None) -> pd.DataFrame:
        """The `train` or `test` file as (text, label) rows (a store URI is downloaded first)."""
        return read_table(local_file(getattr(self, which), tracking_uri), self.text_column, self.label_column)

    def label_set(self, train: pd.DataFrame, tracking_uri: str | None = None) -> list[str]:
        return read_label_set(local_file(self.labels, tracking_uri) if self.labels else None, train)

    def write_like_train(self, frame: pd.DataFrame, path: str | Path) -> Path:
        """(text, label) rows written as the training file is: its format (the suffix is added) and column names."""
        suffix = Path(self.train).suffix.lower()
        out = Path(path).with_suffix(suffix if suffix in (".parquet", ".pq") else ".csv")
        table = pd.DataFrame({self.text_column: frame[TEXT].astype(str), self.label_column: frame[LABEL].astype(str)})
        if out.suffix in (".parquet", ".pq"):
            table.to_parquet(out, index=False)
        else:
            table.to_csv(out, index=False)
        return out


def read_label_set(path: str | Path | None, train: pd.DataFrame) -> list[str]:
    """Known labels: a JSON list file when given, else the labels seen in training, sorted."""
    if path:
        try:
            labels = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: cannot read the label list ({e})") from None
        if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
            raise DataError(f"{path}: must be a JSON list of label names")
        return sorted(set(labels))
    return sorted(train[LABEL].unique())


def subsample(df: pd.DataFrame, labels: list[str], params: DataParams) -> tuple[pd.DataFrame, list[str]]:
    """Optionally keep the first `max_classes` labels and at most `max_per_class` rows each."""
    if params.max_classes > 0:
        labels = labels[: params.max_classes]
        df = df[df[LABEL].isin(labels)]
    if params.max_per_class > 0 and len(df):
        # the rows groupby().apply() picked (groups in label order, each sampled alike), without its pandas 2.2 warning
        df = pd.concat([g.sample(min(len(g), params.max_per_class), random_state=params.seed)
                        for _, g in df.groupby(LABEL)])
    return df.reset_index(drop=True), labels


def split_train_val(df: pd.DataFrame, params: DataParams) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Stratified hold-out for checkpoint selection; the test file is never touched here."""
    n_val, n_labels = math.ceil(params.val_fraction * len(df)), df[LABEL].nunique()   # as scikit-learn counts it
    if n_val < n_labels:
        raise DataError(f"the validation split would hold {n_val} rows ({params.val_fraction:.0%} of {len(df)}), fewer "
                        f"than the {n_labels} labels it must stratify: raise data.val_fraction or data.max_per_class")
    tr, va = train_test_split(
        df, test_size=params.val_fraction, stratify=df[LABEL], random_state=params.seed
    )
    return tr.reset_index(drop=True), va.reset_index(drop=True)
