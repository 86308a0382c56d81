"""Pyro generative models of preference judgments (installed as ``vrm_pyro.models``)."""

from vrm_pyro.models.base import PreferenceModel, RewardOutput, pairs_plate
from vrm_pyro.models.bradley_terry import BradleyTerryModel
from vrm_pyro.models.paths import (
    BayesianLinearPath,
    LinearPath,
    MLPPath,
    NuisanceTerm,
    ValidityGate,
)
from vrm_pyro.models.priors import (
    DirichletWeightPrior,
    FeaturePrior,
    LogisticNormalWeightPrior,
    PromptDirichletWeightPrior,
    PromptGaussianFeaturePrior,
    PromptLogisticNormalWeightPrior,
    ResponseGaussianFeaturePrior,
    StandardNormalFeaturePrior,
    WeightPrior,
)
from vrm_pyro.models.vrm import VariationalRewardModel

__all__ = [
    "BayesianLinearPath", "BradleyTerryModel", "DirichletWeightPrior", "LinearPath", "MLPPath", "NuisanceTerm", "FeaturePrior", "LogisticNormalWeightPrior",
    "PreferenceModel", "PromptDirichletWeightPrior", "PromptGaussianFeaturePrior",
    "PromptLogisticNormalWeightPrior", "ResponseGaussianFeaturePrior", "RewardOutput",
    "StandardNormalFeaturePrior", "ValidityGate", "VariationalRewardModel", "WeightPrior", "pairs_plate",
]
