r"""Feature transforms fitted on the training pairs and applied before the heads (stored in checkpoints).

:class:`FeatureTransform` maps raw response features ``h (.., F)`` and nuisance covariates
``φ (.., C)`` to what the model sees, in this order:

1. **concept erasure** (optional): LEACE (Belrose et al., 2023, package ``concept-erasure``)
   removes every linearly decodable trace of ``φ`` from ``h``: after it, the cross-covariance of
   ``h`` and ``φ`` on the training responses is zero, so no linear head can read length or
   formatting from the features and the nuisance term ``gamma`` alone carries them;
2. ``standardize`` (per dimension) or ``whiten`` (PCA: ``(h − mean) V Λ^{-1/2}``, directions with
   eigenvalues below ``1e-6`` of the largest dropped) or ``none``. Under ``whiten`` the Bayesian
   path's isotropic prior is Zellner's g-prior and its posterior variance of a response's score
   grows with the Mahalanobis distance of ``h`` from the training responses: uncertainty that
   means "I have not seen this";
3. covariates are standardised, so ``gamma``'s prior is in logits per standard deviation.

Fitted once, by the trainer, on the distinct training responses; a checkpoint stores the result
as buffers. Scoring applies the same transform to new responses.
"""

from __future__ import annotations

import torch
from torch import nn

from vrm_pyro.errors import ConfigError

#: scales at or below this are those of columns constant on the training responses (their spread floored at 1e-6)
CONSTANT_SCALE = 2e-6


def standardise(x: torch.Tensor, mean: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """``(x − mean) / scale``, and 0 on the columns that were constant in training (``scale`` at its floor): nothing
    was learned about them, so a value they never took must not enter multiplied by a million (a closer in the first
    half of a shuffled answer, a Markdown header, on data that never had one)."""
    return torch.where(scale > CONSTANT_SCALE, (x - mean) / scale, torch.zeros((), dtype=x.dtype, device=x.device))


class FeatureTransform(nn.Module):
    """``kind``: none, standardize or whiten; ``erase``: LEACE-erase the covariates from the features."""

    def __init__(self, response_dim: int, num_covariates: int = 0, *, kind: str = "standardize",
                 erase: bool = False):
        super().__init__()
        if erase and num_covariates == 0:
            raise ConfigError("FeatureTransform: erasure needs nuisance covariates (ModelConfig.nuisance)")
        self.kind, self.erase = kind, erase
        f, c = response_dim, num_covariates
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.register_buffer("h_mean", torch.zeros(f))
        self.register_buffer("h_matrix", torch.eye(f) if kind == "whiten" else torch.zeros(0))
        self.register_buffer("h_scale", torch.ones(f) if kind == "standardize" else torch.zeros(0))
        self.register_buffer("eraser_left", torch.zeros(f, c) if erase else torch.zeros(0))
        self.register_buffer("eraser_right", torch.zeros(c, f) if erase else torch.zeros(0))
        self.register_buffer("eraser_bias", torch.zeros(f) if erase else torch.zeros(0))
        self.register_buffer("phi_mean", torch.zeros(c))
        self.register_buffer("phi_std", torch.ones(c))

    @property
    def identity(self) -> bool:
        """True when the transform changes nothing (no erasure, no scaling, no covariates)."""
        return self.kind == "none" and not self.erase and self.phi_mean.numel() == 0

    @torch.no_grad()
    def fit(self, features: torch.Tensor, covariates: torch.Tensor) -> FeatureTransform:
        """Fit on the distinct training responses: ``features (M, F)``, ``covariates (M, C)``."""
        x = features.double()
        phi = covariates.double()
        if phi.shape[1]:
            self.phi_mean.copy_(phi.mean(0))
            self.phi_std.copy_(phi.std(0).clamp_min(1e-6) if phi.shape[0] > 1 else torch.ones_like(self.phi_mean))
        if self.erase:
            from concept_erasure import LeaceFitter

            fitter = LeaceFitter(x.shape[1], phi.shape[1], dtype=torch.float64, constrain_cov_trace=False,
                                 svd_tol=1e-8)
            fitter.update(x, (phi - self.phi_mean.double()) / self.phi_std.double())
            eraser = fitter.eraser
            self.eraser_left.copy_(eraser.proj_left)
            self.eraser_right.copy_(eraser.proj_right)
            self.eraser_bias.copy_(eraser.bias)
            x = self._erase(x)
        self.h_mean.copy_(x.mean(0))
        centred = x - x.mean(0)
        if self.kind == "standardize":
            self.h_scale.copy_(centred.std(0).clamp_min(1e-6) if x.shape[0] > 1 else torch.ones_like(self.h_mean))
        elif self.kind == "whiten":
            cov = centred.T @ centred / max(x.shape[0] - 1, 1)
            eigval, eigvec = torch.linalg.eigh(cov)
            keep = eigval > eigval.max().clamp_min(1e-30) * 1e-6
            self.h_matrix.copy_(eigvec * torch.where(keep, eigval.clamp_min(1e-30).rsqrt(), 0.0))
        self.fitted.fill_(True)
        return self

    def _erase(self, x: torch.Tensor) -> torch.Tensor:
        left, right, bias = (t.to(x.dtype) for t in (self.eraser_left, self.eraser_right, self.eraser_bias))
        return x - ((x - bias) @ right.T) @ left.T

    def features(self, h: torch.Tensor) -> torch.Tensor:
        """``(.., F)`` raw response features -> what the heads see."""
        if self.erase:
            h = self._erase(h)
        if self.kind == "standardize":
            return standardise(h, self.h_mean, self.h_scale)
        if self.kind == "whiten":
            return (h - self.h_mean) @ self.h_matrix
        return h

    def covariates(self, phi: torch.Tensor) -> torch.Tensor:
        """``(.., C)`` raw covariates -> standardised."""
        return standardise(phi, self.phi_mean, self.phi_std) if phi.shape[-1] else phi


__all__ = ["CONSTANT_SCALE", "FeatureTransform", "standardise"]
