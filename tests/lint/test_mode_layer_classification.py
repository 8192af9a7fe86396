"""Which layers make a model mode-dependent: InstanceNorm without running statistics, GroupNorm
and LayerNorm behave the same in both modes, so a model built only from them needs no eval()."""

import pytest

from modeguard.lint.engine import Selection, lint_source

GENERATOR = """\
import torch
import torch.nn as nn


def conv_inorm_relu(cin, cout):
    layers = [nn.ReflectionPad2d(1)]
    layers += [nn.Conv2d(cin, cout, 3), NORM, nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class Generator(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = conv_inorm_relu(3, 8)

    def forward(self, x):
        return self.body(x)


generator = Generator()
optimizer = torch.optim.Adam(generator.parameters())
for batch in loader:
    loss = generator(batch).mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

with torch.no_grad():
    fake = generator(sample)
"""


def mg101(norm: str) -> list:
    return [f for f in lint_source("gan.py", GENERATOR.replace("NORM", norm), Selection(frozenset({"MG101"}))) if f.code == "MG101"]


@pytest.mark.parametrize("norm", [
    "nn.InstanceNorm2d(cout)",
    "nn.InstanceNorm2d(cout, affine=False, track_running_stats=False)",
    "nn.GroupNorm(2, cout)",
    "nn.LayerNorm([cout, 8, 8])",
])
def test_a_model_of_mode_invariant_norms_needs_no_eval(norm):
    assert mg101(norm) == []


@pytest.mark.parametrize("norm", ["nn.BatchNorm2d(cout)", "nn.InstanceNorm2d(cout, track_running_stats=True)"])
def test_a_model_with_running_statistics_is_flagged(norm):
    assert len(mg101(norm)) == 1


def test_a_factory_wrapping_layers_it_is_given_is_not_judged_by_its_own_calls():
    source = GENERATOR.replace(
        "def conv_inorm_relu(cin, cout):\n    layers = [nn.ReflectionPad2d(1)]\n    layers += [nn.Conv2d(cin, cout, 3), NORM, nn.ReLU(inplace=True)]\n    return nn.Sequential(*layers)",
        "def norm_block(layers):\n    return nn.Sequential(*layers)",
    ).replace("conv_inorm_relu(3, 8)", "norm_block(parts)")
    assert "norm_block(parts)" in source and "conv_inorm_relu" not in source
    assert len([f for f in lint_source("gan.py", source, Selection(frozenset({"MG101"}))) if f.code == "MG101"]) == 1
