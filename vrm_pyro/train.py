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
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyro
import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from torch import nn
from torch.distributions import kl_divergence

from vrm_pyro.config import TrainConfig
from vrm_pyro.data import PairEmbeddings

if TYPE_CHECKING:
    from vrm_pyro.encoders import TokenizedPairs
from vrm_pyro.errors import ConfigError, NumericalError
from vrm_pyro.evaluate import evaluate_pairs
from vrm_pyro.reward_model import RewardModel
from vrm_pyro.snapshots import TrainingSnapshots, optimizer_from_tensors, set_rng_state

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


class StepLoss(nn.Module):
    """One SVI step's loss as a module, what DDP wraps: embeds the minibatch (inside ``forward``, so a
    LoRA encoder's gradients are synchronised too) and evaluates the ELBO with per-site KL weights."""

    def __init__(self, elbo: nn.Module, data, encoder: nn.Module | None = None):
        super().__init__()
        self.elbo, self.encoder, self.data = elbo, encoder, data

    def forward(self, idx: torch.Tensor, size: int, scales: dict):
        batch = self.data.batch(idx)
        with SiteScale(scales):
            return self.elbo(*batch, size=size), batch


def distributed_accelerator(device: torch.device):
    """An ``accelerate.Accelerator`` when launched on several processes (``accelerate launch`` or
    ``torchrun`` set ``WORLD_SIZE``), else None: single-process training needs no wrapper."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    try:
        from accelerate import Accelerator
    except ImportError as exc:
        raise ConfigError("multi-process training needs accelerate: pip install 'vrm-pyro[lora]'") from exc
    return Accelerator(cpu=device.type == "cpu")


def is_main_process() -> bool:
    """Rank 0 (or a single process): the one that writes checkpoints and prints."""
    return int(os.environ.get("RANK", "0")) == 0


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
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


def _find_nonfinite(rm: RewardModel, loss: torch.Tensor, batch: tuple) -> str:
    """Name the first non-finite value (ELBO site, gradient or parameter); called after a failed check."""
    if not torch.isfinite(loss):
        return f"the ELBO loss is {loss.item()}" + _nonfinite_site(rm, batch)
    for name, p in rm.named_parameters():
        if p.grad is not None and not torch.isfinite(p.grad).all():
            return f"the gradient of {name}"
        if not torch.isfinite(p).all():
            return f"the parameter {name}"
    return "the gradient norm"


@torch.no_grad()
def _nonfinite_site(rm: RewardModel, batch: tuple) -> str:
    """Which sample site of guide or model has a non-finite log-density on ``batch`` (if one does)."""
    try:
        guide_tr = poutine.trace(rm.guide).get_trace(*batch)
        model_tr = poutine.trace(poutine.replay(rm.model, trace=guide_tr)).get_trace(*batch)
        for where, tr in (("guide", guide_tr), ("model", model_tr)):
            for name, node in tr.nodes.items():
                if node["type"] == "sample" and not torch.isfinite(node["fn"].log_prob(node["value"])).all():
                    return f" (site '{name}' of the {where} has a non-finite log-density)"
    except (ValueError, RuntimeError) as exc:  # a distribution refusing its parameters names the site too
        return f" ({exc})"
    return ""


def epoch_order(n: int, seed: int, epoch: int, device: torch.device) -> torch.Tensor:
    """The data order of ``epoch``: a permutation drawn from ``(seed, epoch)`` alone, so a resumed run
    replays it without saving it."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=gen).to(device)


