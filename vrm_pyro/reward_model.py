"""A preference model, its guide, its fitted feature transform and its config, as one ``nn.Module``.

This is what the trainer optimises, what a checkpoint stores and what the scorer calls; it is
the same class for VRM and the Bradley–Terry baseline. Its public methods take *raw* inputs
(prompt embeddings, response features, nuisance covariates as :func:`vrm_pyro.encoders.embed_pairs`
returns them) and apply the fitted :class:`~vrm_pyro.transforms.FeatureTransform` themselves;
only the ELBO module takes prepared inputs (:meth:`RewardModel.prepare`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from huggingface_hub import ModelHubMixin
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from torch import nn

from vrm_pyro.config import ModelConfig
from vrm_pyro.data import PairEmbeddings, check_embeddings
from vrm_pyro.errors import DataError
from vrm_pyro.models.base import PreferenceModel, RewardOutput
from vrm_pyro.transforms import FeatureTransform

ELBOS = {"trace": Trace_ELBO, "mean_field": TraceMeanField_ELBO}


class RewardModel(nn.Module, ModelHubMixin, library_name="vrm-pyro", tags=["reward-model", "rlhf", "pyro"],
                  repo_url="https://github.com/vrm-pyro/vrm-pyro"):
    """``model`` (a :class:`~vrm_pyro.models.PreferenceModel`) + ``guide`` + ``transform`` + ``config``.

    ``state_dict()`` holds every trainable tensor of model and guide (keys ``model.*``, ``guide.*``)
    and the fitted transform (``transform.*``). ``provenance`` holds what a checkpoint records beside
    the weights (encoder config and identity, training config, metadata such as held-out metrics).

    ``save_pretrained(dir)`` / ``RewardModel.from_pretrained(dir)`` follow ``huggingface_hub``'s
    ``ModelHubMixin`` (``push_to_hub`` too); the directory is a :mod:`vrm_pyro.checkpoint` checkpoint
    with a model card (``README.md``).
    """

    def __init__(self, model: PreferenceModel, guide: nn.Module, config: ModelConfig, prompt_dim: int,
                 response_dim: int | None = None, transform: FeatureTransform | None = None):
        super().__init__()
        self.model, self.guide, self.config = model, guide, config
        self.prompt_dim, self.response_dim = prompt_dim, response_dim or prompt_dim
        self.transform = transform or FeatureTransform(self.response_dim, len(config.covariates),
                                                       kind=config.feature_transform, erase=config.erase_nuisance)
        self.provenance: dict = {}

    # -- Hub conventions ----------------------------------------------------------------------------
    def _save_pretrained(self, save_directory: Path) -> None:
        from vrm_pyro.checkpoint import save_checkpoint

        save_checkpoint(save_directory, self)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision=None, cache_dir=None, force_download=False,
                         local_files_only=False, token=None, map_location: str = "cpu", **model_kwargs) -> RewardModel:
        from vrm_pyro.checkpoint import load_checkpoint

        path = Path(model_id)
        if not path.is_dir():
            from huggingface_hub import snapshot_download

            path = Path(snapshot_download(repo_id=model_id, revision=revision, cache_dir=cache_dir,
                                          force_download=force_download, local_files_only=local_files_only,
                                          token=token))
        return load_checkpoint(path, device=map_location).reward_model

    @property
    def emb_dim(self) -> int:
        """E, the prompt embedding width (the encoder's)."""
        return self.prompt_dim

    @property
    def num_covariates(self) -> int:
        return len(self.config.covariates)

    @property
    def kind(self) -> str:
        return self.config.model

    @property
    def has_reward_std(self) -> bool:
        """True when ``reward`` comes with an epistemic ``reward_std`` (a Bayesian path or head; the judge's
        nuisance term is not part of the reward, so it does not count)."""
        part = getattr(self.model, "path", None) or getattr(self.model, "head", None)
        return bool(part is not None and getattr(part, "global_sites", None))

    @property
    def has_latents(self) -> bool:
        """True when the model has local latents (objective weights and features)."""
        return bool(self.model.latent_sites)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def elbo(self, name: str = "trace", *, num_particles: int = 1) -> nn.Module:
        """The ELBO as an ``nn.Module``: ``elbo(*batch, size=N)`` on a prepared batch is the loss."""
        cls = ELBOS[name]
        return cls(num_particles=num_particles, vectorize_particles=num_particles > 1,
                   max_plate_nesting=self.model.max_plate_nesting)(self.model, self.guide)

    # -- the fitted transform --------------------------------------------------------------------------
    def fit_transform(self, train: PairEmbeddings) -> None:
        """Fit the feature transform on the distinct training responses (once; a loaded model keeps its own)."""
        if bool(self.transform.fitted):
            return
        h = torch.cat([train.response_a, train.response_b]).float().cpu()
        phi = torch.cat([train.nuisance_a, train.nuisance_b]).float().cpu()[:, :self.num_covariates]
        rows, index = torch.unique(torch.cat([h, phi], dim=1), dim=0, return_inverse=True)
        self.transform.fit(rows[:, :h.shape[1]], rows[:, h.shape[1]:])
        self.transform.to(self.device)

    def prepare(self, data: PairEmbeddings) -> PairEmbeddings:
        """What the ELBO sees: ``data`` with transformed response features and covariates."""
        self._check(data.prompt, data.response_a, data.nuisance_a, "RewardModel.prepare")
        t = self.transform
        return data.replace(response_a=t.features(data.response_a), response_b=t.features(data.response_b),
                            nuisance_a=self._covariates(data.nuisance_a), nuisance_b=self._covariates(data.nuisance_b))

    def _covariates(self, phi: torch.Tensor | None) -> torch.Tensor | None:
        """Standardised covariates; a model without a nuisance term ignores any it is given."""
        if phi is None:
            return None
        return self.transform.covariates(phi) if self.num_covariates else phi[..., :0]

    def _check(self, prompt, response, nuisance, where: str) -> None:
        if prompt.shape[-1] != self.prompt_dim or response.shape[-1] != self.response_dim:
            raise DataError(f"this model takes prompt embeddings of width {self.prompt_dim} and response features "
                            f"of width {self.response_dim} (representation of its encoder config), got "
                            f"{prompt.shape[-1]} and {response.shape[-1]}", source=where)
        if nuisance is not None and self.num_covariates and nuisance.shape[-1] != self.num_covariates:
            raise DataError(f"this model takes {self.num_covariates} nuisance covariates "
                            f"({self.config.nuisance or 'none'}), got {nuisance.shape[-1]}", source=where)
        if not bool(self.transform.fitted) and not self.transform.identity:
            raise DataError("the feature transform is not fitted: train the model first (fit() fits it on the "
                            "training pairs) or load a checkpoint", source=where)

    # -- posterior summaries on raw inputs -------------------------------------------------------------
    def _batched(self, fn, tensors, batch_size):
        n = tensors[0].shape[0]
        dev = self.device
        return [fn(*(None if t is None else t[i:i + batch_size].to(dev) for t in tensors))
                for i in range(0, n, batch_size)]

    @torch.no_grad()
    def reward(self, prompt: torch.Tensor, response: torch.Tensor, *, num_samples: int = 32, seed: int = 0,
               batch_size: int = 4096) -> RewardOutput:
        """Posterior authentic reward of responses ``(N, F)`` to prompts ``(N, E)`` (any device; result on CPU)."""
        check_embeddings(prompt, "prompt", "RewardModel.reward")
        check_embeddings(response, "response", "RewardModel.reward")
        self._check(prompt, response, None, "RewardModel.reward")
        was_training = self.training
        self.eval()
        try:
            outs = self._batched(lambda p, r: self.model.reward(self.guide, p, self.transform.features(r),
                                                                num_samples=num_samples, seed=seed),
                                 (prompt, response), batch_size)
        finally:
            self.train(was_training)

        def cat(name):
            parts = [getattr(o, name) for o in outs]
            return None if not parts or parts[0] is None else torch.cat(parts).float().cpu()

        if not outs:
            return RewardOutput(reward=torch.zeros(0))
        return RewardOutput(reward=cat("reward"), reward_std=cat("reward_std"), local_std=cat("local_std"),
                            weights=cat("weights"), scores=cat("scores"))

    @torch.no_grad()
    def latent_features(self, prompt: torch.Tensor, response: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """VRM's posterior of the semantic features, ``q(z | x, y)``: mean and std ``(N, D)`` each, on CPU."""
        if self.guide.feature_guide is None:
            raise DataError("this model has no latent features (a Bradley–Terry baseline)")
        self._check(prompt, response, None, "RewardModel.latent_features")
        q = self.guide.feature_guide(prompt.to(self.device), self.transform.features(response.to(self.device))).base_dist
        return q.loc.float().cpu(), q.scale.float().cpu()

    @torch.no_grad()
    def route_rewards(self, prompt: torch.Tensor, response: torch.Tensor, *, num_samples: int = 32) -> dict:
        """VRM's posterior mean reward split by route (``latent``: through ``g(z)``, ``path``: through the
        path from the response features), ``{route: (N,)}`` on CPU; ``{}`` for a model without routes."""
        if not hasattr(self.model, "route_rewards"):
            return {}
        self._check(prompt, response, None, "RewardModel.route_rewards")
        outs = self._batched(lambda p, r: self.model.route_rewards(self.guide, p, self.transform.features(r),
                                                                   num_samples=num_samples), (prompt, response), 4096)
        return {k: torch.cat([o[k] for o in outs]).float().cpu() for k in outs[0]} if outs else {}

    @torch.no_grad()
    def difference_samples(self, prompt, response_a, response_b, nuisance_a=None, nuisance_b=None, *,
                           num_samples: int = 32, batch_size: int = 4096, seed: int = 0,
                           include_nuisance: bool = True) -> torch.Tensor:
        """Seeded draws of the logit ``r_a - r_b`` (plus the judge's nuisance term unless
        ``include_nuisance=False``) under the guide: ``(S, N)`` on CPU (``S = 1`` without latents)."""
        for name, t in (("prompt", prompt), ("response_a", response_a), ("response_b", response_b)):
            check_embeddings(t, name, "RewardModel.difference_samples")
        self._check(prompt, response_a, nuisance_a, "RewardModel.difference_samples")
        if include_nuisance and self.num_covariates and self.config.nuisance_term and nuisance_a is None:
                raise DataError(f"this model's judge term needs the nuisance covariates ({self.config.nuisance}) of both "
                            "responses; pass them, or include_nuisance=False for the authentic reward alone",
                            source="RewardModel.difference_samples")
        t = self.transform
        was_training = self.training
        self.eval()
        try:
            outs = self._batched(
                lambda p, a, b, na, nb: self.model.difference_samples(
                    self.guide, p, t.features(a), t.features(b), self._covariates(na), self._covariates(nb),
                    num_samples=num_samples, seed=seed, include_nuisance=include_nuisance),
                (prompt, response_a, response_b, nuisance_a, nuisance_b), batch_size)
        finally:
            self.train(was_training)
        return torch.cat(outs, dim=1).float().cpu() if outs else torch.zeros(1, 0)

    @torch.no_grad()
    def pair_probability(self, prompt, response_a, response_b, nuisance_a=None, nuisance_b=None, *,
                         num_samples: int = 32, batch_size: int = 4096, seed: int = 0,
                         include_nuisance: bool = True) -> torch.Tensor:
        """Posterior predictive P(a preferred) ``E_q[sigmoid(r_a - r_b [+ nuisance])]``, ``(N,)`` on CPU."""
        return torch.sigmoid(self.difference_samples(
            prompt, response_a, response_b, nuisance_a, nuisance_b, num_samples=num_samples, batch_size=batch_size,
            seed=seed, include_nuisance=include_nuisance)).mean(0)

    @torch.no_grad()
    def nuisance_reward(self, prompt: torch.Tensor, nuisance: torch.Tensor) -> torch.Tensor:
        """The judge's nuisance part of single responses, ``E_q[gamma(x)] . φ̃(y)`` (``φ̃`` standardised):
        ``(N,)`` on CPU, zeros without a nuisance term. Differences of it are the judge's nuisance logits."""
        term = self.model.nuisance
        if term is None:
            return torch.zeros(prompt.shape[0])
        means = {name: self.guide.posterior(name).mean for name in term.global_sites}
        phi = self.transform.covariates(nuisance.to(self.device))
        return term.logits(means, prompt.to(self.device), phi).float().cpu()

    @torch.no_grad()
    def nuisance_posterior(self) -> list[dict] | None:
        """The posterior of the judge's nuisance coefficients in natural units: per covariate, the mean and
        std of ``gamma`` in logits per unit of the covariate (``log2`` counts: logits per doubling), and
        per standard deviation of the covariate in the training responses. None without a nuisance term.

        A covariate constant in the training responses (no headers in any HH-RLHF answer) enters every pair as 0
        (``transforms.standardise``): the data say nothing of its coefficient, so its four numbers are None and
        ``constant_in_training`` is True (:func:`gamma_cells` prints it so)."""
        if self.model.nuisance is None:
            return None
        from vrm_pyro.transforms import CONSTANT_SCALE

        q = self.guide.posterior("gamma").base_dist
        std = self.transform.phi_std
        out = []
        for i, name in enumerate(self.config.covariates):
            seen = bool(std[i] > CONSTANT_SCALE)
            out.append({"covariate": name, "constant_in_training": not seen,
                        "logits_per_unit": float(q.loc[i] / std[i]) if seen else None,
                        "logits_per_unit_std": float(q.scale[i] / std[i]) if seen else None,
                        "logits_per_sd": float(q.loc[i]) if seen else None,
                        "logits_per_sd_std": float(q.scale[i]) if seen else None, "training_sd": float(std[i])})
        return out


def gamma_cells(row: dict, digits: int = 3) -> tuple[str, str, str]:
    """One row of :meth:`RewardModel.nuisance_posterior` as text: ``(logits per doubling, sd, logits per sd)``,
    e.g. ``("+0.120", "0.030", "+0.250")``; for a covariate constant in training ``("not identified: constant
    in the training responses", "", "")``."""
    if row.get("constant_in_training"):
        return "not identified: constant in the training responses", "", ""
    return (f"{row['logits_per_unit']:+.{digits}f}", f"{row['logits_per_unit_std']:.{digits}f}",
            f"{row['logits_per_sd']:+.{digits}f}")


def kl_per_site(model: PreferenceModel, guide: nn.Module, batch) -> dict[str, float]:
    """KL(q || p) of each latent site on one prepared batch: local sites per pair, global sites in total
    (analytic where registered, else a one-sample estimate)."""
    from pyro import poutine
    from torch.distributions import kl_divergence

    guide_tr = poutine.trace(guide).get_trace(*batch)
    model_tr = poutine.trace(poutine.replay(model, trace=guide_tr)).get_trace(*batch)
    out = {}
    for name, node in guide_tr.nodes.items():
        if node["type"] != "sample" or name not in model_tr.nodes or node["is_observed"] or name == "pairs":
            continue
        q, p = node["fn"], model_tr.nodes[name]["fn"]
        try:
            kl = kl_divergence(q, p)
        except NotImplementedError:
            kl = q.log_prob(node["value"]) - p.log_prob(node["value"])
        out[f"kl_{name}"] = float(kl.mean()) if name in model.latent_sites else float(kl.sum())
    return out


__all__ = ["ELBOS", "RewardModel", "gamma_cells", "kl_per_site"]
