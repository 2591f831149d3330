"""`yanjin data fetch` keeps only files whose sha256 matches the published one."""
import shutil

import pytest

from yanjin.components.fetch import FetchError, fetch_dataset


def test_fetch_from_a_mirror_verifies_every_file(data_dir, tmp_path):
    out = fetch_dataset("banking77", tmp_path / "b77", base_url=data_dir.as_uri())
    assert sorted(p.name for p in out.iterdir()) == ["categories.json", "test.csv", "train.csv"]


def test_tampered_file_is_refused_and_not_saved(data_dir, tmp_path):
    mirror = tmp_path / "mirror"
    shutil.copytree(data_dir, mirror)
    (mirror / "test.csv").write_text("text,category\nhello,card_arrival\n")
    with pytest.raises(FetchError, match="test.csv: sha256 .* does not match"):
        fetch_dataset("banking77", tmp_path / "out", base_url=mirror.as_uri())
    assert not (tmp_path / "out" / "test.csv").exists()


def test_unknown_dataset_is_named():
    with pytest.raises(FetchError, match="unknown data set 'nope'"):
        fetch_dataset("nope", "/tmp/never")
