"""Names -> classes for priors, guides and models; building a :class:`RewardModel` from a config.

Each registered class has ``from_config(cfg: ModelConfig, prompt_dim: int, response_dim: int)``. Register your
own with ``WEIGHT_PRIORS["my_prior"] = MyPrior`` and select it by name in the config
or on the command line; or skip the registry and pass objects to
:class:`~vrm_pyro.models.VariationalRewardModel` directly.
"""

from __future__ import annotations

import pyro
import torch
from pyro import poutine

from vrm_pyro.config import ModelConfig
from vrm_pyro.errors import ConfigError, ModelGuideMismatch
from vrm_pyro.guides import (
    AmortisedDirichletWeightGuide,
    AmortisedFeatureGuide,
    AmortisedLogisticNormalWeightGuide,
    MeanFieldGlobalGuide,
    MeanFieldWeightGuide,
    VariationalGuide,
)
from vrm_pyro.models import (
    BradleyTerryModel,
    DirichletWeightPrior,
    LogisticNormalWeightPrior,
    NuisanceTerm,
    PromptDirichletWeightPrior,
    PromptGaussianFeaturePrior,
    PromptLogisticNormalWeightPrior,
    ResponseGaussianFeaturePrior,
    StandardNormalFeaturePrior,
    ValidityGate,
    VariationalRewardModel,
)
from vrm_pyro.representations import feature_groups, feature_orientation, gate_factor_columns
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


def build_reward_model(cfg: ModelConfig | None = None, emb_dim: int = 384, *, response_dim: int | None = None,
                       seed: int | None = None, representation: str | None = None,
                       gate_columns: torch.Tensor | None = None, gate_factors: torch.Tensor | None = None,
                       **overrides) -> RewardModel:
    """Build a model and its guide from names, check they agree, wrap them in a :class:`RewardModel`.

    ``emb_dim`` is the prompt embedding width E, ``response_dim`` the width F of the response features
    (default E: the ``joint`` representation). ``seed`` seeds the parameter initialisation (otherwise the
    global torch RNG is used). ``representation`` (``EncoderConfig.representation``) names the blocks of the
    features; ``cfg.path_prior="part"`` and ``cfg.gate`` need it (or, for the gate, ``gate_columns``: its ``(F,)``
    bool mask, and for a conjunctive gate ``gate_factors``, its columns' factors, as a checkpoint stores them).

    >>> rm = build_reward_model(ModelConfig(weight_prior="prompt_dirichlet"), emb_dim=384)
    """
    cfg = (cfg or ModelConfig()).replace(**overrides) if overrides else (cfg or ModelConfig())
    if seed is not None:
        pyro.set_rng_seed(seed)
    E, F = emb_dim, response_dim or emb_dim
    C = len(cfg.covariates)
    groups = orientation = None  # the blocks of the Bayesian path's prior, its monotone rows
    if (cfg.path_prior == "part" or cfg.monotone_features) and cfg.path_uses_prior:
        if representation is None:
            raise ConfigError("ModelConfig.path_prior='part' and ModelConfig.monotone act on blocks of the "
                              "representation: pass representation=<EncoderConfig.representation> to "
                              "build_reward_model (for features you computed yourself, use path_prior='dimension' "
                              "and no monotone)")
        blocks = feature_groups(representation, E)
        if sum(blocks) != F:
            raise ConfigError(f"representation {representation!r} gives features of width {sum(blocks)} for an "
                              f"encoder of width {E}, but response_dim is {F}: pass the representation the features "
                              "were computed with")
        groups = blocks if cfg.path_prior == "part" else None
        orientation = (feature_orientation(representation, E, cfg.monotone_features, cfg.monotone_priors)
                       if cfg.monotone_features else None)
    nuisance = (NuisanceTerm(C, E, prior_scale=cfg.nuisance_prior_scale, by_prompt=cfg.nuisance_by_prompt)
                if C and cfg.nuisance_term else None)
    gate = None
    if cfg.gate_parts:
        columns, factors = gate_columns, gate_factors
        if columns is None:  # read off the representation's named parts (a checkpoint passes the saved columns)
            if representation is None:
                raise ConfigError(f"ModelConfig.gate (--gate {cfg.gate}) reads named parts of the representation: "
                                  "pass representation=<EncoderConfig.representation> to build_reward_model")
            columns, factors = gate_factor_columns(representation, E, cfg.gate_factors)
            if columns.shape[0] != F:
                raise ConfigError(f"representation {representation!r} gives features of width {columns.shape[0]} for "
                                  f"an encoder of width {E}, but response_dim is {F}: pass the representation the "
                                  "features were computed with")
        gate = ValidityGate(columns, cfg.gate_prior_scale, in_label=cfg.gate_in_label, pairwise=cfg.gate_pairwise,
                            prompt_dim=E, by_prompt=cfg.gate_by_prompt, scale=cfg.gate_scale,
                            clip=cfg.gate_clip, factors=factors)
    weight_guide = feature_guide = None
    if cfg.model == "bt":
        model = BradleyTerryModel.from_config(cfg, E, F, nuisance=nuisance, feature_groups=groups,
                                             orientation=orientation, gate=gate)
    else:
        weight_prior = _lookup(WEIGHT_PRIORS, cfg.weight_prior, "weight prior", "weight_prior")
        feature_prior = _lookup(FEATURE_PRIORS, cfg.feature_prior, "feature prior", "feature_prior")
        weight_guide = _lookup(WEIGHT_GUIDES, cfg.weight_guide, "weight guide", "weight_guide").from_config(cfg, E, F)
        feature_guide = _lookup(FEATURE_GUIDES, cfg.feature_guide, "feature guide", "feature_guide").from_config(cfg, E, F)
        # monotone features reach the reward through the path's |theta| only, not through z
        feature_guide.hide_columns(torch.tensor(orientation or (0,) * F) > 0)
        model = VariationalRewardModel.from_config(
            cfg, E, F, weight_prior=weight_prior.from_config(cfg, E, F),
            feature_prior=feature_prior.from_config(cfg, E, F), nuisance=nuisance, feature_groups=groups,
            orientation=orientation, gate=gate)
    priors = model.global_priors()
    guide = VariationalGuide(weight_guide, feature_guide, MeanFieldGlobalGuide(priors) if priors else None)
    check_sites(model, guide, E, F, C)
    return RewardModel(model, guide, cfg, E, F)