def fit(rm: RewardModel, train: PairEmbeddings | TokenizedPairs, val: PairEmbeddings | TokenizedPairs | None = None,
        cfg: TrainConfig | None = None, *, on_epoch: Callable[[dict], None] | None = None,
        checkpoint_dir: str | os.PathLike | None = None,
        resume: bool = False) -> FitResult:
    """Train ``rm`` in place by SVI on ``train``; early-stop on ``val``.

    Args:
        rm: built by :func:`vrm_pyro.registry.build_reward_model` (VRM or ``bt``).
        train, val: embedded pairs (``val`` optional; without it no early stopping), or
            :class:`~vrm_pyro.encoders.TokenizedPairs` whose LoRA encoder is then trained with the heads.
        cfg: optimisation settings (``save_every`` and ``keep_last`` for snapshots; ``skip_nonfinite``
            skips a step whose loss or gradient is NaN/Inf, counted, instead of raising).
        on_epoch: called with each history row (e.g. for logging).
        checkpoint_dir: where training snapshots go (every ``cfg.save_every`` steps and at each
            new best epoch); see :mod:`vrm_pyro.snapshots`.
        resume: continue from the latest snapshot in ``checkpoint_dir`` (parameters, optimizer,
            RNG states, data order, step); the result equals an uninterrupted run's.

    Returns:
        :class:`FitResult`. ``rm`` holds the best parameters by validation NLL.
    """
    cfg = cfg or TrainConfig()
    set_seed(cfg.seed)
    device = resolve_device(cfg.device)
    accelerator = distributed_accelerator(device)
    rank, world = (accelerator.process_index, accelerator.num_processes) if accelerator else (0, 1)
    if accelerator is not None:
        device = accelerator.device
        torch.manual_seed(cfg.seed + 1_000_003 * rank)  # each process draws its own latent samples
    rm.to(device)
    train_d = train.to(device)
    val_d = val.to(device) if val is not None and len(val) else None
    n = len(train_d)
    # a LoRA-adapted encoder (TokenizedPairs) trains with the heads: one optimiser over everything
    encoder = getattr(train_d, "encoder", None) if hasattr(train_d, "trainable_module") else None
    elbo = rm.elbo(cfg.elbo, num_particles=cfg.num_particles)
    params = [p for p in rm.parameters() if p.requires_grad]
    if encoder is not None:
        params += encoder.trainable_parameters()
    optim = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    writes = accelerator is None or accelerator.is_main_process
    snapshots = TrainingSnapshots(checkpoint_dir, keep_last=cfg.keep_last) if checkpoint_dir is not None else None
    step_loss = StepLoss(elbo, train_d, encoder.model if encoder is not None else None)
    if accelerator is not None:  # DDP: gradients averaged over processes, each holding 1/world of the batch
        step_loss = accelerator.prepare(step_loss)

    def module_state() -> dict[str, torch.Tensor]:
        """Heads (``model.*``, ``guide.*``) and, with LoRA, the adapters (``encoder.*``)."""
        state = dict(rm.state_dict())
        if encoder is not None:
            state.update({f"encoder.{k}": v for k, v in encoder.adapter_state_dict().items()})
        return state

    def load_module_state(state: dict[str, torch.Tensor]) -> None:
        rm.load_state_dict({k: v for k, v in state.items() if not k.startswith("encoder.")})
        if encoder is not None:
            encoder.load_adapter_state_dict({k[len("encoder."):]: v.to(device) for k, v in state.items()
                                             if k.startswith("encoder.")})

    def set_train_mode(mode: bool) -> None:
        rm.train(mode)
        if encoder is not None:
            encoder.model.train(mode)

    result = FitResult()
    loop = {"step": 0, "epoch": 0, "batch": 0, "best_nll": math.inf, "bad_epochs": 0}
    total = torch.zeros((), device=device)
    best_state = None
    seconds_before = 0.0
    if resume and snapshots is not None and (snap := snapshots.load()) is not None:
        load_module_state(snap.modules)
        optimizer_from_tensors(optim, snap.optimizer, snap.optimizer_groups)
        set_rng_state(snap.rng, snap.state["rng"])
        loop = snap.state["loop"]
        total = torch.tensor(snap.state["epoch_loss"], device=device, dtype=torch.float32)
        result = FitResult(history=snap.state["history"], best_epoch=snap.state["best_epoch"],
                           best_val=snap.state["best_val"], skipped_batches=snap.state["skipped_batches"],
                           stopped_early=snap.state["stopped_early"])
        seconds_before = snap.state["seconds"]
        if snapshots.best is not None:
            best_state = {k: v.to(device) for k, v in snapshots.load_modules(snapshots.best).items()}
        log.info("resumed %s at step %d (epoch %d) from %s", rm.kind, loop["step"], loop["epoch"], snap.path)
    start = time.perf_counter() - seconds_before

    def save_snapshot(best: bool = False) -> None:
        if not writes:  # only rank 0 writes
            return
        state = {"loop": loop, "epoch_loss": float(total), "history": result.history,
                 "best_epoch": result.best_epoch, "best_val": result.best_val,
                 "skipped_batches": result.skipped_batches, "stopped_early": result.stopped_early, "seconds": time.perf_counter() - start,
                 "train_config": cfg.to_dict()}
        snapshots.save(loop["step"], modules=module_state(), optimizer=optim, state=state, best=best)

    bar = _progress(cfg.epochs * steps_per_epoch, cfg.progress and writes, desc=f"fit {rm.kind}")
    bar.update(loop["step"])
    stop = loop["epoch"] >= cfg.epochs
    while not stop:
        epoch = loop["epoch"]
        set_train_mode(True)
        perm = epoch_order(n, cfg.seed, epoch, device)
        for i in range(loop["batch"], steps_per_epoch):
            step = loop["step"]
            idx = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size][rank::world]  # this process's shard
            # the plate scales every shard to the full dataset: each process's loss estimates the whole
            # ELBO, and the average of their gradients is that of the whole batch
            loss, batch = step_loss(idx, n, kl_weights(cfg, step, train_d.prompt_multiplicity[idx]))
            optim.zero_grad(set_to_none=True)
            loss.backward()
            # one check per step: the total gradient norm is non-finite if any gradient is, and
            # parameters only turn non-finite through such a step (the tensor is named on failure)
            norm = torch.nn.utils.clip_grad_norm_(params, cfg.clip_norm if cfg.clip_norm > 0 else math.inf)
            loop["step"], loop["batch"] = step + 1, i + 1
            if not bool(torch.isfinite(loss + norm)):
                fault = _find_nonfinite(rm, loss, batch)
                if not cfg.skip_nonfinite:
                    raise NumericalError(
                        f"non-finite value at step {step} (epoch {epoch}): {fault}. Lower the learning rate, "
                        "check the embeddings, or set TrainConfig.skip_nonfinite (--skip-nonfinite) to skip "
                        "such batches" + (f"; the last good snapshot is in {snapshots.latest}"
                                          if snapshots is not None and snapshots.latest else "") + ".")
                result.skipped_batches += 1
                log.warning("skipped step %d: %s", step, fault)
                optim.zero_grad(set_to_none=True)
            else:
                optim.step()
                total += loss.detach()
            bar.update(1)
            if snapshots is not None and cfg.save_every > 0 and loop["step"] % cfg.save_every == 0:
                save_snapshot()
        epoch_loss = accelerator.reduce(total, "mean") if accelerator is not None else total
        row = {"epoch": epoch, "step": loop["step"], "loss": float(epoch_loss) / n / steps_per_epoch,
               "seconds": time.perf_counter() - start}
        improved = False
        if val_d is not None:
            set_train_mode(False)
            val_emb = val_d.embeddings() if hasattr(val_d, "embeddings") else val_d  # LoRA: embed with current adapters
            metrics = evaluate_pairs(rm, val_emb, num_samples=cfg.eval_samples, seed=cfg.seed)
            row.update({"val_nll": metrics["nll"], "val_accuracy": metrics["accuracy"]})
            row.update(site_kls(rm, val_emb.batch(slice(0, 1024))))
            if metrics["nll"] < loop["best_nll"] - 1e-4:
                loop["best_nll"], loop["bad_epochs"], improved = metrics["nll"], 0, True
                best_state = copy.deepcopy(module_state())
                result.best_epoch, result.best_val = epoch, metrics
            else:
                loop["bad_epochs"] += 1
        result.history.append(row)
        bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k in ("loss", "val_nll", "val_accuracy")})
        if on_epoch is not None:
            on_epoch(row)
        stopped_early = val_d is not None and cfg.patience > 0 and loop["bad_epochs"] >= cfg.patience
        loop["epoch"], loop["batch"] = epoch + 1, 0
        total = torch.zeros((), device=device)
        stop = stopped_early or loop["epoch"] >= cfg.epochs
        result.stopped_early = stopped_early
        if snapshots is not None and (improved or stop):
            save_snapshot(best=improved)
    bar.close()
    if accelerator is not None:
        accelerator.wait_for_everyone()
    if best_state is not None:
        load_module_state(best_state)
    result.steps, result.seconds = loop["step"], time.perf_counter() - start
    set_train_mode(False)
    return result


def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, leave=False, dynamic_ncols=True)


__all__ = ["FitResult", "SiteScale", "StepLoss", "distributed_accelerator", "fit", "is_main_process", "kl_weights", "resolve_device", "set_seed", "site_kls"]
