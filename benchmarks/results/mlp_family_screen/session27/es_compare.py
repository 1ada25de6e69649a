"""The ES meta-gradients of es_grads.py against the first-order ones of session26/meta_grads.py, problem by problem.

    PYTHONPATH=. python .../session27/es_compare.py OUT_PREFIX FIRST_ORDER.pt ES.pt [ES.pt ...]

Prints, over the problems both files hold (matched by seed):
- the norms of the two mean gradients, their cosine over all rule weights and without the readout bias, and each
  tensor's share of the ES mean's squared norm and its cosine with the first-order mean's;
- the readout bias's component of each mean, with its standard error over the problems (the one weight that carries
  95% of the first-order mean: do the two estimators agree on which way it should go?);
- the cosine between the ES means of two disjoint halves of the problems (how much of the ES mean is signal);
- the same for two re-weightings of the same runs (each problem's pairs from the recorded scores, the directions
  regenerated from the seed): "clipped", each pair's difference clipped to 3 x the median |difference| of its problem
  (heavy tails: a few pairs whose runs went chaotic), and "ranks", the centred ranks of the problem's 2 x PAIRS
  meta-losses in place of the losses (OpenAI-ES fitness shaping; the scale of a problem's losses drops out).
Each estimate is written as OUT_PREFIX-{raw,clipped,ranks}.pt in meta_grads.py's format, for session26/line.py.
"""

import sys

import torch

from learned_optim.metatrain import MetaTrainConfig, train_seed

COS = torch.nn.functional.cosine_similarity


def directions(seed, shapes):
    generator = torch.Generator().manual_seed(seed)
    out = []
    while True:
        out.append(torch.cat([torch.randn(shape, generator=generator).reshape(-1) for shape in shapes]).double())
        yield out[-1]


def reweighted(scores, seed, shapes, sigma, how):
    """One problem's estimate from its pairs' meta-losses, re-weighted by ``how``."""
    pairs = torch.tensor(scores, dtype=torch.float64)  # (pairs, 2): L(φ+σε), L(φ−σε)
    finite = torch.isfinite(pairs).all(1)
    diff = (pairs[:, 0] - pairs[:, 1]) / (2 * sigma)
    if how == "clipped":
        bound = 3 * diff[finite].abs().median()
        diff = diff.clamp(-bound, bound)
    elif how == "ranks":  # centred ranks in [-0.5, 0.5] of all the problem's finite runs' meta-losses
        values = pairs[finite].reshape(-1)
        ranks = torch.empty_like(values)
        ranks[values.argsort()] = torch.arange(len(values), dtype=torch.float64)
        ranks = ranks / max(1, len(values) - 1) - 0.5
        diff = torch.zeros(len(pairs), dtype=torch.float64)
        diff[finite] = ranks.view(-1, 2)[:, 0] - ranks.view(-1, 2)[:, 1]
    total, eps = 0.0, directions(seed, shapes)
    for k in range(len(pairs)):
        e = next(eps)
        if finite[k]:
            total = total + diff[k] * e
    return total / finite.sum()


def main(prefix, first_order, paths):
    fo = torch.load(first_order)
    es = [torch.load(p) for p in paths]
    names, shapes, sigma = es[0]["names"], es[0]["shapes"], es[0]["sigma"]
    assert all(d["sha256"] == fo["sha256"] for d in es), "gradients of another rule"
    config = MetaTrainConfig(task="mixture", steps=100, unroll=100, runs_per_epoch=1000, seed=7)
    fo_rows = {int(s): g for s, g in zip(fo["seeds"], fo["grads"].double())}
    estimates = {"raw": [], "clipped": [], "ranks": []}
    seeds, fo_g, members, sums = [], [], [], []
    for d in es:
        by_seed = {int(s): i for i, s in enumerate(d["seeds"])}
        for run, scores in zip(d["runs"], d["scores"]):
            seed = train_seed(config, 0, run)
            if seed not in by_seed or seed not in fo_rows:
                continue
            i = by_seed[seed]
            estimates["raw"].append(d["grads"][i].double())
            again = reweighted(scores, seed, shapes, sigma, "raw")  # the directions regenerated as es_gradient drew them
            assert (again - estimates["raw"][-1]).norm() <= 1e-5 * again.norm(), "directions not reproduced"
            estimates["clipped"].append(reweighted(scores, seed, shapes, sigma, "clipped"))
            estimates["ranks"].append(reweighted(scores, seed, shapes, sigma, "ranks"))
            seeds.append(seed), fo_g.append(fo_rows[seed]), members.append(int(d["members"][i])), sums.append(float(d["sums"][i]))
    fo_g = torch.stack(fo_g)
    n = len(seeds)
    sizes = [int(torch.tensor(s).prod()) if len(s) else 1 for s in shapes]
    bias = sum(sizes) - 1  # readout.b is the last weight
    assert names[-1] == "readout.b"
    fo_mean = fo_g.mean(0)
    print(f"{n} problems of {es[0]['family']} matched; ES: {es[0]['pairs']} pairs per problem, sigma {sigma:g}")
    print(f"first order: |mean| {fo_mean.norm():.4g}, mean |g_i| {fo_g.norm(dim=1).mean():.4g}; readout bias "
          f"{fo_mean[bias]:+.4g} ± {fo_g[:, bias].std() / n ** 0.5:.3g}")
    generator = torch.Generator().manual_seed(0)
    for how, rows in estimates.items():
        g = torch.stack(rows)
        mean = g.mean(0)
        print(f"\nES {how}: |mean| {mean.norm():.4g}, mean |g_i| {g.norm(dim=1).mean():.4g}; readout bias {mean[bias]:+.4g} ± "
              f"{g[:, bias].std() / n ** 0.5:.3g}")
        print(f"  cosine with the first-order mean: all weights {COS(mean, fo_mean, dim=0):+.3f}, without the readout "
              f"bias {COS(mean[:bias], fo_mean[:bias], dim=0):+.3f}; sign agreement without it "
              f"{(mean[:bias].sign() == fo_mean[:bias].sign()).double().mean():.3f}")
        halves = []
        for _ in range(20):
            order = torch.randperm(n, generator=generator)
            halves.append(COS(g[order[: n // 2]].mean(0)[:bias], g[order[n // 2 :]].mean(0)[:bias], dim=0).item())
        print(f"  two disjoint halves of {n // 2} problems, without the readout bias: cosine {sum(halves) / 20:+.3f}")
        offset = 0
        for name, size in zip(names, sizes):
            a, b = mean[offset : offset + size], fo_mean[offset : offset + size]
            t = a / (g[:, offset : offset + size].std(0) / n ** 0.5 + 1e-30)
            print(f"  {name:14s} share of |mean|^2 {a.pow(2).sum() / mean.pow(2).sum():.3f}, |t| > 2 in "
                  f"{(t.abs() > 2).double().mean():.2f}, cosine with first order {COS(a, b, dim=0).item() if size > 1 else float(a.sign() * b.sign()):+.3f}")
            offset += size
        torch.save({**{k: es[0][k] for k in ("weights", "sha256", "family", "names", "shapes", "pairs", "sigma")},
                    "grads": g.float(), "seeds": torch.tensor(seeds), "members": torch.tensor(members),
                    "sums": torch.tensor(sums), "estimator": f"es-{how}"}, f"{prefix}-{how}.pt")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
