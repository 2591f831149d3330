"""Our encoder reproduces the reference BERT implementation on the pretrained weights."""
import numpy as np
import pytest
import torch

from yanjin.models.encoder import Encoder, EncoderConfig, mean_pool
from yanjin.models.pretrained import base_model_dir, load_pretrained_encoder
from yanjin.models.tokenizer import TextTokenizer

TEXTS = [
    "I am still waiting on my card?",
    "What can I do if my card still hasn't arrived after 2 weeks?",
    "top up failed",
    "Why was I charged an extra fee when I withdrew cash abroad from an ATM in Spain last week?",
]


@pytest.fixture(scope="module")
def batch():
    tok = TextTokenizer(base_model_dir() / "tokenizer.json", max_length=128)
    ids, mask = tok(TEXTS)
    return torch.from_numpy(ids), torch.from_numpy(mask)


def test_sentence_embeddings_match_transformers_to_1e4(batch):
    transformers = pytest.importorskip("transformers")
    ids, mask = batch
    ref_model = transformers.BertModel.from_pretrained(str(base_model_dir()), local_files_only=True).eval()
    ours = load_pretrained_encoder(Encoder(EncoderConfig())).eval()
    with torch.no_grad():
        ref = mean_pool(ref_model(input_ids=ids, attention_mask=mask).last_hidden_state, mask)
        got = mean_pool(ours(ids, mask), mask)
    # padding in the batch must not change any sentence's embedding
    assert ids.shape[1] > int(mask.sum(1).min())
    np.testing.assert_allclose(got.numpy(), ref.numpy(), atol=1e-4, rtol=0)


def test_tokenizer_pads_to_longest_and_truncates(batch):
    ids, mask = batch
    assert ids.shape == mask.shape and ids.shape[1] == int(mask.sum(1).max())
    tok = TextTokenizer(base_model_dir() / "tokenizer.json", max_length=8)
    ids, _ = tok(["word " * 50])
    assert ids.shape == (1, 8)
