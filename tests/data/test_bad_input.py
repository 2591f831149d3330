"""Bad files fail with an error that names the file and the problem."""
import pandas as pd
import pytest

from yanjin.components.data import DataError, read_label_set, read_table
from yanjin.components.validate import DataValidationError, ValidationParams, validate_splits
from tests.conftest import write_csv


def test_missing_columns_are_named(tmp_path):
    path = write_csv(tmp_path / "x.csv", pd.DataFrame({"utterance": ["hi"], "intent": ["a"]}))
    with pytest.raises(DataError, match=r"x\.csv: missing column\(s\) \['text', 'category'\]; found \['utterance', 'intent'\]"):
        read_table(path, "text", "category")


def test_empty_file(tmp_path):
    (tmp_path / "empty.csv").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.csv: file is empty"):
        read_table(tmp_path / "empty.csv", "text", "category")


def test_header_without_rows(tmp_path):
    (tmp_path / "h.csv").write_text("text,category\n")
    with pytest.raises(DataError, match=r"h\.csv: has a header but no rows"):
        read_table(tmp_path / "h.csv", "text", "category")


def test_non_utf8_bytes_are_located(tmp_path):
    (tmp_path / "latin1.csv").write_bytes("text,category\ncafé card,card_arrival\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.csv: not valid UTF-8 \(byte 0xe9 at offset 17, line 2\)"):
        read_table(tmp_path / "latin1.csv", "text", "category")


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope.csv: file not found"):
        read_table(tmp_path / "nope.csv", "text", "category")


def test_parquet_is_read_like_csv(tmp_path):
    pd.DataFrame({"t": ["hello"], "y": ["a"]}).to_parquet(tmp_path / "d.parquet")
    df = read_table(tmp_path / "d.parquet", "t", "y")
    assert df.to_dict("records") == [{"text": "hello", "label": "a"}]


def test_label_file_must_be_a_list_of_names(tmp_path):
    (tmp_path / "labels.json").write_text('{"a": 1}')
    with pytest.raises(DataError, match="labels.json: must be a JSON list"):
        read_label_set(tmp_path / "labels.json", pd.DataFrame())


def test_unknown_labels_and_empty_text_and_starved_class_each_reported(banking):
    train, test, labels = banking
    bad = train.copy()
    bad.loc[0, "label"] = "crypto_refund"
    bad.loc[1, "text"] = "   "
    arrival = bad.index[bad["label"] == "card_arrival"]
    bad = bad.drop(arrival[5:])  # leave card_arrival only 5 examples
    with pytest.raises(DataValidationError) as e:
        validate_splits({"train": bad, "test": test}, {"train": "bad.csv", "test": "test.csv"}, labels,
                        ValidationParams(min_per_class=10))
    message = str(e.value)
    assert "[train: bad.csv] expect_column_values_to_be_in_set(label)" in message and "crypto_refund" in message
    assert "no empty or whitespace-only text" in message
    assert "at least 10 training examples per class" in message and "card_arrival" in message
    assert len(e.value.report.failures) == 3
