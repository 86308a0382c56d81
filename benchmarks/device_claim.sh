#!/usr/bin/env bash
# Used once on the lent H200 (benchmarks/results/position_leak/): needs, in the ignored folder .gpu/, the wheels
# of pyro-ppl, pyro-api, concept-erasure, faker and this package (whl/), MiniLM with float16-stored weights (minilm/),
# the shared data (data/, AlpacaEval re-compressed with xz to fit the 64 MiB transfer) and the contender list.
# Claim stage on the lent GPU machine: embed on CUDA, fit in 16 processes; rows stream to $OUT.
set -u
T0=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TRANSFORMERS_VERBOSITY=error
mkdir -p /tmp/shared && xz -dc .gpu/data/alpaca.jsonl.xz | gzip -1 > /tmp/shared/alpaca_eval_gpt4_turbo_pairs.jsonl.gz
cp .gpu/data/*.jsonl.gz /tmp/shared/
export VRM_SHARED_DATA=/tmp/shared
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader; nproc; python3 -c "import torch, transformers, pyro; print(torch.__version__, transformers.__version__, pyro.__version__)"
STAGE=${STAGE:-claim}
( while true; do cp benchmarks/results/$STAGE/rows.jsonl $OUT/rows.jsonl 2>/dev/null; sleep 5; done ) >/dev/null 2>&1 &
LOOP=$!
python3 benchmarks/embed_shared.py --encoder .gpu/minilm --device cuda --batch-size 256 2>&1 | grep -v "it/s\]" | tail -8
echo "embed done at $(( $(date +%s) - T0 )) s"
python3 benchmarks/compare_bt.py --encoder .gpu/minilm prepare --device cuda 2>&1 | grep -v "it/s\]" | tail -3
echo "prepare done at $(( $(date +%s) - T0 )) s"
LEFT=$(( ${BUDGET:-560} - ($(date +%s) - T0) ))
timeout $LEFT python3 benchmarks/compare_bt.py --encoder .gpu/minilm run --stage $STAGE --workers ${WORKERS:-16} \
  --datasets hh_rlhf_harmless alpaca_eval --contenders $CONTENDERS > $OUT/run.log 2>&1
echo "run rc=$? at $(( $(date +%s) - T0 )) s"
cp benchmarks/results/$STAGE/rows.jsonl $OUT/rows.jsonl
kill $LOOP; pkill -f compare_bt.py; tail -5 $OUT/run.log; wc -l $OUT/rows.jsonl
