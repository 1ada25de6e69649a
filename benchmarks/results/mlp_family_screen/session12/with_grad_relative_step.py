"""A weight file that is a rule with grad_relative_step set in its card (no retraining), for the session scripts
that take weight files (session6/evaluate.py, session6/grid.py, session8/paired.py).

    PYTHONPATH=. python benchmarks/results/mlp_family_screen/session12/with_grad_relative_step.py RULE C OUT
"""
import dataclasses
import sys

from learned_optim.pretrained import load_weights, save_weights

name, power, out = sys.argv[1], float(sys.argv[2]), sys.argv[3]
rule = load_weights(name)
config = dataclasses.replace(rule.config, grad_relative_step=power)
save_weights(out, rule.theta, config, card={"name": f"{rule.name}+grad_relative_step={power:g}",
                                            "description": f"{rule.name}'s weights, grad_relative_step {power:g}, "
                                                           "not retrained"})
print(f"wrote {out}")
