"""The SVI driver: recovery of known weights, determinism, early stopping, KL schedule, NaN guard."""

import numpy as np
import pytest
import torch

from vrm_pyro import (
    ModelConfig,
    NumericalError,
    PairEmbeddings,
    TrainConfig,
    build_reward_model,
    fit,
)
from vrm_pyro.synthetic import SyntheticProcess, matched_weight_correlation
from vrm_pyro.train import kl_weights

E = 16


@pytest.fixture(scope="module")
def synthetic():
    proc = SyntheticProcess(emb_dim=E, num_objectives=3, seed=0)
    return proc.sample(300, 8, seed=1), proc.sample(50, 8, seed=2), proc.sample(100, 1, seed=3)


def test_posterior_mean_weights_recover_the_true_per_prompt_weights(synthetic):
    """Data drawn from the generative process with known w(x): learned E_q[w|x] correlates with it.
    Measured: 0.84 mean matched correlation (3 objectives, 300 prompts x 8 pairs)."""
    train, val, test = synthetic
    rm = build_reward_model(ModelConfig(num_objectives=3, feature_dim=4, hidden_dim=64), emb_dim=E)
    fit(rm, train.pairs, val.pairs, TrainConfig(epochs=40, batch_size=128, lr=3e-3, patience=8, progress=False))
    learned = rm.reward(torch.tensor(test.prompt_emb, dtype=torch.float32), test.pairs.response_a).weights.numpy()
    corr, _ = matched_weight_correlation(test.prompt_weights, learned)
    assert corr > 0.6, corr
    # and the weights of a prompt do not depend on which response is scored
    learned_b = rm.reward(torch.tensor(test.prompt_emb, dtype=torch.float32), test.pairs.response_b).weights.numpy()
    np.testing.assert_allclose(learned, learned_b)


def test_same_seed_same_numbers(synthetic):
    train, val, _ = synthetic
    runs = []
    for _ in range(2):
        rm = build_reward_model(ModelConfig(hidden_dim=16, num_objectives=3, feature_dim=2), emb_dim=E, seed=3)
        res = fit(rm, train.pairs.subset(slice(0, 200)), val.pairs, TrainConfig(epochs=2, seed=3, progress=False))
        runs.append(([{k: v for k, v in h.items() if k != "seconds"} for h in res.history], rm.state_dict()))
    assert runs[0][0] == runs[1][0]
    assert all(torch.equal(runs[0][1][k], runs[1][1][k]) for k in runs[0][1])


def test_early_stopping_restores_the_best_epoch():
    torch.manual_seed(0)
    n = 64
    data = PairEmbeddings(torch.randn(n, E), torch.randn(n, E), torch.randn(n, E), torch.randint(0, 2, (n,)).float())
    val = PairEmbeddings(torch.randn(32, E), torch.randn(32, E), torch.randn(32, E), torch.randint(0, 2, (32,)).float())
    rm = build_reward_model(ModelConfig(model="bt", bt_head="mlp", bt_hidden_dim=64), emb_dim=E)
    res = fit(rm, data, val, TrainConfig(epochs=60, lr=1e-2, patience=3, progress=False))
    assert res.stopped_early and len(res.history) == res.best_epoch + 4
    best = min(h["val_nll"] for h in res.history)
    from vrm_pyro import evaluate_pairs

    assert evaluate_pairs(rm, val)["nll"] == pytest.approx(best, rel=1e-6)


def test_kl_warmup_and_per_prompt_scaling():
    cfg = TrainConfig(kl_weight_w=0.2, kl_weight_z=0.4, kl_warmup_steps=10)
    assert kl_weights(cfg, 0)["w"] == 0.0
    assert kl_weights(cfg, 5)["z_a"] == pytest.approx(0.2)
    assert kl_weights(cfg, 50)["z_b"] == pytest.approx(0.4)
    w = kl_weights(cfg, 50, torch.tensor([1.0, 4.0]))["w"]
    assert torch.allclose(w, torch.tensor([0.2, 0.05]))


def test_nan_embeddings_are_refused_and_nan_steps_are_caught():
    with pytest.raises(Exception, match="NaN or Inf"):
        PairEmbeddings(torch.full((2, E), float("nan")), torch.zeros(2, E), torch.zeros(2, E), torch.ones(2))
    rm = build_reward_model(ModelConfig(model="bt"), emb_dim=E)
    with torch.no_grad():
        rm.model.head.net.weight.fill_(float("nan"))
    data = PairEmbeddings(torch.randn(8, E), torch.randn(8, E), torch.randn(8, E), torch.ones(8))
    with pytest.raises(NumericalError, match="non-finite value at step 0"):
        fit(rm, data, None, TrainConfig(epochs=1, progress=False))
    res = fit(rm, data, None, TrainConfig(epochs=1, batch_size=4, progress=False, skip_nonfinite=True))
    assert res.skipped_batches == 2
