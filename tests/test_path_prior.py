"""The Bayesian path's prior shared by blocks of the representation (``ModelConfig.path_prior="part"``)."""

import math

import pytest
import torch

from vrm_pyro import ModelConfig, TrainConfig, build_reward_model, fit
from vrm_pyro.data import PairEmbeddings
from vrm_pyro.errors import ConfigError
from vrm_pyro.evaluate import evaluate_pairs
from vrm_pyro.representations import feature_groups, representation_dim

E = 32
REP = "response_tokens+response+interaction+statistics+order"
COSINE = 4 * E  # the column of cos(x̂, ŷ) in REP


def test_feature_groups_split_the_interaction_part_and_sum_to_the_width():
    assert feature_groups(REP, 384) == (384, 384, 384, 384, 1, 7, 8)
    assert sum(feature_groups(REP, 384)) == representation_dim(REP, 384) == 1552
    assert feature_groups("joint", 384) == (384,)


@pytest.mark.parametrize("model", ["vrm", "bt"])
def test_part_prior_gives_each_block_an_equal_share_of_the_same_total_variance(model):
    cfg = ModelConfig(model=model, bt_head="bayesian_linear", hidden_dim=8, path_prior_scale=2.0)
    F = representation_dim(REP, E)
    per_dim = build_reward_model(cfg, emb_dim=E, response_dim=F, representation=REP)
    per_part = build_reward_model(cfg.replace(path_prior="part"), emb_dim=E, response_dim=F, representation=REP)
    paths = [rm.model.path if model == "vrm" else rm.model.head for rm in (per_dim, per_part)]
    std_dim, std_part = (p.prior(p.site).base_dist.scale[:, 0] if model == "vrm" else p.prior(p.site).base_dist.scale
                         for p in paths)
    # the prior variance of the score of a unit-variance feature vector: 2^2 either way
    assert float(std_dim.square().sum()) == pytest.approx(4.0) == pytest.approx(float(std_part.square().sum()))
    assert torch.allclose(std_dim, torch.full((F,), 2.0 / math.sqrt(F)))
    groups = feature_groups(REP, E)
    assert float(std_part[COSINE]) == pytest.approx(2.0 / math.sqrt(len(groups)))       # a block of one
    assert float(std_part[0]) == pytest.approx(2.0 / math.sqrt(len(groups) * E))        # a block of E
    assert float(std_part[-1]) == pytest.approx(2.0 / math.sqrt(len(groups) * 8))       # the order statistics


def test_part_prior_is_checked_against_the_features_and_the_transform():
    with pytest.raises(ConfigError, match="response_dim"):
        build_reward_model(ModelConfig(path_prior="part"), emb_dim=E, response_dim=E + 1, representation=REP)
    with pytest.raises(ConfigError, match="representation="):  # the blocks must be named, not guessed
        build_reward_model(ModelConfig(path_prior="part"), emb_dim=E)
    build_reward_model(ModelConfig(model="bt", path_prior="part"), emb_dim=E)  # a linear BT head has no prior
    with pytest.raises(ConfigError, match="whiten"):
        ModelConfig(path_prior="part", feature_transform="whiten")
    with pytest.raises(ConfigError, match="path_prior"):
        ModelConfig(path_prior="block")


def _one_cue_pairs(n: int, seed: int) -> PairEmbeddings:
    """Pairs whose label depends on the cosine column alone (3 logits per unit); every other column is noise."""
    g = torch.Generator().manual_seed(seed)
    F = representation_dim(REP, E)
    prompt = torch.randn(n, E, generator=g)
    a, b = torch.randn(n, F, generator=g), torch.randn(n, F, generator=g)
    p = torch.sigmoid(3.0 * (a[:, COSINE] - b[:, COSINE]))
    return PairEmbeddings(prompt, a, b, torch.bernoulli(p, generator=g))


def test_part_prior_finds_a_one_column_cue_among_wide_noise_blocks_with_few_pairs():
    """With 200 pairs and 320 columns, a prior that treats every column alike shrinks the one that matters as hard
    as the noise; sharing the prior by blocks lets the cue through: higher held-out accuracy (measured 0.75 vs 0.70), a larger weight."""
    train, val, test = _one_cue_pairs(200, 0), _one_cue_pairs(100, 1), _one_cue_pairs(1000, 2)
    cfg = TrainConfig(epochs=40, lr=1e-2, patience=8, progress=False)
    out = {}
    for prior in ("dimension", "part"):
        rm = build_reward_model(ModelConfig(path_prior=prior, num_objectives=2, feature_dim=2, hidden_dim=16),
                                emb_dim=E, response_dim=train.response_dim, representation=REP, seed=0)
        fit(rm, train, val, cfg)
        theta = rm.guide.posterior("theta").base_dist.loc.detach().abs().mean(-1)
        out[prior] = (evaluate_pairs(rm, test)["accuracy"], float(theta[COSINE] / theta.mean()))
    (acc_dim, ratio_dim), (acc_part, ratio_part) = out["dimension"], out["part"]
    assert acc_part > acc_dim + 0.03, out
    assert ratio_part > 1.3 * ratio_dim, out  # the cue's weight against the mean weight


def test_a_loaded_checkpoint_keeps_the_part_prior(tmp_path):
    from vrm_pyro import EncoderConfig
    from vrm_pyro.checkpoint import load_checkpoint, save_checkpoint

    F = representation_dim(REP, E)
    rm = build_reward_model(ModelConfig(path_prior="part", hidden_dim=8), emb_dim=E, response_dim=F, representation=REP)
    per_dim = build_reward_model(ModelConfig(hidden_dim=8), emb_dim=E, response_dim=F, representation=REP)
    assert not torch.allclose(rm.model.path.prior_std, per_dim.model.path.prior_std)
    # with the encoder config that made the features, and without one (save_pretrained records the default,
    # `joint`, which does not fit): the prior is stored with the weights either way
    for name, encoder in (("with", EncoderConfig(name="tiny", representation=REP)), ("without", None)):
        path = save_checkpoint(tmp_path / name, rm, encoder=encoder)
        loaded = load_checkpoint(path).reward_model
        assert loaded.config.path_prior == "part"
        assert torch.equal(loaded.model.path.prior_std, rm.model.path.prior_std), name


def test_the_bayesian_bt_head_takes_its_own_prior_scale():
    """``bt_prior_scale``: the baseline ``vrm train`` builds (``model_cfg.replace(model="bt")``) keeps its own scale."""
    F = representation_dim(REP, E)
    cfg = ModelConfig(bt_head="bayesian_linear", path_prior="part", path_prior_scale=4.0, bt_prior_scale=1.0)
    vrm = build_reward_model(cfg, emb_dim=E, response_dim=F, representation=REP)
    bt = build_reward_model(cfg.replace(model="bt"), emb_dim=E, response_dim=F, representation=REP)
    assert float(vrm.model.path.prior_std.square().sum()) == pytest.approx(16.0)
    assert float(bt.model.head.prior_std.square().sum()) == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="prior scales"):
        ModelConfig(bt_prior_scale=0.0)