def check_sites(model, guide, prompt_dim: int, response_dim: int | None = None, num_covariates: int = 0) -> None:
    """Trace the guide and the model replayed on it once, on a dummy batch, and check with Pyro's
    :func:`pyro.util.check_model_guide_match` that the guide samples exactly the model's latent sites
    with the same shapes; raise :class:`ModelGuideMismatch` naming the sites otherwise."""
    import warnings

    from pyro.util import check_model_guide_match

    response_dim = response_dim or prompt_dim
    batch = (torch.zeros(2, prompt_dim), torch.zeros(2, response_dim), torch.zeros(2, response_dim), torch.ones(2),
             torch.zeros(2, num_covariates), torch.zeros(2, num_covariates))
    names = f"{type(model).__name__} and {type(guide).__name__}"
    try:
        with torch.no_grad(), pyro.validation_enabled(False):
            guide_tr = poutine.trace(guide).get_trace(*batch)
            model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(*batch)
    except Exception as exc:
        raise ModelGuideMismatch(f"running {names} on a dummy batch (prompt (2, {prompt_dim}), responses (2, "
                                 f"{response_dim})) failed: {type(exc).__name__}: {exc}") from exc
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            check_model_guide_match(model_tr, guide_tr, model.max_plate_nesting)
        except ValueError as exc:
            raise ModelGuideMismatch(f"{names} do not match: {exc}; check num_objectives / feature_dim") from exc
    problems = [str(w.message).split("\n")[-1] if "consider" in str(w.message) else str(w.message) for w in caught]
    if problems:
        missing = sorted(n for n, s in model_tr.nodes.items() if s["type"] == "sample" and not s["is_observed"]
                         and n not in guide_tr.nodes)
        extra = sorted(n for n, s in guide_tr.nodes.items() if s["type"] == "sample" and n not in model_tr.nodes
                       and not s["infer"].get("is_auxiliary"))
        parts = ([f"the guide does not sample the model's latent site(s) {missing}"] if missing else []) + (
            [f"the guide samples site(s) {extra} that the model does not have"] if extra else [])
        raise ModelGuideMismatch(f"{names} do not match: " + "; ".join(parts or problems)
                                 + ". Give the guide one sample statement per latent site.")
