"""The judge's nuisance term: recovery of a known length effect and an authentic reward free of it."""

import numpy as np
import pytest
import torch

from vrm_pyro import ModelConfig, TrainConfig, build_reward_model, fit
from vrm_pyro.synthetic import SyntheticProcess

E = 16
LENGTH_EFFECT = 1.5  # logits per standard deviation of the covariate


@pytest.fixture(scope="module")
def length_biased():
    # a judge whose content signal (label scale 1.5) a model can capture: then nothing attenuates the length
    # coefficient (a logistic regression that misses part of the logit shrinks the rest towards zero)
    proc = SyntheticProcess(emb_dim=E, num_objectives=3, label_scale=1.5, seed=0)
    kw = dict(length_effect=LENGTH_EFFECT, length_in_embedding=2.0)
    return proc.sample(250, 8, seed=1, **kw).pairs, proc.sample(60, 8, seed=2, **kw).pairs, \
        proc.sample(150, 4, seed=3, **kw).pairs


def _length_correlation(rm, data):
    r = torch.cat([rm.reward(data.prompt, data.response_a).reward, rm.reward(data.prompt, data.response_b).reward])
    phi = torch.cat([data.nuisance_a[:, 0], data.nuisance_b[:, 0]])
    return float(np.corrcoef(r.numpy(), phi.numpy())[0, 1])


@pytest.mark.parametrize("model", ["vrm", "bt"])
def test_nuisance_term_recovers_the_judges_length_effect_and_erasure_frees_the_reward_of_it(length_biased, model):
    train, val, test = length_biased
    cfg = TrainConfig(epochs=25, lr=1e-2, patience=6, progress=False)
    base = dict(model=model, num_objectives=3, feature_dim=4, hidden_dim=64)
    plain = build_reward_model(ModelConfig(**base), emb_dim=E, seed=0)
    fit(plain, train, val, cfg)
    handled = build_reward_model(ModelConfig(**base, nuisance="length", erase_nuisance=True), emb_dim=E, seed=0)
    fit(handled, train, val, cfg)
    (gamma,) = handled.nuisance_posterior()
    # the covariate is N(0, 1), so logits per unit and per sd agree with the true effect
    assert gamma["logits_per_unit"] == pytest.approx(LENGTH_EFFECT, abs=0.3), gamma
    assert gamma["logits_per_unit_std"] < 0.2
    assert _length_correlation(plain, test) > 0.3            # without handling, the reward learns length
    assert abs(_length_correlation(handled, test)) < 0.1      # with it, the authentic reward does not


def test_nuisance_lr_moves_gamma_in_its_own_parameter_group(length_biased):
    """``nuisance_lr``: gamma's variational parameters get their own AdamW group; at a low ``lr`` that would leave
    gamma near its prior mean in a short fit, a higher ``nuisance_lr`` recovers it and leaves the head's rate alone."""
    from vrm_pyro.train import Trainer

    train, val, _ = length_biased
    base = dict(model="bt", hidden_dim=64, nuisance="length")
    slow = TrainConfig(epochs=3, lr=1e-3, progress=False)
    trainer = Trainer(build_reward_model(ModelConfig(**base), emb_dim=E, seed=0), train, val,
                      slow.replace(nuisance_lr=0.05))
    lrs = [g["lr"] for g in trainer.optim.param_groups]
    assert lrs == [1e-3, 0.05] and len(trainer.optim.param_groups[1]["params"]) == 2  # loc and scale of gamma
    gammas = {}
    for name, cfg in (("shared", slow), ("own", slow.replace(nuisance_lr=0.05))):
        rm = build_reward_model(ModelConfig(**base), emb_dim=E, seed=0)
        fit(rm, train, val, cfg)
        gammas[name] = rm.nuisance_posterior()[0]["logits_per_unit"]
    assert abs(gammas["shared"]) < 0.3 < LENGTH_EFFECT / 2 < gammas["own"], gammas


def test_the_decorrelation_penalty_reads_the_judges_pairs_not_the_junk():
    """``decorrelation``: the penalty on the correlation between the authentic reward difference and the covariate
    differences is taken over the real pairs of a batch only; junk made by construction (a truncation is shorter on
    purpose) changes nothing in it, and without junk every pair counts."""
    from pyro import poutine
    from vrm_pyro.models.base import squared_correlation

    from vrm_pyro.data import PairEmbeddings

    g = torch.Generator().manual_seed(0)
    n, e, c = 40, 6, 2
    prompt, a, b = (torch.randn(n, e, generator=g) for _ in range(3))
    phi_a, phi_b = torch.randn(n, c, generator=g), torch.randn(n, c, generator=g)
    junk = torch.arange(n) % 4 == 0
    rm = build_reward_model(ModelConfig(model="bt", bt_head="linear", nuisance="length,bold", decorrelation=2.0),
                            emb_dim=e, seed=0)

    def factor(phi_b_, junk_):
        data = PairEmbeddings(prompt, a, b, torch.ones(n), phi_a, phi_b_, junk=junk_)
        trace = poutine.trace(rm.model).get_trace(*data.batch(slice(None)))
        trace.compute_log_prob()
        return trace.nodes["decorrelation"]["log_prob_sum"]

    moved = phi_b.clone()
    moved[junk] = 100.0 * torch.randn(int(junk.sum()), c, generator=g)  # only the junk rows' covariates change
    torch.testing.assert_close(factor(phi_b, junk), factor(moved, junk))
    assert not torch.allclose(factor(phi_b, None), factor(moved, None))
    with torch.no_grad():
        d = rm.model.authentic_logits({}, prompt, rm.transform.features(a), rm.transform.features(b))
    expected = -2.0 * n * squared_correlation(d[~junk], (phi_a - phi_b)[~junk]).sum()
    torch.testing.assert_close(factor(phi_b, junk), expected)


def test_a_covariate_constant_in_training_is_reported_as_not_identified_not_as_zero():
    """HH-RLHF answers have no headers: the data say nothing of that coefficient, so no table may print it as a
    confident ``+0.000 ± 0.000``."""
    from vrm_pyro.data import PairEmbeddings
    from vrm_pyro.model_card import model_card
    from vrm_pyro.reward_model import gamma_cells

    g = torch.Generator().manual_seed(0)
    n, e = 200, 6
    prompt, a, b = (torch.randn(n, e, generator=g) for _ in range(3))
    length_a, length_b = torch.randn(n, generator=g), torch.randn(n, generator=g)
    label = (length_a - length_b + 0.5 * torch.randn(n, generator=g) > 0).float()
    zeros = torch.zeros(n)
    data = PairEmbeddings(prompt, a, b, label, torch.stack([length_a, zeros], 1), torch.stack([length_b, zeros], 1))
    rm = build_reward_model(ModelConfig(model="bt", bt_head="linear", nuisance="length,headers"), emb_dim=e, seed=0)
    fit(rm, data, None, TrainConfig(epochs=20, lr=3e-2, progress=False))
    length, headers = rm.nuisance_posterior()
    assert not length["constant_in_training"] and length["logits_per_unit"] > 0.5 and length["logits_per_unit_std"] > 0
    assert headers["constant_in_training"] and headers["training_sd"] < 1e-5
    assert all(headers[k] is None for k in ("logits_per_unit", "logits_per_unit_std", "logits_per_sd"))
    assert gamma_cells(headers) == ("not identified: constant in the training responses", "", "")
    assert gamma_cells(length)[0] == f"{length['logits_per_unit']:+.3f}"
    card = model_card(rm, {})
    assert "| headers | not identified: constant in the training responses |  |" in card
    assert f"| length | {length['logits_per_unit']:+.3f} |" in card
