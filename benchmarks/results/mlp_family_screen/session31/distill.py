"""Distil an oracle-routed composition of two rules into one coordinatewise LSTM: a diagnostic of session 31.

Session 26 found the meta-gradient at the default to be noise in every weight but the readout bias; session 28 found
that a composition of two rules' steps, routed by what kind of net they are in (the 1x24 specialist's steps on the
first layer of one-hidden-layer sigmoid nets, a fifth of them on the output layer, the default's everywhere else),
would meet every point of issue 5, but that a router by depth alone is a tilt toward sigmoid nets. Distillation asks
a question the meta-gradient cannot answer at this scale: can one rule, from what it sees per coordinate, learn to take
the specialist's steps in one-hidden-layer *sigmoid* nets and the default's in the others?

Since session 32 the distillation is the package's (``python -m learned_optim.distill``, whose docstring says what it
does; session 32 checked that it writes the same weights as this script did); this script keeps session 31's command
line:

    PYTHONPATH=. python benchmarks/results/mlp_family_screen/session31/distill.py A B OUT.safetensors [options]

(session 31's ``--c``, a third teacher for small-batch ReLU members, was used in no committed run and is gone).
"""
import argparse
import sys

from learned_optim.distill import main
from learned_optim.tasks import FAMILIES

parser = argparse.ArgumentParser()
parser.add_argument("a")
parser.add_argument("b")
parser.add_argument("out")
parser.add_argument("--family", default="mlp-family-plus", choices=sorted(FAMILIES))
parser.add_argument("--output-weight", default="0.2")
parser.add_argument("--problems", default="24")
parser.add_argument("--rounds", default="2")
parser.add_argument("--passes", default="8")
for name in ("coords", "lr", "clip", "steps", "init", "extra"):
    parser.add_argument("--" + name)
parser.add_argument("--no-count-input", action="store_true")
args = parser.parse_args()
argv = ["--base", args.a, "--specialist", args.b, "--out", args.out, "--data-root", "../shared/data"]
for name, value in vars(args).items():
    if name not in ("a", "b", "out", "no_count_input") and value is not None:
        argv += ["--" + name.replace("_", "-"), value]
sys.exit(main(argv + ["--no-count-input"] * args.no_count_input))
