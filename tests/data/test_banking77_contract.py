"""The pipeline's Great Expectations suite, run on the real banking77 files."""
import pytest

from yanjin.components.data import LABEL, TEXT, DataParams, split_train_val
from yanjin.components.validate import DataValidationError, ValidationParams, validate_splits

SOURCES = {"train": "train.csv", "test": "test.csv"}


def test_banking77_passes_the_suite(banking):
    train, test, labels = banking
    report = validate_splits({"train": train, "test": test}, SOURCES, labels, ValidationParams())
    assert report.success and len(report.outcomes) >= 15
    # 77 intents, each with at least 10 training examples
    assert len(labels) == 77


def test_validation_split_is_stratified_and_disjoint(banking):
    train, _, _ = banking
    tr, va = split_train_val(train, DataParams(val_fraction=0.1))
    # no leakage between train and validation
    assert not set(tr[TEXT]) & set(va[TEXT])
    # every intent is represented in validation
    assert va[LABEL].nunique() == train[LABEL].nunique()
    assert len(tr) + len(va) == len(train)


def test_test_rows_copied_into_train_are_caught_as_leakage(banking):
    train, test, labels = banking
    leaky = train._append(test.head(50).assign(text=lambda d: d[TEXT].str.upper()), ignore_index=True)
    with pytest.raises(DataValidationError, match="no leakage into the test set") as e:
        validate_splits({"train": leaky, "test": test}, SOURCES, labels, ValidationParams())
    assert len(e.value.report.failures) == 1


def test_duplicate_rate_is_bounded(banking):
    train, test, labels = banking
    duplicated = train._append(train.head(300), ignore_index=True)
    with pytest.raises(DataValidationError, match="duplicate texts"):
        validate_splits({"train": duplicated, "test": test}, SOURCES, labels, ValidationParams())
