"""How much of a single problem's meta-gradient is signal: statistics of meta_grads.py's per-problem gradients.

    PYTHONPATH=. python .../session26/snr.py GRADS.pt [GRADS.pt ...]

Prints, over the N problems' gradients g_i (one whole 100-step run each):
- rho = |E g|^2 / E|g - E g|^2, the signal-to-noise ratio of one problem's gradient (both terms estimated without
  bias from the sample), and 1 / rho, the number of problems whose averaged gradient has as much noise as signal;
- the cosine between the means of two disjoint halves of k problems each, for growing k (0: the halves do not agree
  on a direction; near 1: k problems estimate it);
- the fraction of weights on which the two halves' means agree in sign (0.5: chance), which is what an Adam step,
  close to a sign step early on, acts on;
- per tensor of the rule, the fraction of its weights whose mean gradient is more than two standard errors from 0
  (t = mean / (sd / sqrt N); about 0.05 when a tensor's gradient is noise alone), and its share of |mean g|^2;
- the same per member of the family, where a member has at least 8 problems.
"""

import sys

import torch


def stats(g: torch.Tensor) -> dict:
    n = g.shape[0]
    mean = g.mean(0)
    noise = ((g - mean) ** 2).sum(1).sum() / (n - 1)  # E|g - Eg|^2, unbiased
    signal = (mean.pow(2).sum() - noise / n).item()  # |Eg|^2, unbiased
    return {"n": n, "rho": signal / noise.item(), "mean_norm": mean.norm().item(), "sample_norm": g.norm(dim=1).mean().item()}


def halves(g: torch.Tensor, generator: torch.Generator, repeats: int = 20) -> dict:
    n = g.shape[0]
    out = {}
    k = 1
    while 2 * k <= n:
        cos, sign = [], []
        for _ in range(repeats):
            order = torch.randperm(n, generator=generator)
            a, b = g[order[:k]].mean(0), g[order[k : 2 * k]].mean(0)
            cos.append(torch.nn.functional.cosine_similarity(a, b, dim=0).item())
            sign.append((a.sign() == b.sign()).float().mean().item())
        out[k] = (sum(cos) / repeats, sum(sign) / repeats)
        k *= 2
    return out


def main(paths):
    data = [torch.load(p) for p in paths]
    g = torch.cat([d["grads"] for d in data])
    members = torch.cat([d["members"] for d in data])
    sums = torch.cat([d["sums"] for d in data])
    print(f"{data[0]['weights']} on {data[0]['family']}: {g.shape[0]} problems, {g.shape[1]} rule weights")
    s = stats(g)
    print(f"all: rho {s['rho']:.4f} (1/rho {1 / s['rho'] if s['rho'] > 0 else float('inf'):.0f} problems), "
          f"|mean g| {s['mean_norm']:.3g}, mean |g_i| {s['sample_norm']:.3g}")
    generator = torch.Generator().manual_seed(0)
    for k, (cos, sign) in halves(g, generator).items():
        print(f"  two halves of {k:3d}: cosine {cos:+.3f}, sign agreement {sign:.3f}")
    n = g.shape[0]
    t = g.mean(0) / (g.std(0) / n ** 0.5 + 1e-30)
    offset, total = 0, g.mean(0).pow(2).sum().item()
    for name, shape in zip(data[0]["names"], data[0]["shapes"]):
        size = int(torch.tensor(shape).prod()) if len(shape) else 1
        piece, mean = t[offset : offset + size], g.mean(0)[offset : offset + size]
        print(f"  {name:28s} {size:5d} weights: |t| > 2 in {(piece.abs() > 2).float().mean():.2f}, "
              f"share of |mean g|^2 {mean.pow(2).sum().item() / total:.3f}")
        offset += size
    for m in sorted(set(members.tolist())):
        pick = members == m
        if pick.sum() < 8:
            continue
        s = stats(g[pick])
        cos = halves(g[pick], generator)
        k = max(cos)
        print(f"member {m}: n {s['n']}, mean sum of losses {sums[pick].mean():.1f}, rho {s['rho']:+.4f}, |mean g| "
              f"{s['mean_norm']:.3g}, mean |g_i| {s['sample_norm']:.3g}, halves of {k}: cosine {cos[k][0]:+.3f}")


if __name__ == "__main__":
    main(sys.argv[1:])
