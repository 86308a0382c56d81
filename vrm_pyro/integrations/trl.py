"""A VRM checkpoint as a TRL reward function.

TRL's trainers (``GRPOTrainer``, ``RLOOTrainer``) take callables
``reward_func(prompts, completions, **kwargs) -> list[float]``::

    from trl import GRPOConfig, GRPOTrainer
    from vrm_pyro.integrations.trl import VRMReward

    trainer = GRPOTrainer(model=policy, reward_funcs=[VRMReward.from_checkpoint("runs/vrm", kappa=1.0)],
                          args=GRPOConfig(...), train_dataset=prompts)

Plain prompts and completions are strings; conversational ones are lists of ``{"role", "content"}``
messages (the prompt is rendered as the loaders render chat data, the completion is its assistant
text). The reward is ``reward - kappa * reward_std`` (``kappa=0``: the posterior mean), computed
exactly as ``vrm score`` computes it. Each call logs the mean reward and the mean ``reward_std``
through TRL's ``log_metric`` (``vrm/reward``, ``vrm/reward_std``) when the trainer passes it, and keeps
them in :attr:`VRMReward.history`.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def _text(value, what: str) -> str:
    """A prompt or completion as text: strings as they are, chat messages rendered."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(m, dict) for m in value):
        if what == "completion":
            return "".join(str(m.get("content", "")) for m in value if m.get("role", "assistant") == "assistant")
        from vrm_pyro.formats import render_messages

        return render_messages(value, "<trl>", 0, what)
    raise TypeError(f"VRMReward: a {what} must be a string or a list of chat messages, got {type(value).__name__}")


class VRMReward:
    """A fitted reward model and its encoder as a TRL reward function (see the module docstring)."""

    def __init__(self, checkpoint, encoder, *, kappa: float = 0.0, num_samples: int = 32, name: str = "vrm"):
        self.checkpoint, self.encoder = checkpoint, encoder
        self.kappa, self.num_samples = kappa, num_samples
        self.__name__ = name  # TRL names the reward column after it
        self.history: list[dict] = []

    @classmethod
    def from_checkpoint(cls, path: str | os.PathLike, *, kappa: float = 0.0, device: str = "cpu",
                        cache_dir: str | None = None, num_samples: int = 32, name: str = "vrm") -> VRMReward:
        """Load a checkpoint (or run directory) written by ``vrm train``."""
        from vrm_pyro.checkpoint import load_checkpoint
        from vrm_pyro.scoring import encoder_for

        ckpt = load_checkpoint(path, device=device)
        return cls(ckpt, encoder_for(ckpt, cache_dir=cache_dir, device=device, use_cache=False), kappa=kappa,
                   num_samples=num_samples, name=name)

    def score(self, prompts: list, completions: list):
        """The :class:`~vrm_pyro.models.base.RewardOutput` of the completions (texts or chat messages)."""
        from vrm_pyro.scoring import score_texts

        return score_texts(self.checkpoint, self.encoder, [_text(p, "prompt") for p in prompts],
                           [_text(c, "completion") for c in completions], num_samples=self.num_samples)

    def __call__(self, prompts: list, completions: list, **kwargs) -> list[float]:
        out = self.score(prompts, completions)
        rewards = out.lcb(self.kappa) if self.kappa else out.reward
        stats = {"reward": float(out.reward.mean()),
                 "reward_std": float(out.reward_std.mean()) if out.reward_std is not None else float("nan")}
        self.history.append(stats)
        log_metric = kwargs.get("log_metric")
        if callable(log_metric):
            for key, value in stats.items():
                log_metric(f"{self.__name__}/{key}", value)
        log.info("%s: mean reward %.4f, mean reward_std %.4f over %d completions", self.__name__, stats["reward"],
                 stats["reward_std"], len(completions))
        return [float(r) for r in rewards]


__all__ = ["VRMReward"]
