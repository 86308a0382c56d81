"""Names -> classes for priors, guides and models; building a :class:`RewardModel` from a config.

Each registered class has ``from_config(cfg: ModelConfig, emb_dim: int)``. Register your
own with ``WEIGHT_PRIORS["my_prior"] = MyPrior`` and select it by name in the config
or on the command line; or skip the registry and pass objects to
:class:`~vrm_pyro.models.VariationalRewardModel` directly.
"""

from __future__ import annotations

import pyro
import torch
from pyro import poutine
from pyro.poutine.util import site_is_subsample

from vrm_pyro.config import ModelConfig
from vrm_pyro.errors import ConfigError, ModelGuideMismatch
from vrm_pyro.guides import (
    AmortisedDirichletWeightGuide,
    AmortisedFeatureGuide,
    AmortisedLogisticNormalWeightGuide,
    EmptyGuide,
    MeanFieldWeightGuide,
    VariationalGuide,
)
from vrm_pyro.models import (
    BradleyTerryModel,
    DirichletWeightPrior,
    LogisticNormalWeightPrior,
    PromptDirichletWeightPrior,
    PromptGaussianFeaturePrior,
    PromptLogisticNormalWeightPrior,
    ResponseGaussianFeaturePrior,
    StandardNormalFeaturePrior,
    VariationalRewardModel,
)
from vrm_pyro.reward_model import RewardModel

WEIGHT_PRIORS = {
    "dirichlet": DirichletWeightPrior,
    "prompt_dirichlet": PromptDirichletWeightPrior,
    "logistic_normal": LogisticNormalWeightPrior,
    "prompt_logistic_normal": PromptLogisticNormalWeightPrior,
}
FEATURE_PRIORS = {
    "standard_normal": StandardNormalFeaturePrior,
    "prompt_gaussian": PromptGaussianFeaturePrior,
    "response_gaussian": ResponseGaussianFeaturePrior,
}
WEIGHT_GUIDES = {
    "dirichlet": AmortisedDirichletWeightGuide,
    "logistic_normal": AmortisedLogisticNormalWeightGuide,
    "mean_field": MeanFieldWeightGuide,
}
FEATURE_GUIDES = {
    "gaussian": AmortisedFeatureGuide,
}


def _lookup(table: dict, name: str, what: str, option: str):
    try:
        return table[name]
    except KeyError:
        raise ConfigError(f"unknown {what} {name!r} (ModelConfig.{option}, --{option.replace('_', '-')}); "
                          f"choose one of: {', '.join(sorted(table))}") from None


def build_reward_model(cfg: ModelConfig | None = None, emb_dim: int = 384, *, seed: int | None = None,
                       **overrides) -> RewardModel:
    """Build a model and its guide from names, check they agree, wrap them in a :class:`RewardModel`.

    ``seed`` seeds the parameter initialisation (otherwise the global torch RNG is used).

    >>> rm = build_reward_model(ModelConfig(weight_prior="prompt_dirichlet"), emb_dim=384)
    """
    cfg = (cfg or ModelConfig()).replace(**overrides) if overrides else (cfg or ModelConfig())
    if seed is not None:
        pyro.set_rng_seed(seed)
    if cfg.model == "bt":
        model, guide = BradleyTerryModel.from_config(cfg, emb_dim), EmptyGuide()
    else:
        weight_prior = _lookup(WEIGHT_PRIORS, cfg.weight_prior, "weight prior", "weight_prior")
        feature_prior = _lookup(FEATURE_PRIORS, cfg.feature_prior, "feature prior", "feature_prior")
        weight_guide = _lookup(WEIGHT_GUIDES, cfg.weight_guide, "weight guide", "weight_guide")
        feature_guide = _lookup(FEATURE_GUIDES, cfg.feature_guide, "feature guide", "feature_guide")
        model = VariationalRewardModel.from_config(
            cfg, emb_dim, weight_prior=weight_prior.from_config(cfg, emb_dim),
            feature_prior=feature_prior.from_config(cfg, emb_dim))
        guide = VariationalGuide(weight_guide.from_config(cfg, emb_dim), feature_guide.from_config(cfg, emb_dim))
    check_sites(model, guide, emb_dim)
    return RewardModel(model, guide, cfg, emb_dim)


def check_sites(model, guide, emb_dim: int) -> None:
    """Trace model and guide once on a dummy batch; raise :class:`ModelGuideMismatch` unless the
    guide samples exactly the model's latent sites with the same event shapes."""
    x = torch.zeros(2, emb_dim)
    label = torch.ones(2)
    try:
        with torch.no_grad(), pyro.validation_enabled(False):
            guide_tr = poutine.trace(guide).get_trace(x, x, x, label)
            model_tr = poutine.trace(model).get_trace(x, x, x, label)
    except Exception as exc:
        raise ModelGuideMismatch(f"running {type(model).__name__} / {type(guide).__name__} on a dummy "
                                 f"batch of embeddings (2, {emb_dim}) failed: {type(exc).__name__}: {exc}") from exc
    latent = {n: s for n, s in model_tr.nodes.items() if s["type"] == "sample" and not s["is_observed"]
              and not site_is_subsample(s)}
    sampled = {n: s for n, s in guide_tr.nodes.items() if s["type"] == "sample" and not site_is_subsample(s)
               and not s["infer"].get("is_auxiliary")}
    missing, extra = sorted(set(latent) - set(sampled)), sorted(set(sampled) - set(latent))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"the guide does not sample the model's latent site(s) {missing}")
        if extra:
            parts.append(f"the guide samples site(s) {extra} that the model does not have")
        raise ModelGuideMismatch(f"{type(model).__name__} and {type(guide).__name__} do not match: "
                                 + "; ".join(parts) + ". Give the guide one sample statement per latent site.")
    for name, site in latent.items():
        m_shape, g_shape = site["fn"].event_shape, sampled[name]["fn"].event_shape
        if m_shape != g_shape:
            raise ModelGuideMismatch(f"site {name!r}: the model's event shape is {tuple(m_shape)} but the guide's "
                                     f"is {tuple(g_shape)}; check num_objectives / feature_dim")
