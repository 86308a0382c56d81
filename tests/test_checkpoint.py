"""Checkpoints: save -> load -> identical scores; bad checkpoints refused with clear messages."""

import json

import pytest
import torch

from vrm_pyro import (
    CheckpointError,
    EncoderConfig,
    ModelConfig,
    PairEmbeddings,
    TrainConfig,
    build_reward_model,
    fit,
)
from vrm_pyro.checkpoint import load_checkpoint, save_checkpoint

E = 12


@pytest.mark.parametrize("cfg", [ModelConfig(hidden_dim=16, weight_prior="prompt_dirichlet"),
                                 ModelConfig(hidden_dim=16, weight_guide="logistic_normal",
                                             feature_prior="response_gaussian"),
                                 ModelConfig(model="bt", bt_hidden_dim=8)])
def test_save_load_gives_identical_scores(tmp_path, cfg):
    torch.manual_seed(0)
    data = PairEmbeddings(torch.randn(32, E), torch.randn(32, E), torch.randn(32, E), torch.rand(32))
    rm = build_reward_model(cfg, emb_dim=E)
    fit(rm, data, None, TrainConfig(epochs=2, progress=False))
    path = save_checkpoint(tmp_path / "ckpt", rm, encoder=EncoderConfig(name="tiny"), train=TrainConfig(epochs=2),
                           metadata={"note": "x"})
    loaded = load_checkpoint(path)
    assert loaded.encoder.name == "tiny" and loaded.train.epochs == 2 and loaded.metadata == {"note": "x"}
    before, after = rm.reward(data.prompt, data.response_a), loaded.reward_model.reward(data.prompt, data.response_a)
    assert torch.equal(before.reward, after.reward)
    if rm.has_latents:
        assert torch.equal(before.reward_std, after.reward_std) and torch.equal(before.weights, after.weights)
    assert not list(tmp_path.glob(".ckpt*")), "temporary directories left behind"
    # saving again over an existing checkpoint replaces it atomically
    save_checkpoint(path, rm)
    assert load_checkpoint(path).encoder.name == EncoderConfig().name


def test_bad_checkpoints_are_refused(tmp_path):
    rm = build_reward_model(ModelConfig(hidden_dim=8), emb_dim=E)
    path = save_checkpoint(tmp_path / "c", rm)
    with pytest.raises(CheckpointError, match="not a checkpoint directory"):
        load_checkpoint(tmp_path / "missing")
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**cfg, "schema_version": 99}))
    with pytest.raises(CheckpointError, match="schema_version 99 is not supported"):
        load_checkpoint(path)
    (path / "config.json").write_text(json.dumps({**cfg, "emb_dim": E + 1}))
    with pytest.raises(CheckpointError, match="weights do not match config.json"):
        load_checkpoint(path)
    (path / "config.json").write_text(json.dumps({**cfg, "model": {**cfg["model"], "bogus": 1}}))
    with pytest.raises(CheckpointError, match="unknown ModelConfig field"):
        load_checkpoint(path)
    (path / "config.json").write_text(json.dumps(cfg))
    (path / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(CheckpointError, match="unreadable safetensors"):
        load_checkpoint(path)
    (path / "config.json").write_text("{oops")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(path)
