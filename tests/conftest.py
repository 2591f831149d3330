"""Shared fixtures: the banking77 copy from ../shared/data (or $YANJIN_DATA), never committed."""
import os
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


@pytest.fixture(scope="session")
def data_dir() -> Path:
    folder = Path(os.environ.get("YANJIN_DATA", ROOT.parent / "shared" / "data" / "banking77"))
    if not (folder / "train.csv").is_file():
        pytest.fail(f"banking77 not found in {folder}; set YANJIN_DATA")
    return folder


@pytest.fixture(scope="session")
def banking(data_dir):
    """(train, test, labels) as canonical frames."""
    from yanjin.components.data import read_label_set, read_table

    train = read_table(data_dir / "train.csv", "text", "category")
    test = read_table(data_dir / "test.csv", "text", "category")
    return train, test, read_label_set(data_dir / "categories.json", train)


@pytest.fixture(scope="session")
def small_slice(banking):
    """6 intents x 20 train rows and their test rows: enough to train a model in seconds."""
    from yanjin.components.data import LABEL, DataParams, subsample

    train, test, labels = banking
    params = DataParams(max_classes=6, max_per_class=20, val_fraction=0.25)
    train, labels = subsample(train, labels, params)
    test = test[test[LABEL].isin(labels)].groupby(LABEL, group_keys=False).head(15).reset_index(drop=True)
    return train, test, labels


def write_csv(path: Path, frame: pd.DataFrame) -> Path:
    frame.to_csv(path, index=False)
    return path
