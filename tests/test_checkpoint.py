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
                                 ModelConfig(hidden_dim=16, nuisance="length,bold", erase_nuisance=True,
                                             feature_transform="whiten", nuisance_by_prompt=True),
                                 ModelConfig(model="bt", bt_head="mlp", bt_hidden_dim=8),
                                 ModelConfig(model="bt", bt_head="bayesian_linear", nuisance="length")])
def test_save_load_gives_identical_scores(tmp_path, cfg):
    torch.manual_seed(0)
    C = len(cfg.covariates)
    data = PairEmbeddings(torch.randn(32, E), torch.randn(32, E + 3), torch.randn(32, E + 3), torch.rand(32),
                          torch.rand(32, C) * 5, torch.rand(32, C) * 5)
    rm = build_reward_model(cfg, emb_dim=E, response_dim=E + 3)
    fit(rm, data, None, TrainConfig(epochs=2, progress=False))
    path = save_checkpoint(tmp_path / "ckpt", rm, encoder=EncoderConfig(name="tiny"), train=TrainConfig(epochs=2),
                           metadata={"note": "x", "test_metrics": {"auroc": float("nan")}})
    json.loads((path / "config.json").read_text(), parse_constant=pytest.fail)  # strict JSON: NaN written as null
    loaded = load_checkpoint(path)
    assert loaded.encoder.name == "tiny" and loaded.train.epochs == 2
    assert loaded.metadata == {"note": "x", "test_metrics": {"auroc": None}}
    before, after = rm.reward(data.prompt, data.response_a), loaded.reward_model.reward(data.prompt, data.response_a)
    assert torch.equal(before.reward, after.reward)
    for name in ("reward_std", "local_std", "weights"):
        if getattr(before, name) is not None:
            assert torch.equal(getattr(before, name), getattr(after, name))
    b = data.batch(slice(None))
    assert torch.equal(rm.pair_probability(*b[:3], *b[4:6]), loaded.reward_model.pair_probability(*b[:3], *b[4:6]))
    assert rm.nuisance_posterior() == loaded.reward_model.nuisance_posterior()
    assert not list(tmp_path.glob(".ckpt*")), "temporary directories left behind"
    # saving again over an existing checkpoint replaces it atomically; the model remembers its provenance
    # (encoder, training config) unless told otherwise
    save_checkpoint(path, rm, encoder=EncoderConfig(name="other"))
    again = load_checkpoint(path)
    assert again.encoder.name == "other" and again.train.epochs == 2
    save_checkpoint(path, loaded.reward_model)
    assert load_checkpoint(path).encoder.name == "tiny"


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


def test_a_checkpoint_of_version_0_1_loads_and_scores_the_same(tmp_path):
    """Schema 1 (deterministic_path, model.direct, no fitted transform) is migrated on load."""
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    data = PairEmbeddings(torch.randn(32, E), torch.randn(32, E), torch.randn(32, E), torch.rand(32))
    rm = build_reward_model(ModelConfig(hidden_dim=16, path="point", feature_transform="none"), emb_dim=E)
    fit(rm, data, None, TrainConfig(epochs=1, progress=False))
    path = save_checkpoint(tmp_path / "old", rm)
    cfg = json.loads((path / "config.json").read_text())
    model = {k: v for k, v in cfg["model"].items() if k not in ("path", "bt_head", "nuisance", "nuisance_term",
                                                                 "nuisance_by_prompt", "nuisance_prior_scale",
                                                                 "erase_nuisance", "decorrelation",
                                                                 "feature_transform", "path_prior_scale")}
    model.update(deterministic_path=True, bt_hidden_dim=0)
    encoder = {k: v for k, v in cfg["encoder"].items() if k not in ("representation", "encoder_batch_size")}
    encoder["batch_size"] = 64
    cfg.update(schema_version=1, model=model, encoder=encoder)
    cfg.pop("response_dim")
    (path / "config.json").write_text(json.dumps(cfg))
    state = {k.replace("model.path.net.", "model.direct."): v for k, v in load_file(str(path / "model.safetensors")).items()
             if not k.startswith("transform.")}
    save_file(state, str(path / "model.safetensors"))
    loaded = load_checkpoint(path)
    assert loaded.reward_model.config.path == "point" and loaded.encoder.encoder_batch_size == 64
    assert torch.equal(loaded.reward_model.reward(data.prompt, data.response_a).reward,
                       rm.reward(data.prompt, data.response_a).reward)


def test_json_the_library_writes_is_strict_json():
    """NaN (a correlation of a constant column, a metric of an empty split) is written as null, never as the
    token NaN that only Python reads back."""
    import numpy as np

    from vrm_pyro.jsontext import json_text

    text = json_text({"auroc": float("nan"), "rows": [np.float32("inf"), np.float64(0.25), torch.tensor(-1.5)],
                      "n": np.int64(3), "name": "x", "flag": True, "nested": {"m": (float("-inf"), 1)}})
    assert json.loads(text, parse_constant=pytest.fail) == {"auroc": None, "rows": [None, 0.25, -1.5], "n": 3,
                                                             "name": "x", "flag": True, "nested": {"m": [None, 1]}}
