# The C++ kernel's tanh (csrc/rule_step.cpp): x P(x^2) / Q(x^2), P and Q cubic, Q(0) = 1, on [0, 7] (odd, clamped
# at +-7 beyond). Linearized least squares (x P - tanh(x) Q = 0, weighted by 1 / Q of the previous iteration),
# reweighted towards the largest errors (Lawson); then the float32 error of the coefficients as the kernel
# evaluates them (Horner in x^2), against float64 tanh on 2M points of [-30, 30].
#   python benchmarks/results/step_cost_tanh/fit_tanh.py > benchmarks/results/step_cost_tanh/fit_tanh.out
import numpy as np

CLAMP, TERMS = 7.0, 4
x = np.linspace(0, CLAMP, 40000)
y, x2 = np.tanh(x), x * x
weight, q = np.ones_like(x), np.ones_like(x)
for _ in range(60):
    design = np.concatenate([np.stack([x * x2**i for i in range(TERMS)], 1),
                             -np.stack([y * x2**i for i in range(1, TERMS)], 1)], 1)
    w = weight / q
    sol, *_ = np.linalg.lstsq(design * w[:, None], y * w, rcond=None)
    P, Q = sol[:TERMS], np.concatenate([[1.0], sol[TERMS:]])
    q = sum(Q[i] * x2**i for i in range(TERMS))
    err = np.abs(x * sum(P[i] * x2**i for i in range(TERMS)) / q - y)
    weight = weight * (1 + 0.5 * err / err.max())
P32, Q32 = P.astype(np.float32), Q.astype(np.float32)
print("P, coefficients of x^0, x^2, x^4, x^6 (numerator x P(x^2)):", [float(v) for v in P32])
print("Q, coefficients of x^0, x^2, x^4, x^6:", [float(v) for v in Q32])
t = np.linspace(-30, 30, 2_000_001).astype(np.float32)
tc = np.clip(t, -CLAMP, CLAMP).astype(np.float32)
t2 = (tc * tc).astype(np.float32)
num, den = P32[-1], Q32[-1]
for c in P32[-2::-1]:
    num = (num * t2 + c).astype(np.float32)
for c in Q32[-2::-1]:
    den = (den * t2 + c).astype(np.float32)
approx = (num * tc / den).astype(np.float32)
error = np.abs(approx.astype(np.float64) - np.tanh(t.astype(np.float64)))
print(f"float32 max |error| {error.max():.3e} at x = {t[error.argmax()]:.4f}; max |value| {np.abs(approx).max():.8f}")
