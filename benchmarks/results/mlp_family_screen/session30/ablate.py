"""A rule with the gradient-noise input, that input held at a constant: the same weights with the noise column folded
into layer 0's gate biases at ``value`` (0: the level of independent noise, where the default's runs read it after
about 20 steps; 1.47: agreement, the first step's value), written as a rule without the input. What the input buys
inside a trained rule is the difference between the rule and this one.

    PYTHONPATH=. python benchmarks/results/mlp_family_screen/session30/ablate.py WEIGHTS VALUE OUT.safetensors
"""
import dataclasses
import sys

from learned_optim import load_weights
from learned_optim.pretrained import save_weights

rule = load_weights(sys.argv[1])
value, out = float(sys.argv[2]), sys.argv[3]
assert rule.config.grad_noise_input, "the rule has no grad_noise_input"
theta = dict(rule.theta)
w = theta["cells.0.w_ih"]  # the noise input is the last column (nets.TENSOR_INPUTS order)
theta["cells.0.w_ih"], theta["cells.0.b"] = w[:, :-1].clone(), theta["cells.0.b"] + value * w[:, -1]
save_weights(out, theta, dataclasses.replace(rule.config, grad_noise_input=False),
             {"name": out, "description": f"{sys.argv[1]} with its grad_noise_input held at {value}"})
print(out)
