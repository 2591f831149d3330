"""Pro's domain adaptation: corpus hygiene and the contrastive objective."""
import pytest
import torch

from yanjin.components.adapt import AdaptParams, adapt_encoder, clean_corpus, contrastive_loss, read_corpus
from yanjin.components.data import DataError
from yanjin.models.encoder import Encoder
from yanjin.models.family import ModelSpec, encoder_config
from yanjin.models.pretrained import load_encoder_weights, load_pretrained_encoder


def test_test_texts_never_enter_the_corpus():
    corpus, excluded = clean_corpus(["My card is lost", "my  card is LOST", "top up failed", ""], ["Top up failed"])
    assert corpus == ["My card is lost"] and excluded == 1  # deduplicated, test text and blanks dropped


def test_corpus_reads_csv_json_folders_and_text(data_dir, tmp_path):
    (tmp_path / "notes.txt").write_text("first line\n\nsecond line\n")
    texts = read_corpus([data_dir / "train.csv", data_dir.parent / "nlupp" / "banking", tmp_path / "notes.txt"], "text")
    assert len(texts) > 10003 + 2000 and texts[-2:] == ["first line", "second line"]
    with pytest.raises(DataError, match="corpus file not found"):
        read_corpus([tmp_path / "missing.csv"], "text")


def test_contrastive_loss_rewards_matching_views():
    torch.manual_seed(0)
    z = torch.randn(8, 16)
    matched = contrastive_loss(z, z + 0.01 * torch.randn(8, 16), 0.05)
    shuffled = contrastive_loss(z, z[torch.randperm(8)], 0.05)
    assert matched < 0.01 < shuffled


def test_adaptation_moves_the_encoder_and_saves_loadable_weights(banking, tmp_path):
    train, test, _ = banking
    spec = ModelSpec(variant="pro", n_layers=1)
    result = adapt_encoder(train["text"].tolist(), test["text"].tolist(), spec,
                           AdaptParams(batch_size=8, max_texts=48, max_length=32), tmp_path / "enc.safetensors",
                           progress=False)
    assert result.n_texts == 48
    adapted = load_encoder_weights(Encoder(encoder_config(spec)), tmp_path / "enc.safetensors")
    base = load_pretrained_encoder(Encoder(encoder_config(spec)))
    assert not torch.equal(adapted.blocks[0].attn.query.weight, base.blocks[0].attn.query.weight)


def test_pro_without_an_adapted_encoder_is_refused():
    from yanjin.models.family import pretrained_classifier

    with pytest.raises(ValueError, match="needs the adapted encoder"):
        pretrained_classifier(ModelSpec(variant="pro"), 3)


def test_token_deletion_keeps_special_tokens_and_repads():
    import numpy as np

    from yanjin.components.adapt import delete_tokens

    ids = np.array([[101, 5, 6, 7, 8, 9, 102, 0], [101, 5, 102, 0, 0, 0, 0, 0]])
    mask = (ids > 0).astype(np.int64)
    out, out_mask = delete_tokens(ids, mask, 0.5, np.random.default_rng(0))
    for row, m in zip(out, out_mask):
        tokens = row[: m.sum()]
        assert tokens[0] == 101 and tokens[-1] == 102 and (row[m.sum():] == 0).all()
    assert out_mask[0].sum() < 7  # something was deleted from the long row
    assert list(out[1][:3]) == [101, 5, 102]  # a single inner token is never deleted
