"""A running meta-training's weights as a weight file, to evaluate before the run ends.

    PYTHONPATH=. python benchmarks/results/mlp_family_screen/session7/snapshot.py CHECKPOINT NET_JSON OUT {theta,best}

CHECKPOINT: the run's NAME.ckpt.safetensors; NET_JSON: its network config as JSON (the card's "metatrain"."net");
theta: the latest epoch's weights, best: the best-validation ones so far. Prints the epoch the checkpoint holds.
"""
import json
import sys
from pathlib import Path

from learned_optim.metatrain import load_checkpoint
from learned_optim.nets import NetConfig
from learned_optim.pretrained import save_weights

checkpoint, net, out, which = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
progress, theta, best, _ = load_checkpoint(Path(checkpoint))
save_weights(out, theta if which == "theta" else best, NetConfig.from_dict(net),
             card={"name": Path(out).stem, "description": f"snapshot ({which}) of {checkpoint}",
                   "progress": {k: v for k, v in progress.items() if k != "history"}})
print(json.dumps({k: v for k, v in progress.items() if k in ("epoch", "best_epoch", "best")}))
