"""Where reward models are used: `vrm serve` with real HTTP clients (and OpenRLHF's), TRL's GRPOTrainer,
Hub-style save_pretrained / from_pretrained with a model card."""

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch

from vrm_pyro import (
    EncoderConfig,
    ModelConfig,
    TrainConfig,
    build_reward_model,
    fit,
    save_checkpoint,
)
from vrm_pyro.formats import load_pairs

pytestmark = pytest.mark.slow

ROWS = [{"prompt": f"How do I look after plant number {i}?",
         "response": ("Water it weekly and give it light. " * (1 + i % 4)).strip()} for i in range(23)]
ROWS.append({"prompt": "How do I look after plant number 23?", "response": ""})  # a policy may stop at once


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A VRM checkpoint (with a nuisance term) on a tiny random BERT saved to disk like a real encoder."""
    from vrm_pyro.encoders import TextEncoder, embed_pairs

    from .conftest import save_tiny_bert

    root = tmp_path_factory.mktemp("integrations")
    save_tiny_bert(root / "enc")
    enc_cfg = EncoderConfig(name=str(root / "enc"), max_length=64, cache_dir=str(root / "cache"),
                            representation="response_tokens+response+interaction+statistics")
    encoder = TextEncoder(enc_cfg)
    cfg = ModelConfig(hidden_dim=16, num_objectives=3, feature_dim=2, nuisance="length,list_items")
    pairs = embed_pairs(load_pairs(limit=60), encoder, nuisance=cfg.nuisance)
    rm = build_reward_model(cfg, emb_dim=encoder.dim, response_dim=pairs.response_dim, seed=0)
    fit(rm, pairs, None, TrainConfig(epochs=2, progress=False))
    path = save_checkpoint(root / "ckpt", rm, encoder=enc_cfg, encoder_identity=encoder.identity,
                           metadata={"test_metrics": {"accuracy": 0.5}})
    inp = root / "rows.jsonl"
    inp.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    from vrm_pyro.scoring import score_file

    score_file(path, str(inp), str(root / "scored.jsonl"), cache_dir=str(root / "cache"), include_nuisance=True)
    scored = [json.loads(x) for x in (root / "scored.jsonl").read_text().splitlines()]
    return root, path, scored


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`vrm serve` in a subprocess on a free loopback port."""

    def __init__(self, path, *extra):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cmd = [sys.executable, "-m", "vrm_pyro.cli", "serve", "--checkpoint", str(path), "--port", str(self.port),
                    "--batch-window-ms", "20", *extra]
        self.start()

    def start(self):
        self.proc = subprocess.Popen(self.cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "HF_HUB_OFFLINE": "1"})
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vrm serve exited: {self.proc.stderr.read()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise TimeoutError("vrm serve did not start in 120 s")

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def server(checkpoint):
    srv = Server(checkpoint[1], "--token", "s3cret", "--max-rows", "16", "--max-chars", "2000",
                 "--max-body-bytes", "200000")
    yield srv
    srv.stop()


AUTH = {"Authorization": "Bearer s3cret"}


def test_concurrent_clients_get_the_rewards_of_vrm_score(server, checkpoint):
    _, _, scored = checkpoint
    chunks = [ROWS[i:i + 3] for i in range(0, len(ROWS), 3)]

    def ask(rows):
        r = httpx.post(f"{server.url}/v1/rewards", json={"rows": rows}, headers=AUTH, timeout=60)
        assert r.status_code == 200, r.text
        return r.json()["results"]

    with ThreadPoolExecutor(max_workers=8) as pool:  # 8 clients at once, bounded in time by the timeouts
        results = [x for part in pool.map(ask, chunks) for x in part]
    for got, ref in zip(results, scored, strict=True):
        assert got["reward"] == pytest.approx(ref["reward"], abs=1e-5)
        assert got["reward_std"] == pytest.approx(ref["reward_std"], abs=1e-5)
        assert got["reward_lcb"] == pytest.approx(ref["reward_lcb"], abs=1e-5) and got["weights"] == pytest.approx(
            ref["weights"], abs=1e-5)
    metrics = httpx.get(f"{server.url}/metrics").json()
    assert metrics["rows"] >= len(ROWS) and metrics["latency_ms_p95"] > 0
    assert metrics["batches"] < metrics["requests"]  # concurrent requests shared batches


def test_bad_requests_get_4xx_and_the_server_keeps_serving(server):
    cases = [
        ({}, {"rows": ROWS[:2]}, 401, "bearer token"),
        (AUTH, b"{not json", 400, "not JSON"),
        (AUTH, {"rows": [{"prompt": "p"}]}, 422, "row 0"),
        (AUTH, {"rows": ROWS[:17]}, 413, "at most 16"),
        (AUTH, {"rows": [{"prompt": "p", "response": "x" * 2001}]}, 413, "2001 characters"),
        (AUTH, {"rows": [{"prompt": "p", "response": "y" * 1999}] * 12 + [{"prompt": "q", "response": "z" * 1999}] * 4
                + [{"prompt": "p" * 1999, "response": "r"}] * 90}, 413, None),
        (AUTH, {"rows": [{"prompt": "   ", "response": "r"}]}, 422, "row 0: prompt is empty"),
        (AUTH, [1, 2], 422, "JSON object"),
    ]
    for headers, body, status, message in cases:
        kw = {"content": body} if isinstance(body, bytes) else {"json": body}
        r = httpx.post(f"{server.url}/v1/rewards", headers={**headers, "Content-Type": "application/json"}, timeout=30,
                       **kw)
        assert r.status_code == status, (body if isinstance(body, bytes) else str(body)[:80], r.text)
        if message:
            assert message in r.json()["error"]
    ok = httpx.post(f"{server.url}/v1/rewards", json={"rows": ROWS[:2]}, headers=AUTH, timeout=30)
    assert ok.status_code == 200 and len(ok.json()["results"]) == 2


def test_openrlhf_client_gets_rewards_from_get_reward(checkpoint):
    """OpenRLHF's own HTTP client (``SingleTurnAgentExecutor``, what ``--remote_rm_url`` uses)."""
    agent = pytest.importorskip("openrlhf.utils.agent", reason="pip install --no-deps openrlhf (see the README)")
    _, path, scored = checkpoint
    srv = Server(path)
    try:
        executor = agent.SingleTurnAgentExecutor(remote_rm_url=f"{srv.url}/get_reward")
        rows, ref = ROWS[:3] + ROWS[-1:], scored[:3] + scored[-1:]  # the last: an empty completion, "prompt</s>"
        queries = [r["prompt"] + " " + r["response"] + "</s>" for r in rows]
        prompts = [r["prompt"] for r in rows]
        infos = asyncio.run(executor._fetch_rewards_via_http(queries, prompts, [None] * 4))
        rewards = [x for info in infos for x in info["rewards"]]
        assert rewards == pytest.approx([s["reward"] for s in ref], abs=1e-5)
        assert infos[0]["extra_logs"]["reward_std"] == pytest.approx([s["reward_std"] for s in ref], abs=1e-5)
        r = httpx.post(f"{srv.url}/get_reward", json={"query": queries}, timeout=30)
        assert r.status_code == 422 and "prompts" in r.json()["error"]
    finally:
        srv.stop()


def test_a_killed_server_restarts_and_loses_nothing_acknowledged(checkpoint):
    """Clients retry what was not acknowledged; every acknowledged reward equals `vrm score`'s."""
    _, path, scored = checkpoint
    srv = Server(path, "--batch-window-ms", "1")
    acknowledged: dict[int, float] = {}
    stop = threading.Event()

    def client(indices):
        for i in indices:
            while not stop.is_set():
                try:
                    r = httpx.post(f"{srv.url}/v1/rewards", json={"rows": [ROWS[i]]}, timeout=10)
                except httpx.HTTPError:
                    time.sleep(0.05)
                    continue
                if r.status_code == 200:
                    acknowledged[i] = r.json()["results"][0]["reward"]
                    break
    try:
        threads = [threading.Thread(target=client, args=(range(k, len(ROWS), 3),)) for k in range(3)]
        for t in threads:
            t.start()
        while len(acknowledged) < 4:
            time.sleep(0.01)
        srv.kill()  # SIGKILL mid-stream
        srv.start()
        deadline = time.time() + 120
        for t in threads:
            t.join(timeout=max(1.0, deadline - time.time()))
        stop.set()
        assert len(acknowledged) == len(ROWS)
        for i, reward in acknowledged.items():
            assert reward == pytest.approx(scored[i]["reward"], abs=1e-5)
    finally:
        stop.set()
        srv.stop()


def test_grpo_trainer_receives_the_rewards_vrm_score_gives(checkpoint, tmp_path):
    """A tiny random policy runs GRPO steps on CPU with the VRM reward (TRL's GRPOTrainer, real package)."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from vrm_pyro.checkpoint import load_checkpoint
    from vrm_pyro.integrations.trl import VRMReward
    from vrm_pyro.scoring import encoder_for, score_texts

    from .conftest import tiny_llama

    root, path, _ = checkpoint
    policy, tok = tiny_llama(max_positions=128)
    reward = VRMReward.from_checkpoint(path, kappa=1.0, cache_dir=str(root / "cache"))
    seen = []
    scorer = reward.score

    def recording(prompts, completions):
        out = scorer(prompts, completions)
        seen.append((list(prompts), list(completions), out.lcb(1.0).tolist()))
        return out

    reward.score = recording
    data = Dataset.from_dict({"prompt": [r["prompt"] for r in ROWS[:4]]})
    args = GRPOConfig(output_dir=str(tmp_path / "grpo"), per_device_train_batch_size=4, num_generations=2,
                      max_completion_length=8, max_steps=2, learning_rate=1e-4, report_to=[], use_cpu=True,
                      logging_steps=1, save_strategy="no", bf16=False)
    trainer = GRPOTrainer(model=policy, reward_funcs=[reward], args=args, train_dataset=data, processing_class=tok)
    trainer.train()
    assert len(seen) == 2 and len(reward.history) == 2
    ckpt = load_checkpoint(path)
    encoder = encoder_for(ckpt, cache_dir=str(root / "cache"))
    for prompts, completions, rewards in seen:  # what GRPO received is what `vrm score` gives
        ref = score_texts(ckpt, encoder, prompts, completions)
        assert rewards == pytest.approx(ref.lcb(1.0).tolist(), abs=1e-5)
    logged = [h for h in trainer.state.log_history if "rewards/vrm/mean" in h]
    assert logged and logged[0]["rewards/vrm/mean"] == pytest.approx(sum(seen[0][2]) / len(seen[0][2]), abs=1e-4)
    assert any("vrm/reward_std" in h for h in trainer.state.log_history)


def test_conversational_prompts_and_completions(checkpoint):
    from vrm_pyro.checkpoint import load_checkpoint
    from vrm_pyro.integrations.trl import VRMReward
    from vrm_pyro.scoring import encoder_for, score_texts

    root, path, _ = checkpoint
    reward = VRMReward.from_checkpoint(path, cache_dir=str(root / "cache"))
    prompts = [[{"role": "user", "content": "How do I water a fern?"}]] * 2
    completions = [[{"role": "assistant", "content": "Keep the soil moist."}],
                   [{"role": "assistant", "content": "Never."}]]
    got = reward(prompts, completions)
    ckpt = load_checkpoint(path)
    encoder = encoder_for(ckpt, cache_dir=str(root / "cache"))
    texts = ["\n\nHuman: How do I water a fern?"] * 2, ["Keep the soil moist.", "Never."]
    ref = score_texts(ckpt, encoder, *texts)
    assert got == pytest.approx(ref.reward.tolist(), abs=1e-6)
    assert torch.equal(score_texts(ckpt.reward_model, encoder, *texts).reward, ref.reward)  # the model alone too


def test_save_pretrained_from_pretrained_and_model_card(checkpoint, tmp_path):
    from vrm_pyro.checkpoint import load_checkpoint
    from vrm_pyro.reward_model import RewardModel

    root, path, _ = checkpoint
    rm = load_checkpoint(path).reward_model
    rm.save_pretrained(tmp_path / "shared")
    again = RewardModel.from_pretrained(tmp_path / "shared")
    g = torch.Generator().manual_seed(0)
    p, h = torch.randn(5, rm.prompt_dim, generator=g), torch.randn(5, rm.response_dim, generator=g)
    assert torch.equal(rm.reward(p, h).reward, again.reward(p, h).reward)
    card = (tmp_path / "shared" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: vrm-pyro") and "## The judge's nuisance coefficients" in card
    assert "| length |" in card and "| accuracy | 0.5000 |" in card and "## Intended use and limits" in card
    assert load_checkpoint(tmp_path / "shared").encoder_identity == load_checkpoint(path).encoder_identity
