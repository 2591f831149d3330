"""Behaviour of the encoder and tokenizer that every family member relies on."""
import numpy as np
import torch

from yanjin.models.encoder import Encoder, EncoderConfig, mean_pool
from yanjin.models.family import ModelSpec, base_tokenizer_file, build_classifier
from yanjin.models.pretrained import IntegrityError, load_pretrained_encoder, verify_file
from yanjin.models.tokenizer import TextTokenizer

import pytest


@pytest.fixture(scope="module")
def encoder():
    return load_pretrained_encoder(Encoder(EncoderConfig(n_layers=2))).eval()


def test_casing_does_not_change_tokens():
    # invariance: the uncased tokenizer maps "CARD NOT ARRIVED" and "card not arrived" alike
    tok = TextTokenizer(base_tokenizer_file(), 32)
    a, _ = tok(["My CARD has NOT arrived"])
    b, _ = tok(["my card has not arrived"])
    np.testing.assert_array_equal(a, b)


def test_padding_does_not_change_a_sentence_embedding(encoder):
    # invariance: batching with longer texts must not move a short text's embedding
    tok = TextTokenizer(base_tokenizer_file(), 64)
    alone_ids, alone_mask = tok(["top up failed"])
    ids, mask = tok(["top up failed", "why was my transfer to another country declined again today"])
    with torch.no_grad():
        alone = mean_pool(encoder(torch.from_numpy(alone_ids), torch.from_numpy(alone_mask)), torch.from_numpy(alone_mask))
        batched = mean_pool(encoder(torch.from_numpy(ids), torch.from_numpy(mask)), torch.from_numpy(mask))
    torch.testing.assert_close(batched[:1], alone, atol=1e-5, rtol=0)


def test_related_queries_are_closer_than_unrelated(encoder):
    # directional: the pretrained geometry groups paraphrases (what fine-tuning builds on)
    tok = TextTokenizer(base_tokenizer_file(), 64)
    ids, mask = tok(["my card has not arrived", "when will my new card be delivered", "what is the exchange rate for euros"])
    with torch.no_grad():
        e = torch.nn.functional.normalize(mean_pool(encoder(torch.from_numpy(ids), torch.from_numpy(mask)), torch.from_numpy(mask)), dim=1)
    assert float(e[0] @ e[1]) > float(e[0] @ e[2])


def test_tampered_weights_are_refused(tmp_path):
    fake = tmp_path / "model.safetensors"
    fake.write_bytes(b"not the weights")
    with pytest.raises(IntegrityError, match="does not match the pinned"):
        verify_file(fake, "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db")


def test_unknown_variant_is_named():
    with pytest.raises(ValueError, match="unknown variant 'v9'"):
        build_classifier(ModelSpec(variant="v9"), 3)
