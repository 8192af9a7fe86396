"""The audit's closed-form BatchNorm divergence equals running the layer in both modes."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from modeguard.runtime.batchnorm_health import ChannelStats, mode_divergence


@settings(max_examples=50, deadline=None)
@given(
    channels=st.integers(1, 6),
    batch=st.integers(2, 6),
    spatial=st.integers(1, 4),
    shift=st.floats(-3, 3),
    scale=st.floats(0.1, 5),
    affine=st.booleans(),
    seed=st.integers(0, 10_000),
)
def test_closed_form_matches_forward(channels, batch, spatial, shift, scale, affine, seed):
    torch.manual_seed(seed)
    bn = nn.BatchNorm2d(channels, affine=affine)
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.2, 3)
        if affine:
            bn.weight.normal_()
            bn.bias.normal_()
    x = torch.randn(batch, channels, spatial, spatial) * scale + shift
    max_abs, rel = mode_divergence(bn, ChannelStats.of(x))
    with torch.no_grad():
        eval_out = bn.eval()(x)
        train_out = bn.train()(x)  # updates the running statistics: measured after this
    expected = float((train_out - eval_out).abs().max())
    assert abs(max_abs - expected) <= 1e-4 * max(1.0, expected)
    scale = max(float(eval_out.abs().max()), float(train_out.abs().max()))
    assert abs(rel - expected / scale) <= 1e-3 * max(1.0, rel)
