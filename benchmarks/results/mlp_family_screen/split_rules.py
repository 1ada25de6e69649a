"""Several rules on one net: one LearnedOptimizer per rule, each over the tensors assigned to it (session 6 and 8's
hybrid scripts). The rules are coordinatewise and rescale per tensor, so each tensor takes the steps its rule would
take on the whole net (not so for a rule whose inputs need the whole net's RMS)."""
from learned_optim import LearnedOptimizer


class Split:
    """``assign[i]``: the RuleWeights of tensor i (in ``params``' order); ``lrs[i]``: its learning rate."""

    def __init__(self, params, assign, lrs=None):
        params = list(params)
        lrs = lrs or (1.0,) * len(params)
        rules = {id(rule): rule for rule in assign}
        self.opts = [LearnedOptimizer([{"params": [p], "lr": lr} for p, r, lr in zip(params, assign, lrs) if r is rule],
                                      weights=rule)
                     for rule in rules.values()]

    def zero_grad(self, set_to_none=True):
        for opt in self.opts:
            opt.zero_grad(set_to_none=set_to_none)

    def step(self, closure=None):
        for opt in self.opts:
            opt.step()
