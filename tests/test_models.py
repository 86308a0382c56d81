"""Model and guide programs: sites, ELBO behaviour, swapping, numerics, scores."""

import itertools

import pyro
import pytest
import torch
from pyro import poutine
from vrm_pyro.guides import AmortisedFeatureGuide, VariationalGuide
from vrm_pyro.guides.base import dirichlet_draws, dirichlet_moments
from vrm_pyro.models.base import STREAMS

from vrm_pyro import (
    ConfigError,
    ModelConfig,
    ModelGuideMismatch,
    PairEmbeddings,
    TrainConfig,
    build_reward_model,
    fit,
)
from vrm_pyro.registry import FEATURE_PRIORS, WEIGHT_GUIDES, WEIGHT_PRIORS, check_sites
from vrm_pyro.synthetic import SyntheticProcess
from vrm_pyro.train import SiteScale

E = 16


def batch(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, E, generator=g), torch.randn(n, E, generator=g), torch.randn(n, E, generator=g),
            torch.rand(n, generator=g))


def fitted(cfg, response_dim=E, seed=0):
    """A model with random parameters whose transform is fitted on random features (no training)."""
    rm = build_reward_model(cfg, emb_dim=E, response_dim=response_dim, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    rm.transform.fit(torch.randn(64, response_dim, generator=g), torch.rand(64, rm.num_covariates, generator=g) * 8)
    with torch.no_grad():  # move the global posteriors off their initial values
        for p in rm.guide.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return rm


def test_model_and_guide_sample_the_same_sites():
    rm = build_reward_model(ModelConfig(hidden_dim=8), emb_dim=E)
    args = batch()
    g = poutine.trace(rm.guide).get_trace(*args)
    m = poutine.trace(poutine.replay(rm.model, trace=g)).get_trace(*args)
    latent = {n for n, s in m.nodes.items() if s["type"] == "sample" and not s["is_observed"] and n != "pairs"}
    assert latent == {"w", "z_a", "z_b", "theta"} and set(rm.model.latent_sites) == {"w", "z_a", "z_b"}
    assert m.nodes["label"]["is_observed"]
    assert m.nodes["w"]["fn"].event_shape == (8,) and m.nodes["z_a"]["fn"].event_shape == (16,)
    assert m.nodes["theta"]["fn"].event_shape == (E, 8)
    # the plate scales the minibatch to the dataset size; the global path weights are counted once
    g2 = poutine.trace(rm.guide).get_trace(*args, size=600)
    assert g2.nodes["w"]["scale"] == pytest.approx(100.0) and g2.nodes["theta"]["scale"] == 1.0


class GuideWithoutZb(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = VariationalGuide(WEIGHT_GUIDES["dirichlet"].from_config(ModelConfig(hidden_dim=8), E, E),
                                      AmortisedFeatureGuide(E, 16, 8))

    def forward(self, prompt, a, b, label=None, na=None, nb=None, *, size=None):
        with pyro.plate("pairs", prompt.shape[0]):
            pyro.sample("w", self.inner.weight_guide(prompt))
            pyro.sample("z_a", self.inner.feature_guide(prompt, a))
            pyro.sample("extra", pyro.distributions.Normal(torch.zeros(prompt.shape[0]), 1.0))


def test_mismatched_guide_fails_with_clear_message():
    rm = build_reward_model(ModelConfig(hidden_dim=8, path="point"), emb_dim=E)
    with pytest.raises(ModelGuideMismatch, match=r"does not sample the model's latent site\(s\) \['z_b'\].*"
                                                  r"samples site\(s\) \['extra'\]"):
        check_sites(rm.model, GuideWithoutZb(), E)


def test_unknown_names_fail_with_choices():
    with pytest.raises(ConfigError, match=r"unknown weight prior 'dirichlett'.*choose one of: dirichlet"):
        build_reward_model(ModelConfig(weight_prior="dirichlett"), emb_dim=E)
    with pytest.raises(ConfigError, match="unknown weight guide"):
        build_reward_model(ModelConfig(weight_guide="nope"), emb_dim=E)
    with pytest.raises(ConfigError, match="'vrm' or 'bt'"):
        ModelConfig(model="gp")


@pytest.mark.parametrize("weight_prior,feature_prior,weight_guide,elbo", [
    *[(wp, "standard_normal", "dirichlet", e) for wp, e in itertools.product(WEIGHT_PRIORS, ["trace", "mean_field"])],
    *[("dirichlet", fp, "dirichlet", "mean_field") for fp in FEATURE_PRIORS],
    *[("prompt_dirichlet", "prompt_gaussian", wg, "trace") for wg in WEIGHT_GUIDES],
])
def test_every_prior_guide_elbo_combination_trains(weight_prior, feature_prior, weight_guide, elbo):
    cfg = ModelConfig(hidden_dim=16, num_objectives=4, feature_dim=3, weight_prior=weight_prior,
                      feature_prior=feature_prior, weight_guide=weight_guide)
    rm = build_reward_model(cfg, emb_dim=E)
    p, a, b, lab = batch(8)
    data = PairEmbeddings(p, a, b, lab)
    before = {k: v.clone() for k, v in rm.state_dict().items()}
    result = fit(rm, data, None, TrainConfig(epochs=2, batch_size=4, elbo=elbo, num_particles=2, progress=False))
    assert result.steps == 4
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in result.history)
    changed = [k for k, v in rm.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("guide.") for k in changed) and any(k.startswith("model.") for k in changed)


def test_elbo_finite_and_decreasing_on_synthetic_data():
    data = SyntheticProcess(emb_dim=E, num_objectives=3, seed=0).sample(100, 4, seed=1)
    rm = build_reward_model(ModelConfig(hidden_dim=32, num_objectives=3, feature_dim=4), emb_dim=E)
    res = fit(rm, data.pairs, None, TrainConfig(epochs=12, batch_size=50, lr=3e-3, progress=False))
    curve = res.elbo_curve
    assert all(torch.isfinite(torch.tensor(curve)))
    assert sum(curve[-3:]) / 3 < 0.85 * sum(curve[:2]) / 2, curve


def test_bt_elbo_is_exactly_the_logistic_nll():
    rm = build_reward_model(ModelConfig(model="bt"), emb_dim=E)
    p, a, b, lab = batch(10)
    loss = rm.elbo("trace")(p, a, b, lab, size=10)
    logits = rm.model.score(a) - rm.model.score(b)
    nll = torch.nn.functional.binary_cross_entropy_with_logits(logits, lab, reduction="sum")
    assert loss.item() == pytest.approx(nll.item(), rel=1e-5)


def test_site_scale_weights_the_kl_of_a_site():
    rm = build_reward_model(ModelConfig(hidden_dim=8), emb_dim=E)
    args = batch()
    elbo = rm.elbo("mean_field")
    pyro.set_rng_seed(1)  # same draws in both evaluations
    sites = ("w", "z_a", "z_b", "theta")
    with SiteScale(dict.fromkeys(sites, 0.0)):
        no_kl = elbo(*args).item()
    pyro.set_rng_seed(1)
    with SiteScale(dict.fromkeys(sites, 1.0)):
        full = elbo(*args).item()
    # analytic KLs (mean-field ELBO): the difference is exactly the sum of the four KL terms
    g = poutine.trace(rm.guide).get_trace(*args)
    m = poutine.trace(poutine.replay(rm.model, trace=g)).get_trace(*args)
    kl = sum(torch.distributions.kl_divergence(g.nodes[s]["fn"], m.nodes[s]["fn"]).sum() for s in sites)
    assert full - no_kl == pytest.approx(kl.item(), rel=1e-4)  # loss = KL - E[log-lik]


def test_dirichlet_moments_match_monte_carlo():
    alpha = torch.tensor([[0.5, 2.0, 3.0], [5.0, 1.0, 0.2]])
    mean, second = dirichlet_moments(alpha)
    s = torch.distributions.Dirichlet(alpha).sample((200_000,))
    assert torch.allclose(mean, s.mean(0), atol=3e-3)
    assert torch.allclose(second, torch.einsum("sbi,sbj->bij", s, s) / s.shape[0], atol=3e-3)


@pytest.mark.parametrize("weight_guide", ["dirichlet", "logistic_normal"])
def test_reward_is_batch_invariant_and_its_moments_match_monte_carlo(weight_guide):
    rm = fitted(ModelConfig(hidden_dim=16, num_objectives=4, feature_dim=3, weight_guide=weight_guide,
                            weight_prior="logistic_normal"))
    p, a, _, _ = batch(9)
    full = rm.reward(p, a, num_samples=64)
    parts = [rm.reward(p[i:i + 2], a[i:i + 2], num_samples=64) for i in range(0, 9, 2)]
    # identical up to float rounding of batched matrix products (common random numbers for z)
    for name in ("reward", "reward_std", "local_std"):
        assert torch.allclose(getattr(full, name), torch.cat([getattr(x, name) for x in parts]), atol=1e-6, rtol=0)
    assert torch.allclose(full.weights.sum(-1), torch.ones(9), atol=1e-5)
    # brute-force Monte Carlo over the guide: theta, w and z drawn independently (against many z draws)
    full = rm.reward(p, a, num_samples=4096)
    n = 20000
    with torch.no_grad():
        h = rm.transform.features(a)
        theta = rm.guide.posterior("theta").sample((n,))
        w = rm.guide.weight_guide(p).sample((n,))
        z = rm.guide.feature_guide(p, h).sample((n,))
        r = (w * (rm.model.decoder(z) + torch.einsum("bf,sfk->sbk", h, theta))).sum(-1)
        # the epistemic part: the spread over theta of the reward averaged over the local latents
        r_given_theta = (w.mean(0) * (rm.model.decoder(z).mean(0) + torch.einsum("bf,sfk->sbk", h, theta))).sum(-1)
    assert torch.allclose(full.reward, r.mean(0), atol=0.03)
    total = (full.reward_std.square() + full.local_std.square()).sqrt()
    assert torch.allclose(total, r.std(0), rtol=0.15, atol=0.01)
    assert torch.allclose(full.reward_std, r_given_theta.std(0), rtol=0.1, atol=0.005)


def _brute_force_differences(rm, p, a, b, na, nb, n=20000):
    """Draws of the logit from independent samples of every latent of the guide."""
    with torch.no_grad():
        ha, hb = rm.transform.features(a), rm.transform.features(b)
        dphi = rm.transform.covariates(na) - rm.transform.covariates(nb)
        theta = rm.guide.posterior("theta").sample((n,))
        gamma = rm.guide.posterior("gamma").sample((n,))
        w = rm.guide.weight_guide(p).sample((n,))
        za, zb = rm.guide.feature_guide(p, ha).sample((n,)), rm.guide.feature_guide(p, hb).sample((n,))
        u = rm.model.decoder(za) - rm.model.decoder(zb) + torch.einsum("bf,sfk->sbk", ha - hb, theta)
        return (w * u).sum(-1) + (gamma[:, None, :] * dphi).sum(-1)


def test_difference_draws_are_independent_draws_of_the_guide():
    """Regression: z_a and z_b were drawn with the same noise, so r_a - r_b had no spread for a = b."""
    rm = fitted(ModelConfig(hidden_dim=16, num_objectives=4, feature_dim=3, nuisance="length,bold"), response_dim=12)
    g = torch.Generator().manual_seed(5)
    p, a, b = torch.randn(6, E, generator=g), torch.randn(6, 12, generator=g), torch.randn(6, 12, generator=g)
    na, nb = torch.rand(6, 2, generator=g) * 8, torch.rand(6, 2, generator=g) * 8
    d = rm.difference_samples(p, a, b, na, nb, num_samples=4000)
    ref = _brute_force_differences(rm, p, a, b, na, nb)
    se = ref.std(0) / 4000 ** 0.5
    assert ((d.mean(0) - ref.mean(0)).abs() < 4 * se + 1e-3).all(), (d.mean(0), ref.mean(0))
    assert torch.allclose(d.std(0), ref.std(0), rtol=0.06)
    # a response against itself: zero mean, and the spread of two independent feature draws (not 0)
    same = rm.difference_samples(p, a, a, na, na, num_samples=4000)
    ref_same = _brute_force_differences(rm, p, a, a, na, na)
    assert (same.std(0) > 0.05).all()
    assert torch.allclose(same.std(0), ref_same.std(0), rtol=0.06)
    assert (same.mean(0).abs() < 4 * ref_same.std(0) / 4000 ** 0.5 + 1e-3).all()


@pytest.mark.parametrize("weight_guide", ["dirichlet", "logistic_normal", "mean_field"])
def test_pair_probability_does_not_depend_on_the_batch(weight_guide):
    """Regression: the w noise was drawn over the whole (S, B, K) tensor, so a pair's probability changed with
    the batch it was scored in (by up to 0.017)."""
    rm = fitted(ModelConfig(hidden_dim=16, num_objectives=4, feature_dim=3, weight_guide=weight_guide,
                            nuisance="length"))
    p, a, b, _ = batch(10, seed=3)
    p[5:] = p[:5]  # pairs that share a prompt
    na, nb = torch.rand(10, 1) * 5, torch.rand(10, 1) * 5
    full = rm.pair_probability(p, a, b, na, nb, num_samples=32)
    for size in (1, 5):
        parts = torch.cat([rm.pair_probability(p[i:i + size], a[i:i + size], b[i:i + size], na[i:i + size],
                                               nb[i:i + size], num_samples=32) for i in range(0, 10, size)])
        assert torch.allclose(parts, full, atol=1e-6, rtol=0), (size, (parts - full).abs().max())
    reordered = rm.pair_probability(p.flip(0), a.flip(0), b.flip(0), na.flip(0), nb.flip(0), num_samples=32)
    assert torch.allclose(reordered.flip(0), full, atol=1e-6, rtol=0)


def test_scoring_never_reseeds_every_backend(monkeypatch):
    """Regression: each row's w draws and each fixed-noise block called ``torch.manual_seed``, which on a machine
    without CUDA records a stack trace per backend (~3 ms a row: most of a validation pass). Draws come from one
    reseeded CPU generator instead: the same numbers as ``Dirichlet(alpha).sample`` under that seed."""
    rm = fitted(ModelConfig(hidden_dim=16, num_objectives=4, feature_dim=3, weight_guide="dirichlet"))
    p, a, b, _ = batch(6, seed=4)
    alpha = torch.tensor([[0.5, 2.0, 3.0], [5.0, 1.0, 0.2]])
    keys = torch.tensor([11, 12])
    expected = []
    for i, key in enumerate(keys.tolist()):
        torch.manual_seed(hash((7, STREAMS["w"], key)) & 0x7FFF_FFFF_FFFF_FFFF)
        expected.append(torch.distributions.Dirichlet(alpha[i]).sample((50,)))
    before = rm.pair_probability(p, a, b, num_samples=16)

    def refuse(*args, **kwargs):
        raise AssertionError("torch.manual_seed called while scoring")

    monkeypatch.setattr(torch, "manual_seed", refuse)
    assert torch.equal(dirichlet_draws(alpha, 50, seed=7, keys=keys), torch.stack(expected, 1))
    assert torch.equal(rm.pair_probability(p, a, b, num_samples=16), before)
    assert torch.equal(rm.reward(p, a, num_samples=16).reward, rm.reward(p, a, num_samples=16).reward)


def test_rows_draw_independent_noise_so_no_pair_gets_a_common_offset():
    """Regression: every row used the same noise draws (common random numbers), so the Monte Carlo error of
    P(a > b) was one offset shared by all rows: with a wide posterior the estimate leaned the same way for
    every pair."""
    rm = fitted(ModelConfig(hidden_dim=16, num_objectives=4, feature_dim=3, nuisance="length"))
    p, a, b, _ = batch(400, seed=7)
    d = rm.difference_samples(p, a, b, torch.rand(400, 1) * 5, torch.rand(400, 1) * 5, num_samples=16)
    resid = d - d.mean(0)  # each row's draws about its own mean: (S, N)
    shared = resid.mean(1)  # the part of each draw that all rows share
    assert shared.std() < 3 * resid.std() / 400 ** 0.5, (shared.std(), resid.std())


@pytest.mark.parametrize("cfg", [ModelConfig(path="point", feature_transform="none", hidden_dim=32),
                                 ModelConfig(hidden_dim=32), ModelConfig(path="none", hidden_dim=32),
                                 ModelConfig(model="bt", bt_head="mlp", bt_hidden_dim=8)],
                         ids=["vrm-point-path", "vrm", "vrm-no-path", "bt-mlp"])
def test_no_model_can_learn_which_position_wins(cfg):
    """Regression: VRM's point path scored ``a - b`` through a linear layer with a bias, a constant "the first
    response wins" logit. Trained on HH-RLHF, where ``a`` is always the chosen answer, it reached 99% test
    accuracy. Here: random embeddings, every label 1; on new pairs neither position may be favoured."""
    g = torch.Generator().manual_seed(0)
    train = PairEmbeddings(torch.randn(600, E, generator=g), torch.randn(600, E, generator=g),
                           torch.randn(600, E, generator=g), torch.ones(600))
    rm = build_reward_model(cfg, emb_dim=E, seed=0)
    fit(rm, train, None, TrainConfig(epochs=25, progress=False))
    p, a, b, _ = batch(300, seed=11)
    ab, ba = rm.pair_probability(p, a, b), rm.pair_probability(p, b, a)
    assert abs(float(ab.mean()) - 0.5) < 0.02 and abs(float(ba.mean()) - 0.5) < 0.02, (ab.mean(), ba.mean())
    assert abs(float((ab + ba).mean()) - 1) < 0.02


def test_subset_counts_its_own_prompt_multiplicities():
    """Regression: PairEmbeddings.subset kept the whole dataset's prompt multiplicities."""
    p = torch.randn(3, E).repeat_interleave(torch.tensor([4, 2, 1]), dim=0)  # prompts with 4, 2 and 1 pairs
    data = PairEmbeddings(p, torch.randn(7, E), torch.randn(7, E), torch.ones(7))
    assert data.prompt_multiplicity.tolist() == [4, 4, 4, 4, 2, 2, 1]
    assert data.subset([0, 1, 4, 6]).prompt_multiplicity.tolist() == [2, 2, 1, 1]
    assert data.subset(slice(3, 6)).prompt_multiplicity.tolist() == [1, 2, 2]


@pytest.mark.parametrize("scale", [0.0, 1e7])
@pytest.mark.parametrize("weight_guide", ["dirichlet", "logistic_normal", "mean_field"])
def test_extreme_embeddings_give_finite_loss_and_gradients(scale, weight_guide):
    rm = build_reward_model(ModelConfig(hidden_dim=16, weight_guide=weight_guide, feature_transform="none",
                                        weight_prior="prompt_dirichlet", feature_prior="response_gaussian"), emb_dim=E)
    rm.transform.fit(torch.zeros(1, E), torch.zeros(1, 0))
    p, a, b, lab = batch(6)
    p, a, b = p * scale, a * scale, -b * scale
    loss = rm.elbo("trace")(p, a, b, lab)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(x.grad).all() for x in rm.parameters() if x.grad is not None)
    out = rm.reward(p, a)
    assert torch.isfinite(out.reward).all() and torch.isfinite(out.reward_std).all()


