"""vrm-pyro: Variational Reward Modeling in Pyro.

Quick start::

    from vrm_pyro import (load_pairs, TextEncoder, embed_pairs, build_reward_model, fit,
                          ModelConfig, TrainConfig)
    splits = load_pairs().split_by_prompt()           # bundled HH-RLHF slice
    enc = TextEncoder()                                # all-MiniLM-L6-v2, offline
    train, val = (embed_pairs(splits[s], enc) for s in ("train", "validation"))
    rm = build_reward_model(ModelConfig(weight_prior="prompt_dirichlet"), emb_dim=enc.dim)
    fit(rm, train, val, TrainConfig(epochs=10))
"""

from vrm_pyro.config import (
    LIKELIHOOD_RECIPE,
    RECIPES,
    TRAIN_RECIPE,
    DataConfig,
    EncoderConfig,
    ModelConfig,
    TrainConfig,
    recommended_configs,
)
from vrm_pyro.data import PairEmbeddings, PreferencePairs
from vrm_pyro.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    ModelGuideMismatch,
    NumericalError,
    VRMError,
)
from vrm_pyro.evaluate import evaluate_pairs, pairwise_metrics
from vrm_pyro.formats import load_pairs
from vrm_pyro.registry import build_reward_model
from vrm_pyro.reward_model import RewardModel
from vrm_pyro.train import FitResult, fit

__version__ = "0.1.0"

__all__ = [
    "LIKELIHOOD_RECIPE",
    "RECIPES",
    "TRAIN_RECIPE",
    "recommended_configs",
    "CheckpointError", "ConfigError", "DataConfig", "DataError", "EncoderConfig", "FitResult",
    "ModelConfig", "ModelGuideMismatch", "NumericalError", "PairEmbeddings", "PreferencePairs",
    "RewardModel", "TrainConfig", "VRMError", "build_reward_model", "evaluate_pairs", "fit",
    "load_pairs", "pairwise_metrics",
]


def __getattr__(name):  # lazy: the encoder stack imports transformers
    if name in ("TextEncoder", "embed_pairs"):
        from vrm_pyro import encoders

        return getattr(encoders, name)
    if name in ("save_checkpoint", "load_checkpoint", "Checkpoint"):
        from vrm_pyro import checkpoint

        return getattr(checkpoint, name)
    raise AttributeError(f"module 'vrm_pyro' has no attribute {name!r}")
