"""A rule with a tensor-count input, given a range its count input is clipped to (NetConfig.tensor_count_min / max):
the same weights, a card that names the source and the range. Session 32.

    PYTHONPATH=. python benchmarks/results/mlp_family_screen/session32/clip.py IN.safetensors OUT.safetensors MIN MAX

MAX 0: no upper bound. Run from the repository root.
"""
import dataclasses
import sys

from learned_optim import load_weights
from learned_optim.pretrained import save_weights

source, out, low, high = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rule = load_weights(source)
if not rule.config.tensor_count_input:
    sys.exit(f"{source} has no tensor_count_input to clip")
config = dataclasses.replace(rule.config, tensor_count_min=low, tensor_count_max=high)
card = {k: v for k, v in rule.card.items() if k not in ("architecture", "sha256", "format")}
card.update(name=out, source=source, source_sha256=rule.sha256,
            description=f"{source} with its tensor-count input clipped to T in [{low}, {high or 'inf'}]: "
                        + str(rule.card.get("description", "")))
save_weights(out, rule.theta, config, card)
print(f"wrote {out}: {source} with T clipped to [{low}, {high or 'inf'}]")
