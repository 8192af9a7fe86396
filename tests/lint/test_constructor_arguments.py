"""MG101 per constructor call: a project class whose Dropout/BatchNorm exist only by its
`__init__`'s arguments has none when the call that builds the model leaves them switched off.
Anything the index cannot show (a run-time value, a splat, an unknown builder) keeps the finding."""

import os
import textwrap

import pytest

from modeguard.lint.engine import Selection, lint_source
from tests.lint.projects import check, write

PROJECT = """\
import torch
import torch.nn as nn


def resolve_norm(query, dim):
    if not isinstance(query, str):
        return query
    return nn.BatchNorm1d(dim)


def make_norm(query, dim):
    return resolve_norm(query, dim)


class Gnn(nn.Module):
    def __init__(self, dim, layers, out=None, dropout=0.0, norm=None, **kwargs):
        super().__init__()
        self.drop = nn.Dropout(p=dropout)
        self.norm = make_norm(norm, dim) or nn.Identity()
        self.lin = nn.Linear(dim, dim)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return self.drop(self.norm(self.lin(x)))


class Gcn(Gnn):
    pass


model = BUILD
optimizer = torch.optim.Adam(model.parameters())
for x, y in loader:
    loss = (model(x) - y).pow(2).mean()
    loss.backward()
    optimizer.step()
with torch.no_grad():
    print(model(test_x))
"""


def mg101(build_or_source: str) -> list:
    source = PROJECT.replace("BUILD", build_or_source) if "\n" not in build_or_source else build_or_source
    return [f for f in lint_source("train.py", source, Selection(frozenset({"MG101"}))) if f.code == "MG101"]


@pytest.mark.parametrize("build", [
    "Gcn(args.dim, args.layers)",
    "Gcn(args.dim, args.layers, args.out)",
    "Gcn(16, 2, dropout=0.0, norm=None)",
    "Gcn(16, 2, None, 0)",
    "Gcn(16, 2, heads=4).to(device)",
])
def test_arguments_that_leave_every_mode_layer_off_are_silent(build):
    assert mg101(build) == []


@pytest.mark.parametrize("build", [
    "Gcn(16, 2, dropout=0.5)",
    "Gcn(16, 2, None, 0.1)",
    "Gcn(16, 2, norm='batch')",
    "Gcn(16, 2, dropout=args.dropout)",
    "Gcn(16, 2, norm=args.norm)",
    "Gcn(16, 2, **config)",
    "Gcn(*sizes)",
    "Gcn(16, 2, heads=args.heads)",
])
def test_arguments_that_may_switch_a_mode_layer_on_keep_the_finding(build):
    found = mg101(build)
    assert len(found) == 1 and "training mode" in found[0].message


def test_a_layer_not_switched_by_the_constructor_keeps_the_finding():
    source = PROJECT.replace("BUILD", "Gcn(16, 2)").replace("        self.lin = nn.Linear(dim, dim)\n", "        self.lin = nn.Sequential(nn.Linear(dim, dim), nn.BatchNorm1d(dim))\n")
    assert len(mg101(source)) == 1


def test_a_builder_that_may_build_for_none_keeps_the_finding():
    source = PROJECT.replace("BUILD", "Gcn(16, 2)").replace("    if not isinstance(query, str):\n        return query\n", "    query = query or 'batch'\n")
    assert len(mg101(source)) == 1


MODEL = """\
    from torch import nn


    class Gnn(nn.Module):
        def __init__(self, dim, dropout={default}):
            super().__init__()
            self.lin = nn.Linear(dim, dim)
            self.drop = nn.Dropout(dropout)

        def forward(self, x):
            return self.drop(self.lin(x))
"""

TRAIN = """\
    import torch

    from pkg.model import Gnn


    def main(loader, test_x):
        model = Gnn(16)
        optimizer = torch.optim.Adam(model.parameters())
        for x, y in loader:
            (model(x) - y).pow(2).mean().backward()
            optimizer.step()
        with torch.no_grad():
            return model(test_x)
"""


def test_the_class_in_another_file_and_the_cache_follows_its_defaults(tmp_path):
    project, cache = tmp_path / "project", tmp_path / "cache"
    write(project, {"pkg/__init__.py": "", "pkg/model.py": MODEL.format(default="0.0"), "pkg/train.py": TRAIN})
    assert check(project, cache) == []
    (project / "pkg/model.py").write_text(textwrap.dedent(MODEL.format(default="0.5")))
    os.utime(project / "pkg/model.py", ns=(1, 1))
    [(path, row, code, message)] = check(project, cache)  # train.py itself did not change
    assert (path, row, code) == ("pkg/train.py", 13, "MG101")


BRANCHES = """\
import torch
import torch.nn as nn


class Block(nn.Module):
    def __init__(self, dim, use_bn=True, drop=None):
        super().__init__()
        self.lin = nn.Linear(dim, dim)
        if use_bn:
            self.bn = nn.BatchNorm1d(dim)
        if drop is None:
            self.drop = nn.Identity()
        else:
            self.drop = nn.Dropout(drop)

    def forward(self, x):
        return self.drop(self.lin(x))


SUBCLASS
model = BUILD
for x, y in loader:
    (model(x) - y).pow(2).mean().backward()
    optimizer.step()
with torch.no_grad():
    print(model(test_x))
"""


@pytest.mark.parametrize("build,flagged", [
    ("Block(8, use_bn=False)", False),
    ("Block(8, False, None)", False),
    ("Block(8)", True),  # use_bn defaults to True
    ("Block(8, use_bn=False, drop=0.2)", True),
    ("Block(8, use_bn=args.bn)", True),
])
def test_layers_built_in_one_branch_of_an_if_on_a_parameter(build, flagged):
    source = BRANCHES.replace("SUBCLASS\n", "").replace("BUILD", build)
    assert bool(mg101(source)) is flagged


def test_a_subclass_with_its_own_init_binds_nothing_for_its_base():
    subclass = "class Wide(Block):\n    def __init__(self, dim, use_bn=False):\n        super().__init__(dim, use_bn=True)\n\n\n"
    source = BRANCHES.replace("SUBCLASS\n", subclass).replace("BUILD", "Wide(8)")
    assert len(mg101(source)) == 1


@pytest.mark.parametrize("forward,flagged", [
    ("return F.dropout(self.lin(x), 0.3, training=self.training)", True),
    ("return self.lin(x) * (0.5 if self.training else 1.0)", True),
    ("return F.dropout(self.lin(x), 0.3)", True),
    ("assert not self.training\n        return self.lin(x)", False),
])
def test_mode_dependent_code_the_arguments_do_not_switch_keeps_the_finding(forward, flagged):
    source = PROJECT.replace("BUILD", "Gcn(16, 2)").replace(
        "    def forward(self, x):\n        for layer in self.layers:\n            x = layer(x)\n        return self.drop(self.norm(self.lin(x)))\n",
        f"    def forward(self, x):\n        {forward}\n",
    ).replace("import torch.nn as nn\n", "import torch.nn as nn\nimport torch.nn.functional as F\n")
    assert bool(mg101(source)) is flagged
