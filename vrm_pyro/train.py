"""The one SVI driver for every preference model (VRM and the Bradley–Terry baseline).

:class:`Trainer` holds the state of a run in one place (step, epoch, position in the epoch,
best validation NLL, history) and has one method per concern: :meth:`Trainer.step` (one SVI
step), :meth:`Trainer.validate` (posterior-predictive metrics and KLs, early stopping),
:meth:`Trainer.snapshot` / :meth:`Trainer.restore` (exact resume), :meth:`Trainer.fit` (the
loop). :func:`fit` is the one-line entry point.

One step: draw a minibatch of pairs, evaluate the ELBO module (``Trace_ELBO`` or
``TraceMeanField_ELBO``) with the ``pairs`` plate scaled to the training-set size,
back-propagate, clip, and take an AdamW step over all parameters of model and guide. KL terms
are weighted per site (``beta_w`` for ``w``, ``beta_z`` for ``z_a``/``z_b``, optionally warmed
up from 0, and ``beta_global`` for the global latents) by a messenger that scales those sites in
both model and guide. Before the first step the model's feature transform is fitted on the
training pairs (:meth:`~vrm_pyro.reward_model.RewardModel.fit_transform`).
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import pyro
import torch
from pyro import poutine
from pyro.poutine.messenger import Messenger
from torch import nn
from torch.distributions import kl_divergence

from vrm_pyro.config import TrainConfig
from vrm_pyro.data import PairEmbeddings
from vrm_pyro.errors import ConfigError, NumericalError
from vrm_pyro.evaluate import evaluate_pairs
from vrm_pyro.progress import progress
from vrm_pyro.reward_model import RewardModel, kl_per_site
from vrm_pyro.snapshots import TrainingSnapshots, optimizer_from_tensors, set_rng_state

if TYPE_CHECKING:
    from vrm_pyro.encoders import TokenizedPairs


log = logging.getLogger(__name__)

#: which KL weight applies to which local latent site
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


class FreeBitsLoss(nn.Module):
    """The negative ELBO with free bits (Kingma et al., 2016): each local latent site's KL counts only
    above ``free_bits`` nats per pair, averaged over the minibatch, so the optimiser gains nothing from
    pushing a site's posterior onto its prior below that budget. KLs are analytic where registered
    (Dirichlet, Normal), one-sample estimates otherwise; global sites pay their full KL."""

    def __init__(self, model: nn.Module, guide: nn.Module, free_bits: float):
        super().__init__()
        self.model, self.guide, self.free_bits = model, guide, free_bits

    def forward(self, *args, **kwargs) -> torch.Tensor:
        guide_tr = poutine.trace(self.guide).get_trace(*args, **kwargs)
        model_tr = poutine.trace(poutine.replay(self.model, trace=guide_tr)).get_trace(*args, **kwargs)
        model_tr.compute_log_prob()
        loss = torch.zeros((), device=args[0].device)
        for name, site in model_tr.nodes.items():
            if site["type"] != "sample" or name == "pairs":
                continue
            if site["is_observed"]:
                loss = loss - site["log_prob_sum"]
                continue
            q = guide_tr.nodes[name]["fn"]
            try:
                kl = kl_divergence(q, site["fn"])
            except NotImplementedError:
                kl = q.log_prob(site["value"]) - site["fn"].log_prob(site["value"])
            scale = torch.as_tensor(site["scale"], device=kl.device).expand_as(kl)
            total = (kl * scale).sum()
            if name in self.model.latent_sites:  # floor the batch-average KL per pair at the budget
                total = torch.maximum(total, self.free_bits * scale.sum())
            loss = loss + total
        return loss


class StepLoss(nn.Module):
    """One SVI step's loss as a module, what DDP wraps: takes the minibatch (embedding it inside
    ``forward`` for a LoRA encoder, so its gradients are synchronised too) and evaluates the ELBO with
    per-site KL weights."""

    def __init__(self, elbo: nn.Module, data, encoder: nn.Module | None = None, prepare: Callable | None = None):
        super().__init__()
        self.elbo, self.encoder, self.data, self.prepare = elbo, encoder, data, prepare

    def forward(self, idx: torch.Tensor, size: int, scales: dict):
        batch = self.data.batch(idx)
        if self.prepare is not None:
            batch = self.prepare(batch)
        with SiteScale(scales):
            return self.elbo(*batch, size=size, indices=idx), batch


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


def kl_weights(cfg: TrainConfig, step: int, prompt_multiplicity: torch.Tensor | None = None,
               global_sites=()) -> dict:
    """Per-site KL weights at ``step``: ``beta * warm-up ramp`` for the local sites (for ``w`` also divided
    by the number of pairs sharing the prompt, a ``(B,)`` tensor, so each prompt pays its KL once) and
    ``beta_global`` for the global sites."""
    ramp = 1.0 if cfg.kl_warmup_steps <= 0 else min(1.0, step / cfg.kl_warmup_steps)
    scales: dict = {site: ramp * getattr(cfg, attr) for site, attr in KL_GROUPS.items()}
    if prompt_multiplicity is not None:
        scales["w"] = scales["w"] / prompt_multiplicity
    if cfg.kl_weight_global != 1.0:
        scales.update({site: cfg.kl_weight_global for site in global_sites})
    return scales


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


@dataclass
class TrainState:
    """Where a run is: what a snapshot stores besides tensors, and what :meth:`Trainer.restore` puts back."""

    step: int = 0
    epoch: int = 0
    batch: int = 0
    best_nll: float = math.inf
    bad_epochs: int = 0
    epoch_loss: float = 0.0
    seconds: float = 0.0


def epoch_order(n: int, seed: int, epoch: int, device: torch.device) -> torch.Tensor:
    """The data order of ``epoch``: a permutation drawn from ``(seed, epoch)`` alone, so a resumed run
    replays it without saving it."""
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=gen).to(device)


class Trainer:
    """SVI for one :class:`~vrm_pyro.reward_model.RewardModel` on embedded (or LoRA-tokenised) pairs.

    Args:
        rm: built by :func:`vrm_pyro.registry.build_reward_model` (VRM or ``bt``); trained in place.
        train, val: :class:`~vrm_pyro.data.PairEmbeddings` (``val`` optional; without it no early
            stopping), or :class:`~vrm_pyro.encoders.TokenizedPairs` whose LoRA encoder then trains too.
        cfg: optimisation settings.
        on_epoch: called with each history row.
        checkpoint_dir: where snapshots go (every ``cfg.save_every`` steps and at each new best epoch).
    """

    def __init__(self, rm: RewardModel, train: PairEmbeddings | TokenizedPairs,
                 val: PairEmbeddings | TokenizedPairs | None = None, cfg: TrainConfig | None = None, *,
                 on_epoch: Callable[[dict], None] | None = None,
                 checkpoint_dir: str | os.PathLike | None = None):
        self.cfg = cfg = cfg or TrainConfig()
        self.rm, self.on_epoch = rm, on_epoch
        set_seed(cfg.seed)
        device = resolve_device(cfg.device)
        self.accelerator = distributed_accelerator(device)
        self.rank, self.world = ((self.accelerator.process_index, self.accelerator.num_processes)
                                 if self.accelerator else (0, 1))
        if self.accelerator is not None:
            device = self.accelerator.device
            torch.manual_seed(cfg.seed + 1_000_003 * self.rank)  # each process draws its own latent samples
        self.device = device
        rm.to(device)
        # a LoRA-adapted encoder (TokenizedPairs) trains with the heads: one optimiser over everything
        self.encoder = getattr(train, "encoder", None) if hasattr(train, "trainable_module") else None
        if self.encoder is None:
            rm.fit_transform(train)
            self.train_data = rm.prepare(train.to(device))
        else:  # the transform is fitted once on the features of the initial adapters; the adapters adapt to it
            if not rm.transform.identity and not bool(rm.transform.fitted):
                rm.fit_transform(train.to(device).embeddings())
            self.train_data = train.to(device)
        self.val = val.to(device) if val is not None and len(val) else None
        self.n = len(self.train_data)
        elbo = (FreeBitsLoss(rm.model, rm.guide, cfg.free_bits) if cfg.free_bits > 0
                else rm.elbo(cfg.elbo, num_particles=cfg.num_particles))
        # gamma's and the validity gate's variational parameters (named ``...loc.<site>`` / ``...raw_scale.<site>``),
        # when they get their own rates: every global site of the nuisance term and of the gate, read off the modules
        nuisance_sites, gate_sites = (set(m.priors) if m is not None else set()
                                      for m in (getattr(rm.model, "nuisance", None), getattr(rm.model, "gate", None)))
        head, nuisance, gate = [], [], []
        for name, p in rm.named_parameters():
            if p.requires_grad:
                site = name.rsplit(".", 1)[-1]
                (nuisance if cfg.nuisance_lr and site in nuisance_sites
                 else gate if cfg.gate_lr and site in gate_sites else head).append(p)
        if self.encoder is not None:
            head += self.encoder.trainable_parameters()
        groups = ([{"params": head}] + ([{"params": nuisance, "lr": cfg.nuisance_lr}] if nuisance else [])
                  + ([{"params": gate, "lr": cfg.gate_lr}] if gate else []))
        self.params = head + nuisance + gate
        self.optim = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.steps_per_epoch = math.ceil(self.n / cfg.batch_size)
        self.writes = self.accelerator is None or self.accelerator.is_main_process
        self.snapshots = TrainingSnapshots(checkpoint_dir, keep_last=cfg.keep_last) if checkpoint_dir else None
        prepare = None if self.encoder is None else self._prepare_lora_batch
        self.step_loss = StepLoss(elbo, self.train_data, self.encoder.model if self.encoder else None, prepare)
        if self.accelerator is not None:  # DDP: gradients averaged over processes, each holding 1/world of the batch
            self.step_loss = self.accelerator.prepare(self.step_loss)
        self.global_sites = tuple(rm.model.global_sites())
        self.state = TrainState()
        self.result = FitResult()
        self.best_state: dict | None = None
        self._started = time.perf_counter()
        self._epoch_total = torch.zeros((), device=device)

    def _prepare_lora_batch(self, batch):
        """A LoRA batch embedded with the current adapters -> what the ELBO sees (the fitted transform)."""
        rm = self.rm
        return batch._replace(response_a=rm.transform.features(batch.response_a),
                              response_b=rm.transform.features(batch.response_b),
                              nuisance_a=rm._covariates(batch.nuisance_a), nuisance_b=rm._covariates(batch.nuisance_b))

    # -- parameters --------------------------------------------------------------------------------
    def module_state(self) -> dict[str, torch.Tensor]:
        """Heads (``model.*``, ``guide.*``, ``transform.*``) and, with LoRA, the adapters (``encoder.*``)."""
        state = dict(self.rm.state_dict())
        if self.encoder is not None:
            state.update({f"encoder.{k}": v for k, v in self.encoder.adapter_state_dict().items()})
        return state

    def load_module_state(self, state: dict[str, torch.Tensor]) -> None:
        self.rm.load_state_dict({k: v for k, v in state.items() if not k.startswith("encoder.")})
        if self.encoder is not None:
            self.encoder.load_adapter_state_dict({k[len("encoder."):]: v.to(self.device) for k, v in state.items()
                                                  if k.startswith("encoder.")})

    def set_train_mode(self, mode: bool) -> None:
        self.rm.train(mode)
        if self.encoder is not None:
            self.encoder.model.train(mode)

    # -- snapshots -----------------------------------------------------------------------------------
    def snapshot(self, best: bool = False) -> None:
        """Write a snapshot of everything :meth:`restore` needs (rank 0 only)."""
        if self.snapshots is None or not self.writes:
            return
        self.state.epoch_loss = float(self._epoch_total)
        self.state.seconds = time.perf_counter() - self._started
        r = self.result
        doc = {"loop": asdict(self.state), "history": r.history, "best_epoch": r.best_epoch, "best_val": r.best_val,
               "skipped_batches": r.skipped_batches, "stopped_early": r.stopped_early,
               "train_config": self.cfg.to_dict()}
        self.snapshots.save(self.state.step, modules=self.module_state(), optimizer=self.optim, state=doc, best=best)

    def restore(self) -> bool:
        """Continue from the latest snapshot (parameters, optimizer, RNG states, data order, step); False if none."""
        snap = self.snapshots.load() if self.snapshots is not None else None
        if snap is None:
            return False
        self.load_module_state(snap.modules)
        optimizer_from_tensors(self.optim, snap.optimizer, snap.optimizer_groups)
        set_rng_state(snap.rng, snap.state["rng"])
        self.state = TrainState(**snap.state["loop"])
        self._epoch_total = torch.tensor(self.state.epoch_loss, device=self.device, dtype=torch.float32)
        self.result = FitResult(history=snap.state["history"], best_epoch=snap.state["best_epoch"],
                                best_val=snap.state["best_val"], skipped_batches=snap.state["skipped_batches"],
                                stopped_early=snap.state["stopped_early"])
        self._started = time.perf_counter() - self.state.seconds
        if self.snapshots.best is not None:
            self.best_state = {k: v.to(self.device) for k, v in self.snapshots.load_modules(self.snapshots.best).items()}
        log.info("resumed %s at step %d (epoch %d) from %s", self.rm.kind, self.state.step, self.state.epoch, snap.path)
        return True

    # -- one step ------------------------------------------------------------------------------------
    def step(self, idx: torch.Tensor) -> None:
        """One SVI step on the training rows ``idx`` (this process's shard of the global batch)."""
        s, cfg = self.state, self.cfg
        # the plate scales every shard to the full dataset: each process's loss estimates the whole ELBO,
        # and the average of their gradients is that of the whole batch
        scales = kl_weights(cfg, s.step, self.train_data.prompt_multiplicity[idx], self.global_sites)
        self.optim.zero_grad(set_to_none=True)
        try:
            loss, batch = self.step_loss(idx, self.n, scales)
        except ValueError as exc:  # a distribution refused non-finite parameters (Pyro validation on)
            if "invalid values" not in str(exc):
                raise
            batch = self.train_data.batch(idx)
            if self.step_loss.prepare is not None:
                batch = self.step_loss.prepare(batch)
            with pyro.validation_enabled(False):
                site = _nonfinite_site(self.rm, batch)
            return self._nonfinite(f"a distribution got non-finite parameters{site}")
        loss.backward()
        # one check per step: the total gradient norm is non-finite if any gradient is, and parameters
        # only turn non-finite through such a step (the tensor is named on failure)
        norm = torch.nn.utils.clip_grad_norm_(self.params, cfg.clip_norm if cfg.clip_norm > 0 else math.inf)
        if not bool(torch.isfinite(loss + norm)):
            return self._nonfinite(_find_nonfinite(self.rm, loss, batch))
        self.optim.step()
        s.step += 1
        self._epoch_total += loss.detach()

    def _nonfinite(self, fault: str) -> None:
        """A step whose loss or gradient is not finite: raise, naming it, or skip it (``skip_nonfinite``)."""
        s = self.state
        s.step += 1
        if not self.cfg.skip_nonfinite:
            latest = self.snapshots.latest if self.snapshots is not None else None
            raise NumericalError(
                f"non-finite value at step {s.step - 1} (epoch {s.epoch}): {fault}. Lower the learning rate, "
                "check the embeddings, or set TrainConfig.skip_nonfinite (--skip-nonfinite) to skip such "
                "batches" + (f"; the last good snapshot is in {latest}" if latest else "") + ".")
        self.result.skipped_batches += 1
        log.warning("skipped step %d: %s", s.step - 1, fault)
        self.optim.zero_grad(set_to_none=True)

    # -- validation ----------------------------------------------------------------------------------
    @torch.no_grad()
    def validate(self) -> dict:
        """Posterior-predictive NLL and accuracy on the validation pairs and the KL of each latent site;
        keeps the best parameters by validation NLL. Returns the metrics for the history row."""
        self.set_train_mode(False)
        val = self.val.embeddings() if hasattr(self.val, "embeddings") else self.val  # LoRA: current adapters
        metrics = evaluate_pairs(self.rm, val, num_samples=self.cfg.eval_samples, seed=self.cfg.seed)
        row = {"val_nll": metrics["nll"], "val_accuracy": metrics["accuracy"]}
        if self.rm.model.latent_sites or self.rm.model.has_globals:
            row.update(kl_per_site(self.rm.model, self.rm.guide, self.rm.prepare(val.subset(slice(0, 1024))).batch(
                slice(None))))
        s = self.state
        if metrics["nll"] < s.best_nll - 1e-4:
            s.best_nll, s.bad_epochs = metrics["nll"], 0
            self.best_state = copy.deepcopy(self.module_state())
            self.result.best_epoch, self.result.best_val = s.epoch, metrics
            row["improved"] = True
        else:
            s.bad_epochs += 1
        self.set_train_mode(True)
        return row

    # -- the loop ------------------------------------------------------------------------------------
    def fit(self) -> FitResult:
        """Train until ``cfg.epochs`` or early stopping; leave the best parameters by validation NLL in place."""
        cfg, s = self.cfg, self.state
        bar = progress(cfg.epochs * self.steps_per_epoch, f"fit {self.rm.kind}", enabled=cfg.progress and self.writes)
        bar.update(s.step)
        stop = s.epoch >= cfg.epochs
        while not stop:
            self.set_train_mode(True)
            perm = epoch_order(self.n, cfg.seed, s.epoch, self.device)
            for i in range(s.batch, self.steps_per_epoch):
                idx = perm[i * cfg.batch_size:(i + 1) * cfg.batch_size][self.rank::self.world]  # this process's shard
                self.step(idx)
                s.batch = i + 1
                bar.update(1)
                if self.snapshots is not None and cfg.save_every > 0 and s.step % cfg.save_every == 0:
                    self.snapshot()
            total = self.accelerator.reduce(self._epoch_total, "mean") if self.accelerator else self._epoch_total
            row = {"epoch": s.epoch, "step": s.step, "loss": float(total) / self.n / self.steps_per_epoch,
                   "seconds": time.perf_counter() - self._started}
            improved = False
            if self.val is not None:
                metrics = self.validate()
                improved = metrics.pop("improved", False)
                row.update(metrics)
            self.result.history.append(row)
            bar.set_postfix({k: f"{v:.3f}" for k, v in row.items() if k in ("loss", "val_nll", "val_accuracy")})
            if self.on_epoch is not None:
                self.on_epoch(row)
            stopped_early = self.val is not None and cfg.patience > 0 and s.bad_epochs >= cfg.patience
            s.epoch, s.batch = s.epoch + 1, 0
            self._epoch_total = torch.zeros((), device=self.device)
            stop = stopped_early or s.epoch >= cfg.epochs
            self.result.stopped_early = stopped_early
            if improved or stop:
                self.snapshot(best=improved)
        bar.close()
        if self.accelerator is not None:
            self.accelerator.wait_for_everyone()
        if self.best_state is not None:
            self.load_module_state(self.best_state)
        self.result.steps, self.result.seconds = s.step, time.perf_counter() - self._started
        self.set_train_mode(False)
        return self.result


def fit(rm: RewardModel, train: PairEmbeddings | TokenizedPairs, val: PairEmbeddings | TokenizedPairs | None = None,
        cfg: TrainConfig | None = None, *, on_epoch: Callable[[dict], None] | None = None,
        checkpoint_dir: str | os.PathLike | None = None, resume: bool = False) -> FitResult:
    """Train ``rm`` in place by SVI on ``train``, early-stopping on ``val``; see :class:`Trainer`.

    With ``resume`` (and ``checkpoint_dir``) it continues from the latest snapshot; the result equals an
    uninterrupted run's. ``rm`` ends with the best parameters by validation NLL."""
    trainer = Trainer(rm, train, val, cfg, on_epoch=on_epoch, checkpoint_dir=checkpoint_dir)
    if resume:
        trainer.restore()
    return trainer.fit()


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


__all__ = ["FitResult", "FreeBitsLoss", "SiteScale", "StepLoss", "Trainer", "TrainState", "distributed_accelerator",
           "fit", "is_main_process", "kl_weights", "resolve_device", "set_seed"]
