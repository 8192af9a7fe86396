"""The audit's closed-form BatchNorm divergence and health, computed for several layers at once,
equal running each layer in both modes and the per-layer medians."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from modeguard.runtime.batchnorm_health import ChannelStats, healths_of, mode_divergences

layer_cases = st.lists(
    st.tuples(
        st.integers(1, 6),  # channels
        st.floats(-3, 3),  # input shift
        st.floats(0.1, 5),  # input scale
        st.booleans(),  # affine
        st.sampled_from([1e-5, 1e-3]),  # eps
    ),
    min_size=1,
    max_size=4,
)


def random_layer(channels, affine, eps):
    bn = nn.BatchNorm2d(channels, affine=affine, eps=eps)
    with torch.no_grad():
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.2, 3)
        if affine:
            bn.weight.normal_()
            bn.bias.normal_()
    return bn


@settings(max_examples=50, deadline=None)
@given(layers=layer_cases, batch=st.integers(2, 6), spatial=st.integers(1, 4), seed=st.integers(0, 10_000))
def test_closed_form_matches_forward(layers, batch, spatial, seed):
    torch.manual_seed(seed)
    cases = []
    for channels, shift, scale, affine, eps in layers:
        cases.append((random_layer(channels, affine, eps), torch.randn(batch, channels, spatial, spatial) * scale + shift))
    results = mode_divergences([(bn, ChannelStats.of(x)) for bn, x in cases])
    for (bn, x), (max_abs, rel) in zip(cases, results):
        with torch.no_grad():
            eval_out = bn.eval()(x)
            train_out = bn.train()(x)  # updates the running statistics: measured after this
        expected = float((train_out - eval_out).abs().max())
        assert abs(max_abs - expected) <= 1e-4 * max(1.0, expected)
        scale = max(float(eval_out.abs().max()), float(train_out.abs().max()))
        assert abs(rel - expected / scale) <= 1e-3 * max(1.0, rel)


@settings(max_examples=30, deadline=None)
@given(layers=layer_cases, batch=st.integers(2, 4), seed=st.integers(0, 10_000))
def test_health_medians_match_each_layer_alone(layers, batch, seed):
    """Each layer's median mean shift and variance ratio, as `Tensor.median` gives them on that
    layer's channels alone, whatever the other layers' channel counts."""
    torch.manual_seed(seed)
    named, observed, expected = [], {}, {}
    for i, (channels, shift, scale, affine, eps) in enumerate(layers):
        bn = random_layer(channels, affine, eps)
        stats = ChannelStats.of(torch.randn(batch, channels, 3, 3) * scale + shift)
        named.append((f"bn{i}", bn))
        observed[f"bn{i}"] = stats
        std = (bn.running_var + eps).sqrt()
        expected[f"bn{i}"] = (
            float(((stats.mean - bn.running_mean).abs() / std).median()),
            float(((stats.var + eps) / (bn.running_var + eps)).median()),
        )
    for health in healths_of(named, observed):
        assert (health.mean_shift, health.var_ratio) == expected[health.module]
        assert not health.never_calibrated


def test_health_flags_uncalibrated_layers_and_nan_inputs():
    fresh = nn.BatchNorm2d(3)  # mean 0, var 1, nothing tracked
    calibrated = random_layer(5, True, 1e-5)
    calibrated.num_batches_tracked += 1
    nan_input = ChannelStats.of(torch.tensor([[[[1.0]], [[float("nan")]]], [[[2.0]], [[0.0]]]]))
    healths = healths_of(
        [("fresh", fresh), ("calibrated", calibrated), ("nan", nn.BatchNorm2d(2))],
        {"calibrated": ChannelStats.of(torch.randn(2, 5, 2, 2)), "nan": nan_input},
    )
    assert [h.never_calibrated for h in healths] == [True, False, True]
    assert healths[0].mean_shift is None  # no observed input
    assert healths[1].mean_shift is not None
    assert healths[2].mean_shift != healths[2].mean_shift  # NaN, as Tensor.median gives it
