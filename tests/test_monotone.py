"""Sign-constrained features (``ModelConfig.monotone``): the Bayesian path weighs them with ``|theta|``."""

import pytest
import torch
from pyro import distributions as dist
from vrm_pyro.models.paths import BayesianLinearPath

from vrm_pyro import EncoderConfig, ModelConfig, TrainConfig, build_reward_model, fit
from vrm_pyro.data import PairEmbeddings
from vrm_pyro.errors import ConfigError
from vrm_pyro.representations import feature_orientation, representation_dim

E = 16
REP = "response+interaction+likelihood_contrast"
COSINE, PMI, END = 3 * E, 3 * E + 1, 3 * E + 2  # columns of h in REP


def test_orientation_marks_the_cosine_and_the_lm_columns_named():
    o = feature_orientation(REP, E, ["cosine", "likelihood_contrast"])
    assert len(o) == representation_dim(REP, E)
    assert [i for i, v in enumerate(o) if v] == [COSINE, PMI, END]
    assert [i for i, v in enumerate(feature_orientation(REP, E, ["likelihood_contrast"])) if v] == [PMI, END]
    assert [i for i, v in enumerate(feature_orientation(REP, E, ["pmi"])) if v] == [PMI]  # log p(end) free
    with pytest.raises(ConfigError, match="name one"):
        feature_orientation(REP, E, ["pmi", "likelihood_contrast"])
    # the raw LM statistics: the fluency "alone" is free (the PMI is given minus alone)
    assert feature_orientation("likelihood", E, ["likelihood"]) == (1, 0, 1, 1)
    # fluency given the prompt and the PMI, log p(end) free; log-normal (code 2) where asked
    assert feature_orientation("response+likelihood_fluency", E, ["fluency"], ["log_normal"]) == (0,) * E + (2, 2, 0)
    assert feature_orientation("likelihood_contrast+likelihood_order", E, ["pmi", "order_gain"],
                               ["half_normal", "log_normal"]) == (1, 0, 2, 2)
    with pytest.raises(ConfigError, match="no known direction"):
        feature_orientation(REP, E, ["response"])
    with pytest.raises(ConfigError, match=r"\+likelihood"):
        feature_orientation("response+interaction", E, ["likelihood"])
    with pytest.raises(ConfigError, match="bayesian"):
        ModelConfig(model="bt", bt_head="linear", monotone="cosine")
    cfg = ModelConfig(monotone="cosine,pmi", monotone_prior="half_normal,log_normal")
    assert cfg.monotone_priors == ["half_normal", "log_normal"]
    assert ModelConfig(monotone="cosine,pmi", monotone_prior="log_normal").monotone_priors == ["log_normal"] * 2
    with pytest.raises(ConfigError, match="one per --monotone name"):
        ModelConfig(monotone="cosine,pmi", monotone_prior="half_normal,log_normal,log_normal")
    with pytest.raises(ConfigError, match="monotone_prior"):
        ModelConfig(monotone="cosine", monotone_prior="gamma")


@pytest.mark.parametrize("priors", [["half_normal"] * 2, ["log_normal"] * 2, ["half_normal", "log_normal"]])
def test_weight_moments_are_those_of_the_folded_or_log_normal(priors):
    """The analytic mean and variance of the scores (what ``reward`` reports) match draws of the weights, one prior
    for every monotone column or one per feature (the cosine and the LM part)."""
    o = feature_orientation(REP, E, ["cosine", "likelihood_contrast"], priors)
    assert (o[COSINE], o[PMI], o[END]) == (1 + (priors[0] == "log_normal"),) + (1 + (priors[1] == "log_normal"),) * 2
    path = BayesianLinearPath(len(o), 3, orientation=o, prior_scale=4.0, groups=(E, E, E, 1, 2))
    g = torch.Generator().manual_seed(0)
    loc, scale = torch.randn(len(o), 3, generator=g), torch.rand(len(o), 3, generator=g) * 0.5 + 0.1
    posterior = dist.Normal(loc, scale).to_event(2)
    torch.manual_seed(0)
    theta = posterior.sample((100_000,))
    draws = path.weights(theta)
    assert bool((draws[:, [COSINE, PMI, END]] >= 0).all()) and bool((theta[:, [COSINE, PMI, END]] < 0).any())
    if priors[1] == "log_normal":  # median: the row's prior std
        assert torch.allclose(path.weights(torch.zeros(len(o), 3))[PMI], path.prior_std[PMI].expand(3))
    assert torch.equal(draws[:, :COSINE], theta[:, :COSINE])  # free rows untouched
    mean, var = path.weight_moments(posterior)
    assert torch.allclose(mean, draws.mean(0), rtol=0.02, atol=0.01)
    assert torch.allclose(var, draws.var(0), rtol=0.05, atol=2e-3)
    assert torch.allclose(mean[:COSINE], loc[:COSINE]) and torch.allclose(var[:COSINE], scale[:COSINE].square())
    h = torch.randn(4, len(o), generator=g)
    m, v = path.moments(h, posterior)
    assert torch.allclose(m, h @ mean) and torch.allclose(v, h.square() @ var)


def _pairs(n: int, seed: int) -> PairEmbeddings:
    """Labels from one free column (+) and the PMI column with the *wrong* sign (-): what a judge's quirk or a
    small sample can teach; a monotone PMI must not learn it."""
    g = torch.Generator().manual_seed(seed)
    F = representation_dim(REP, E)
    prompt = torch.randn(n, E, generator=g)
    a, b = torch.randn(n, F, generator=g), torch.randn(n, F, generator=g)
    logit = 2.0 * (a[:, 0] - b[:, 0]) - 1.5 * (a[:, PMI] - b[:, PMI])
    return PairEmbeddings(prompt, a, b, torch.bernoulli(torch.sigmoid(logit), generator=g))