def test_soft_labels_are_a_cross_entropy_and_hard_labels_a_bernoulli():
    rm = build_reward_model(ModelConfig(model="bt"), emb_dim=E)
    p, a, b, _ = batch(4)
    logits = rm.model.score(a) - rm.model.score(b)
    for lab, kind in ((torch.tensor([0.3, 0.5, 0.9, 0.0]), "factor"), (torch.tensor([1.0, 0.0, 1.0, 1.0]), "Bernoulli")):
        loss = rm.elbo("trace")(p, a, b, lab, size=4)
        expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, lab, reduction="sum")
        assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
        site = poutine.trace(rm.model).get_trace(p, a, b, lab).nodes["label"]
        assert site["is_observed"] and (type(site["fn"]).__name__ == "Unit") == (kind == "factor")


def test_the_pairs_plate_subsamples_with_the_real_indices():
    """Pyro's subsampling idiom: the plate's subsample is the minibatch's indices in the training set, and
    every local site is scaled by size / batch."""
    rm = build_reward_model(ModelConfig(hidden_dim=8), emb_dim=E)
    p, a, b, label = batch(4)
    idx = torch.tensor([7, 2, 9, 4])
    tr = poutine.trace(rm.guide).get_trace(p, a, b, label, size=20, indices=idx)
    assert torch.equal(tr.nodes["pairs"]["value"], idx)
    assert float(tr.nodes["z_a"]["scale"]) == 5.0
    with pytest.raises(ValueError, match="3 indices for a batch of 4"):
        poutine.trace(rm.guide).get_trace(p, a, b, label, size=20, indices=idx[:3])
