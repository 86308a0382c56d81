"""Pyro guides (installed as ``vrm_pyro.guides``)."""

from vrm_pyro.guides.amortised import (
    AmortisedDirichletWeightGuide,
    AmortisedFeatureGuide,
    AmortisedLogisticNormalWeightGuide,
)
from vrm_pyro.guides.base import (
    DirichletWeightGuide,
    EmptyGuide,
    FeatureGuide,
    VariationalGuide,
    WeightGuide,
)
from vrm_pyro.guides.mean_field import MeanFieldGlobalGuide, MeanFieldWeightGuide

__all__ = [
    "AmortisedDirichletWeightGuide", "AmortisedFeatureGuide", "AmortisedLogisticNormalWeightGuide",
    "DirichletWeightGuide", "EmptyGuide", "FeatureGuide", "MeanFieldGlobalGuide", "MeanFieldWeightGuide",
    "VariationalGuide", "WeightGuide",
]
