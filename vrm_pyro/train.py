"""The one SVI driver for every preference model (VRM and the Bradley–Terry baseline).

One step: draw a minibatch of pairs, evaluate the ELBO module (``Trace_ELBO`` or
``TraceMeanField_ELBO``) with the ``pairs`` plate scaled to the training-set size,
back-propagate, clip, and take an AdamW step over all parameters of model and guide.
KL terms of the latent sites are weighted per site (``beta_w`` for ``w``,
``beta_z`` for ``z_a``/``z_b``, optionally warmed up from 0), by a messenger that scales
those sites in both model and guide. Each epoch ends with the posterior predictive NLL
and accuracy on the validation pairs and the KL of each latent site; training stops
early when the validation NLL stops improving and the best parameters are restored.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pyro
import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from torch.distributions import kl_divergence

from vrm_pyro.config import TrainConfig
from vrm_pyro.data import PairEmbeddings
from vrm_pyro.errors import NumericalError
from vrm_pyro.evaluate import evaluate_pairs
from vrm_pyro.reward_model import RewardModel

log = logging.getLogger(__name__)

#: which KL weight applies to which latent site
KL_GROUPS = {"w": "kl_weight_w", "z_a": "kl_weight_z", "z_b": "kl_weight_z"}


class SiteScale(Messenger):
    """Multiply the log-density of the named latent sample sites by a factor.

    Applied around an ELBO evaluation it scales those sites in model *and* guide, i.e.
    it weights their KL terms (``beta``-ELBO), analytic or Monte Carlo alike.
    """

    def __init__(self, scales: dict[str, float]):
        super().__init__()
        self.scales = scales

    def _process_message(self, msg):
        if msg["type"] == "sample" and not msg["is_observed"] and msg["name"] in self.scales:
            msg["scale"] = msg["scale"] * self.scales[msg["name"]]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        from vrm_pyro.errors import ConfigError

        raise ConfigError(f"device {name!r} requested (TrainConfig.device, --device) but CUDA is not available; "
                          "use --device cpu or auto")
    return device


def set_seed(seed: int) -> None:
    """Seed Python-level, numpy, torch and Pyro RNGs."""
    pyro.set_rng_seed(seed)


def kl_weights(cfg: TrainConfig, step: int, prompt_multiplicity: torch.Tensor | None = None) -> dict:
    """Per-site KL weights at ``step``: ``beta * warm-up ramp``; for ``w`` also divided by the
    number of pairs sharing the prompt (a ``(B,)`` tensor), so each prompt pays its KL once."""
    ramp = 1.0 if cfg.kl_warmup_steps <= 0 else min(1.0, step / cfg.kl_warmup_steps)
    scales: dict = {site: ramp * getattr(cfg, attr) for site, attr in KL_GROUPS.items()}
    if prompt_multiplicity is not None:
        scales["w"] = scales["w"] / prompt_multiplicity
    return scales


@torch.no_grad()
def site_kls(rm: RewardModel, batch: tuple) -> dict[str, float]:
    """KL(q || p) of each latent site per pair on one batch (analytic where registered, else 1-sample MC)."""
    if not rm.has_latents:
        return {}
    prompt, a, b, label = batch
    guide_tr = poutine.trace(rm.guide).get_trace(prompt, a, b, label)
    model_tr = poutine.trace(poutine.replay(rm.model, trace=guide_tr)).get_trace(prompt, a, b, label)
    out = {}
    for name in rm.model.latent_sites:
        q, p = guide_tr.nodes[name]["fn"], model_tr.nodes[name]["fn"]
        try:
            kl = kl_divergence(q, p)
        except NotImplementedError:
            value = guide_tr.nodes[name]["value"]
            kl = q.log_prob(value) - p.log_prob(value)
        out[f"kl_{name}"] = float(kl.mean())
    return out


@dataclass
class FitResult:
    """What :func:`fit` did: one history row per epoch, the best epoch and its validation metrics."""

    history: list[dict] = field(default_factory=list)
    best_epoch: int = -1
    best_val: dict = field(default_factory=dict)
    steps: int = 0
    seconds: float = 0.0
    skipped_batches: int = 0
    stopped_early: bool = False

    @property
    def elbo_curve(self) -> list[float]:
        return [h["loss"] for h in self.history]


def _find_nonfinite(rm: RewardModel, loss: torch.Tensor) -> str:
    """Name the first non-finite value (loss, gradient or parameter); called only after a failed check."""
    if not torch.isfinite(loss):
        return f"the ELBO loss is {loss.item()}"
    for name, p in rm.named_parameters():
        if p.grad is not None and not torch.isfinite(p.grad).all():
            return f"the gradient of {name}"
        if not torch.isfinite(p).all():
            return f"the parameter {name}"
    return "the gradient norm"


def fit(rm: RewardModel, train: PairEmbeddings, val: PairEmbeddings | None = None,
        cfg: TrainConfig | None = None, *, on_epoch: Callable[[dict], None] | None = None,
        skip_nonfinite: bool = False) -> FitResult:
    """Train ``rm`` in place by SVI on ``train``; early-stop on ``val``.

    Args:
        rm: built by :func:`vrm_pyro.registry.build_reward_model` (VRM or ``bt``).
        train, val: embedded pairs (``val`` optional; without it no early stopping).
        cfg: optimisation settings.
        on_epoch: called with each history row (e.g. for logging or checkpoints).
        skip_nonfinite: skip a step whose loss or gradient is NaN/Inf (counted) instead of raising.

    Returns:
        :class:`FitResult`. ``rm`` holds the best parameters by validation NLL.
    """
    cfg = cfg or TrainConfig()
    set_seed(cfg.seed)
    device = resolve_device(cfg.device)
    rm.to(device)
    train_d = train.to(device)
    val_d = val.to(device) if val is not None and len(val) else None
    n = len(train_d)
    elbo = rm.elbo(cfg.elbo, num_particles=cfg.num_particles)
    params = [p for p in rm.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    result = FitResult()
    best_nll, best_state, bad_epochs = math.inf, None, 0
    start = time.perf_counter()
    bar = _progress(cfg.epochs * steps_per_epoch, cfg.progress, desc=f"fit {rm.kind}")
    step = 0
    for epoch in range(cfg.epochs):
        rm.train()
        perm = torch.randperm(n, device=device, generator=gen)
        total = torch.zeros((), device=device)
        for i in range(steps_per_epoch):
            idx = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            batch = train_d.batch(idx)
            with SiteScale(kl_weights(cfg, step, train_d.prompt_multiplicity[idx])):
                loss = elbo(*batch, size=n)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            # one check per step: the total gradient norm is non-finite if any gradient is, and
            # parameters only turn non-finite through such a step (the tensor is named on failure)
            norm = torch.nn.utils.clip_grad_norm_(params, cfg.clip_norm if cfg.clip_norm > 0 else math.inf)
            if not bool(torch.isfinite(loss + norm)):
                fault = _find_nonfinite(rm, loss)
                if skip_nonfinite:
                    result.skipped_batches += 1
                    optim.zero_grad(set_to_none=True)
                    step += 1
                    continue
                raise NumericalError(f"non-finite value at step {step} (epoch {epoch}): {fault}. "
                                     "Lower the learning rate, check the embeddings, or train with "
                                     "skip_nonfinite=True (--skip-nonfinite) to skip such batches.")
            optim.step()
            total += loss.detach()
            step += 1
            bar.update(1)
        row = {"epoch": epoch, "step": step, "loss": float(total) / n / steps_per_epoch,
               "seconds": time.perf_counter() - start}
        if val_d is not None:
            metrics = evaluate_pairs(rm, val_d, num_samples=cfg.eval_samples, seed=cfg.seed)
            row.update({"val_nll": metrics["nll"], "val_accuracy": metrics["accuracy"]})
            row.update(site_kls(rm, val_d.batch(slice(0, 1024))))
            if metrics["nll"] < best_nll - 1e-4:
                best_nll, bad_epochs = metrics["nll"], 0
                best_state = copy.deepcopy(rm.state_dict())
                result.best_epoch, result.best_val = epoch, metrics
            else:
                bad_epochs += 1
        result.history.append(row)
        bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k in ("loss", "val_nll", "val_accuracy")})
        if on_epoch is not None:
            on_epoch(row)
        if val_d is not None and cfg.patience > 0 and bad_epochs >= cfg.patience:
            result.stopped_early = True
            break
    bar.close()
    if best_state is not None:
        rm.load_state_dict(best_state)
    result.steps, result.seconds = step, time.perf_counter() - start
    rm.eval()
    return result


def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, leave=False, dynamic_ncols=True)


__all__ = ["FitResult", "SiteScale", "fit", "kl_weights", "resolve_device", "set_seed", "site_kls"]
