"""Triton kernel settings on this GPU: ms per call of triton_step.lstm_rule_step for the default rule (2x20 LSTM)."""
import time, torch
from learned_optim import load_weights, triton_step
w = load_weights("default"); cfg = w.config
packed = triton_step.pack(w.theta, cfg, "cuda")
def t(fn, r=10):
    fn(); torch.cuda.synchronize(); ts = []
    for _ in range(r):
        a = time.perf_counter(); fn(); torch.cuda.synchronize(); ts.append(time.perf_counter() - a)
    return sorted(ts)[len(ts) // 2]
for n in (10**6, 10**7, 10**8):
    g = torch.randn(n, device="cuda") * 1e-3
    st = [torch.zeros(n, cfg.hidden_size, device="cuda") for _ in cfg.state_names]
    best = None
    for prec in ("ieee", "tf32x3", "tf32"):
        for block, warps in ((16, 4), (32, 8), (64, 16), (32, 4), (64, 8), (128, 8), (128, 16)):
            if prec == "ieee" and block // warps > 4: continue
            try:
                s = t(lambda: triton_step.lstm_rule_step(g, st, packed, cfg, 1.0, block=block, num_warps=warps, input_precision=prec), 5 if n == 10**8 else 10)
            except Exception as e:
                print(n, prec, block, warps, "error", type(e).__name__, str(e)[:80]); continue
            print(f"n={n:.0e} {prec:7s} block={block:4d} warps={warps:2d}: {s*1e3:8.3f} ms", flush=True)
            if best is None or s < best[0]: best = (s, prec, block, warps)
    print("BEST", n, best, flush=True)
    del g, st