@pytest.mark.parametrize("model", ["vrm", "bt"])
def test_a_monotone_column_keeps_its_sign_against_the_data_and_through_a_checkpoint(model, tmp_path):
    from vrm_pyro.checkpoint import load_checkpoint, save_checkpoint

    train, val = _pairs(400, 0), _pairs(100, 1)
    cfg = ModelConfig(model=model, bt_head="bayesian_linear", path_prior="part", num_objectives=2, feature_dim=2,
                      hidden_dim=16)
    weights = {}
    for monotone in ("", "likelihood_contrast"):
        rm = build_reward_model(cfg.replace(monotone=monotone), emb_dim=E, response_dim=train.response_dim,
                                representation=REP, seed=0)
        fit(rm, train, val, TrainConfig(epochs=20, lr=2e-2, patience=20, progress=False))
        path = rm.model.path if model == "vrm" else rm.model.head
        mean, _ = path.weight_moments(rm.guide.posterior(path.site))
        weights[monotone] = mean.detach().reshape(mean.shape[0], -1).mean(-1)
    free, mono = weights[""], weights["likelihood_contrast"]
    assert float(free[PMI]) < -0.1 < 0 <= float(mono[PMI]) < 0.1, (float(free[PMI]), float(mono[PMI]))
    assert float(mono[0]) > 0.1  # the free cue is still learned
    # the reward can only rise with the PMI: the same responses, PMI up by two standard deviations
    h = val.response_a[:50]
    up = h.clone()
    up[:, PMI] += 2 * float(train.response_a[:, PMI].std())
    before, after = rm.reward(val.prompt[:50], h).reward, rm.reward(val.prompt[:50], up).reward
    assert bool((after >= before - 1e-5).all())
    # the signs come with the weights, with the encoder config that made the features and without one
    for name, encoder in (("with", EncoderConfig(name="tiny", representation=REP, likelihood_model="tiny-lm")), ("without", None)):
        loaded = load_checkpoint(save_checkpoint(tmp_path / name, rm, encoder=encoder)).reward_model
        assert torch.equal(loaded.reward(val.prompt[:50], up).reward, after), name


def test_checkpoints_keep_per_feature_priors_and_old_ones_load(tmp_path):
    """One prior per name through a checkpoint saved without the encoder config (the model is rebuilt from the
    weights); a checkpoint from before the signs were stored (no ``monotone`` buffers) loads and scores alike."""
    from safetensors.torch import load_file, save_file

    from vrm_pyro.checkpoint import WEIGHTS_NAME, load_checkpoint, save_checkpoint

    cfg = ModelConfig(path_prior="part", hidden_dim=8, monotone="cosine,pmi", monotone_prior="half_normal,log_normal")
    rm = build_reward_model(cfg, emb_dim=E, response_dim=representation_dim(REP, E), representation=REP, seed=0)
    assert (int(rm.model.path.monotone[COSINE]), int(rm.model.path.monotone[PMI])) == (1, 2)
    train, val = _pairs(100, 2), _pairs(20, 3)
    fit(rm, train, val, TrainConfig(epochs=1, progress=False))
    loaded = load_checkpoint(save_checkpoint(tmp_path / "without", rm, encoder=None)).reward_model
    assert torch.equal(loaded.model.path.monotone, rm.model.path.monotone)
    torch.testing.assert_close(loaded.reward(val.prompt, val.response_a).reward, rm.reward(val.prompt, val.response_a).reward)
    plain = build_reward_model(ModelConfig(path_prior="part", hidden_dim=8), emb_dim=E,
                               response_dim=representation_dim(REP, E), representation=REP, seed=0)
    fit(plain, train, val, TrainConfig(epochs=1, progress=False))
    path = save_checkpoint(tmp_path / "old", plain, encoder=EncoderConfig(name="tiny", representation=REP,
                                                                        likelihood_model="tiny-lm"))
    state = {k: v for k, v in load_file(str(path / WEIGHTS_NAME)).items() if not k.endswith(".monotone")}
    assert len(state) < len(plain.state_dict())
    save_file(state, str(path / WEIGHTS_NAME))
    old = load_checkpoint(path).reward_model
    torch.testing.assert_close(old.reward(val.prompt, val.response_a).reward, plain.reward(val.prompt, val.response_a).reward)


def test_monotone_refuses_whitened_features_and_the_run_checks_the_baseline_before_encoding(monkeypatch):
    from vrm_pyro import experiment
    from vrm_pyro.config import DataConfig

    with pytest.raises(ConfigError, match="whiten"):
        ModelConfig(monotone="cosine", feature_transform="whiten", path_prior="dimension")
    for stage in ("load_splits", "embed_loaded", "embed_splits"):
        monkeypatch.setattr(experiment, stage, lambda *a, **k: pytest.fail("data were read before the check"))
    with pytest.raises(ConfigError, match="bayesian"):  # VRM's config is fine; the baseline's linear head is not
        experiment.train_and_evaluate(DataConfig(limit=10), EncoderConfig(representation="response+interaction"),
                                      ModelConfig(monotone="cosine", bt_head="linear"), TrainConfig(progress=False),
                                      output=None, compare_baseline=True, progress=False)
