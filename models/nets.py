"""Small networks shared by priors, guides and decoders.

Positivity is by construction: concentrations and scales are ``softplus(raw) + floor``,
with ``raw`` clamped to [-30, 30] before the softplus, so that neither extreme inputs
(huge or all-zero embeddings) nor a bad step can produce 0, negative or Inf parameters.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

RAW_CLAMP = 30.0


def mlp(in_dim: int, hidden_dim: int, out_dim: int, *, layers: int = 1,
        input_norm: bool = True) -> nn.Sequential:
    """``in_dim -> [hidden_dim, GELU] x layers -> out_dim``, by default with a LayerNorm on the input.

    The input LayerNorm makes the amortisation networks insensitive to the embedding's
    scale (frozen encoders differ by orders of magnitude) and keeps extreme inputs finite.
    Decoders of latent features switch it off: the scale of ``z`` carries information.
    """
    mods: list[nn.Module] = [nn.LayerNorm(in_dim)] if input_norm else []
    d = in_dim
    for _ in range(layers):
        mods += [nn.Linear(d, hidden_dim), nn.GELU()]
        d = hidden_dim
    mods.append(nn.Linear(d, out_dim))
    return nn.Sequential(*mods)


def positive(raw: torch.Tensor, floor: float) -> torch.Tensor:
    """``softplus(clamp(raw)) + floor``: strictly positive, finite, smooth."""
    return F.softplus(raw.clamp(-RAW_CLAMP, RAW_CLAMP)) + floor


def bounded(raw: torch.Tensor, bound: float = 1e3) -> torch.Tensor:
    """Clamp a location parameter to a finite range."""
    return raw.clamp(-bound, bound)
