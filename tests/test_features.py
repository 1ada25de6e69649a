import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from learned_optim.features import log_sign, num_features, preprocess


def test_known_values():
    p = 10.0
    g = torch.tensor([1.0, -math.exp(-5.0), 0.0, 1e-6, -1e-6, math.exp(10.0)])
    f = log_sign(g, p)
    expected = torch.tensor(
        [[0.0, 1.0], [-0.5, -1.0], [-1.0, 0.0], [-1.0, 1e-6 * math.exp(10)], [-1.0, -1e-6 * math.exp(10)], [1.0, 1.0]]
    )
    torch.testing.assert_close(f, expected, rtol=1e-5, atol=1e-6)


@given(p=st.floats(1.0, 20.0))
def test_branches_meet_at_threshold(p):
    # just above and below e^-p the two branches give (nearly) the same features
    t = math.exp(-p)
    above = log_sign(torch.tensor([t * (1 + 1e-6)], dtype=torch.float64), p)
    below = log_sign(torch.tensor([t * (1 - 1e-6)], dtype=torch.float64), p)
    torch.testing.assert_close(above, below, rtol=0, atol=1e-5)


@given(st.lists(st.floats(-1e30, 1e30, allow_nan=False), min_size=1, max_size=50))
def test_features_bounded_and_signed(values):
    g = torch.tensor(values, dtype=torch.float64)
    f = log_sign(g, 10.0)
    assert f.shape == (len(values), 2)
    assert torch.isfinite(f).all()
    assert (f[:, 0] >= -1).all()
    assert (f[:, 1].abs() <= 1 + 1e-12).all()
    # the second feature carries the gradient's sign
    assert (torch.sign(f[:, 1]) == torch.sign(g)).all()


@given(st.floats(-100, 100, allow_nan=False), st.floats(-100, 100, allow_nan=False))
def test_monotone_in_magnitude(a, b):
    # larger |g| never gives a smaller first feature
    fa, fb = log_sign(torch.tensor([a], dtype=torch.float64)), log_sign(torch.tensor([b], dtype=torch.float64))
    if abs(a) <= abs(b):
        assert fa[0, 0] <= fb[0, 0] + 1e-12


def test_none_and_invalid():
    g = torch.randn(7)
    assert preprocess(g, "none").shape == (7, 1)
    assert num_features("log_sign") == 2 and num_features("none") == 1
    with pytest.raises(ValueError, match="Invalid preprocess: 'cube'"):
        preprocess(g, "cube")
