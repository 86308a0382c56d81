"""Worker of tests/test_distributed.py: fit BT and VRM on synthetic pairs and write test metrics
(run alone, or under `torchrun` / `accelerate launch` with several processes)."""

import json
import sys

from vrm_pyro import ModelConfig, TrainConfig, build_reward_model, evaluate_pairs, fit
from vrm_pyro.synthetic import SyntheticProcess
from vrm_pyro.train import is_main_process

proc = SyntheticProcess(emb_dim=16, num_objectives=3, seed=0)
train, val, test = (proc.sample(k, 8, seed=s).pairs for k, s in ((128, 1), (32, 2), (64, 3)))
models = {"bt": ModelConfig(model="bt"), "vrm": ModelConfig(num_objectives=3, feature_dim=4, hidden_dim=64)}
result = {}
for name, cfg in models.items():
    rm = build_reward_model(cfg, emb_dim=16, seed=0)
    fit_result = fit(rm, train, val, TrainConfig(epochs=8, batch_size=64, lr=3e-3, patience=0, progress=False,
                                                 device="cpu"))
    result[name] = {"test": evaluate_pairs(rm, test), "loss": [h["loss"] for h in fit_result.history],
                    "state": {k: v.flatten().tolist() for k, v in rm.state_dict().items()}}
if is_main_process():
    with open(sys.argv[1], "w") as fh:
        json.dump(result, fh)
