"""Whole-project analysis: findings that need more than one file, with the path as evidence,
and a cache that re-checks the files that depend on a changed one."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import modeguard
from modeguard.lint import runner
from modeguard.lint.engine import lint_source
from modeguard.lint.engine import check as runner_check

from tests.lint.projects import SELECTION, check, write


EVALUATE = """\
    import torch


    def evaluate(model, loader):
        with torch.no_grad():
            return [model(x) for x in loader]
"""

TRAIN = """\
    from evaluation import evaluate
    from models import Net


    def main(loader, optimizer):
        model = Net()
        for x, y in loader:
            model(x).sum().backward()
            optimizer.step()
        {before}evaluate(model, loader)
"""

NET = """\
    import torch.nn as nn


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)
            self.drop = nn.Dropout(0.5)
"""


def test_helper_in_another_file_called_after_training(tmp_path):
    write(tmp_path, {"evaluation.py": EVALUATE, "train.py": TRAIN.format(before=""), "models.py": NET})
    [(path, row, code, message)] = check(tmp_path)
    assert (path, row, code) == ("evaluation.py", 6, "MG101")
    assert "evaluate() is called from" in message and "train.py:10" in message and "backward()" in message


def test_caller_that_switches_to_eval_is_silent(tmp_path):
    write(tmp_path, {"evaluation.py": EVALUATE, "train.py": TRAIN.format(before="model.eval()\n        "), "models.py": NET})
    assert check(tmp_path) == []


def test_helper_nobody_calls_is_silent(tmp_path):
    write(tmp_path, {"evaluation.py": EVALUATE, "models.py": NET})
    assert check(tmp_path) == []


def test_model_without_dropout_or_batchnorm_is_silent(tmp_path):
    plain = NET.replace("        self.drop = nn.Dropout(0.5)\n", "")
    write(tmp_path, {"evaluation.py": EVALUATE, "train.py": TRAIN.format(before=""), "models.py": plain})
    assert check(tmp_path) == []


FROZEN_ELSEWHERE = """\
    import torchvision

    resnet = torchvision.models.resnet18()
    for p in resnet.parameters():
        p.requires_grad = False
"""

TEST_LOOP = """\
    from models import Net

    resnet = Net()
    for x, y in train_loader:
        loss_fn(resnet(x), y).backward()
        optimizer.step()
    for x, y in test_loader:
        print(resnet(x).argmax(1))
"""


def test_a_name_frozen_in_an_unrelated_script_is_another_model(tmp_path):
    write(tmp_path, {"captioning.py": FROZEN_ELSEWHERE, "classify.py": TEST_LOOP, "models.py": NET})
    assert [(path, row, code) for path, row, code, _ in check(tmp_path)] == [("classify.py", 8, "MG101")]


def test_a_name_frozen_in_an_imported_file_stays_frozen(tmp_path):
    frozen_here = textwrap.dedent(FROZEN_ELSEWHERE) + "\n\ndef build():\n    return resnet\n"
    write(tmp_path, {"captioning.py": frozen_here, "classify.py": "import captioning\n" + textwrap.dedent(TEST_LOOP), "models.py": NET})
    assert check(tmp_path) == []


BACKEND = """\
    import torch
    from torch import nn


    def load(path):
        return torch.load(path, weights_only=False)


    class Backend(nn.Module):
        def __init__(self, path, jit):
            super().__init__()
            if jit:
                model = torch.jit.load(path).eval()
            else:
                model = load(path)
            self.model = model
            self.drop = nn.Dropout(0.1)

        def forward(self, x):
            return self.drop(self.model(x))
"""

DETECT = """\
    import torch
    from backend import Backend

    model = Backend("w.pt", jit=False)
    with torch.no_grad():
        print(model(torch.zeros(1)))
"""


def test_a_loader_class_that_puts_what_it_loads_in_eval_mode_is_silent(tmp_path):
    write(tmp_path, {"backend.py": BACKEND, "detect.py": DETECT})
    assert check(tmp_path) == []
    write(tmp_path, {"backend.py": BACKEND.replace("torch.jit.load(path).eval()", "load(path)")})
    assert [(path, row, code) for path, row, code, _ in check(tmp_path)] == [("detect.py", 6, "MG101")]


PARTS = """\
    from torch import nn


    class double_conv(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(c, c, 3), nn.BatchNorm2d(c))
"""

UNET = """\
    from torch import nn
    from .parts import *


    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.inc = double_conv(3)
"""

PREDICT = """\
    import torch
    from unet.model import UNet


    def predict_img(net, img):
        with torch.no_grad():
            return net(img)


    if __name__ == "__main__":
        net = UNet()
        net.load_state_dict(torch.load("unet.pth", weights_only=True))
        predict_img(net, image)
"""


def test_layers_reached_through_a_star_import_of_lower_case_classes(tmp_path):
    files = {"unet/__init__.py": "", "unet/parts.py": PARTS, "unet/model.py": UNET, "predict.py": PREDICT}
    write(tmp_path, files)
    [(path, row, code, message)] = check(tmp_path)
    assert (path, row, code) == ("predict.py", 7, "MG101") and "predict.py:13" in message
    write(tmp_path, {"unet/parts.py": PARTS.replace(", nn.BatchNorm2d(c)", "")})
    assert check(tmp_path) == []


def test_factory_in_another_file_that_returns_eval_mode(tmp_path):
    write(tmp_path, {
        "models.py": "import torch\n" + textwrap.dedent(NET) + (
            "\n\ndef load_model(path):\n    model = Net()\n"
            "    model.load_state_dict(torch.load(path, weights_only=True))\n    model.eval()\n    return model\n"
        ),
        "infer.py": """\
            import torch
            from models import load_model


            def run(path, x):
                model = load_model(path)
                with torch.no_grad():
                    return model(x)
        """,
    })
    assert check(tmp_path) == []


def test_validation_helper_imported_from_another_module_in_the_loop(tmp_path):
    write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/validation.py": """\
            import torch


            def validate(model, loader):
                model.eval()
                with torch.no_grad():
                    return sum(model(x).sum() for x in loader)
        """,
        "pkg/train.py": """\
            from .validation import validate


            def fit(model, loader, optimizer):
                model.train()
                for epoch in range(10):
                    for x in loader:
                        model(x).sum().backward()
                        optimizer.step()
                    validate(model, loader)
        """,
    })
    [(path, row, code, message)] = check(tmp_path)
    assert (path, row, code) == ("pkg/train.py", 10, "MG102")
    assert "validate()" in message and "validation.py:5" in message


def test_structural_rules_see_module_classes_defined_in_other_files(tmp_path):
    write(tmp_path, {
        "base.py": "import torch.nn as nn\n\n\nclass Block(nn.Module):\n    pass\n",
        "head.py": """\
            import torch.nn.functional as F
            from base import Block


            class Head(Block):
                def __init__(self):
                    super().__init__()
                    self.blocks = [Block() for _ in range(3)]

                def run(self, x):
                    return F.dropout(x, 0.1)
        """,
    })
    codes = [code for _, _, code, _ in check(tmp_path)]
    assert codes == ["MG107", "MG105"]


def test_evaluator_class_built_with_a_training_mode_model(tmp_path):
    write(tmp_path, {
        "models.py": NET,
        "predictor.py": """\
            import torch


            class Predictor:
                def __init__(self, model):
                    self.model = model

                def __call__(self, x):
                    with torch.no_grad():
                        return self.model(x)
        """,
        "main.py": """\
            from models import Net
            from predictor import Predictor

            net = Net()
            predict = Predictor(net)
            print(predict(1))
        """,
    })
    [(path, row, code, message)] = check(tmp_path)
    assert (path, code) == ("predictor.py", "MG101") and "main.py:5" in message


def test_cache_rechecks_callers_when_a_callee_changes(tmp_path):
    project, cache = tmp_path / "project", tmp_path / "cache"
    validation = """\
        import torch


        def validate(model, loader):
            model.eval()
            with torch.no_grad():
                out = [model(x) for x in loader]
            {restore}return out
    """
    write(project, {
        "validation.py": validation.format(restore=""),
        "train.py": """\
            from validation import validate


            def fit(model, loader, optimizer):
                for epoch in range(3):
                    model.train()
                    for x in loader:
                        model(x).sum().backward()
                        optimizer.step()
                    validate(model, loader)
                    for x in loader:
                        model(x).sum().backward()
        """,
    })
    first = check(project, cache)
    assert [(p, c) for p, _, c, _ in first] == [("train.py", "MG102")]
    with pytest.MonkeyPatch.context() as patch:  # an unchanged project: not even the summaries are read
        patch.setattr(runner.Cache, "entries", property(lambda self: pytest.fail("summaries loaded")))
        assert check(project, cache) == first
    (project / "validation.py").write_text(textwrap.dedent(validation.format(restore="model.train()\n            ")))
    os.utime(project / "validation.py", ns=(1, 1))  # a different mtime, whatever the clock
    assert check(project, cache) == []  # train.py itself did not change


def test_one_file_is_checked_with_what_it_can_see():
    source = textwrap.dedent(EVALUATE) + "\n\nmodel = Net()\nevaluate(model, [1])\n"
    [finding] = lint_source("one.py", source, SELECTION)
    assert finding.code == "MG101" and "one.py:10" in finding.message


def test_cli_checks_the_project_whole(tmp_path):
    write(tmp_path, {"evaluation.py": EVALUATE, "train.py": TRAIN.format(before=""), "models.py": NET})
    source_root = str(Path(modeguard.__file__).resolve().parents[1])  # these sources, from any cwd
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([source_root, os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", "modeguard.cli", "check", "--no-cache", "."], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert result.returncode == 1, result.stderr
    assert "evaluation.py:6" in result.stdout and "MG101" in result.stdout


def test_cache_is_not_served_once_the_linter_itself_changed(tmp_path):
    project, cache = tmp_path / "project", tmp_path / "cache"
    write(project, {"evaluate.py": textwrap.dedent(EVALUATE) + "\n\nmodel = Net()\nevaluate(model, [1])\n"})
    first = check(project, cache)
    assert [code for _, _, code, _ in first] == ["MG101"]
    assert check(project, cache) == first  # served from the cache
    checked = []
    with pytest.MonkeyPatch.context() as patch:  # as after an upgrade or an edit of a rule
        patch.setattr(runner, "_linter_stamps", lambda: ["another linter"])
        patch.setattr(runner, "check", lambda ctx, *args: checked.append(ctx.path) or runner_check(ctx, *args))
        assert check(project, cache) == first
    assert checked  # checked again, not served


def test_predictor_built_after_a_trainer_left_the_model_training(tmp_path):
    """`trainer.train(model, data, epochs=...)` is a call into the project, not Module.train:
    the trainer's last `model.train(mode=True)` reaches the predictor built after it (the model
    composed of submodules passed in: their Dropout counts)."""
    write(tmp_path, {
        "models.py": NET + """
    class Seq2seq(nn.Module):
        def __init__(self, encoder, decoder):
            super().__init__()
            self.encoder = encoder
            self.decoder = decoder
""",
        "trainer.py": """\
            class Trainer:
                def train(self, model, data, epochs=1):
                    for x, y in data:
                        model(x).sum().backward()
                    model.train(mode=False)
                    print(sum(model(x).sum() for x, _ in data))
                    model.train(mode=True)
        """,
        "predictor.py": """\
            class Predictor:
                def __init__(self, model):
                    self.model = model

                def predict(self, x):
                    return self.model(x)
        """,
        "main.py": """\
            import torch
            from models import Net, Seq2seq
            from predictor import Predictor
            from trainer import Trainer

            net = Seq2seq(Net(), Net())
            net.load_state_dict(torch.load("ckpt.pt", weights_only=True))
            net.eval()
            trainer = Trainer()
            trainer.train(net, [], epochs=2)
            print(Predictor(net).predict(1))
        """,
    })
    [(path, row, code, message)] = check(tmp_path)
    assert (path, row, code) == ("predictor.py", 6, "MG101") and "main.py:11" in message and "main.py:10" in message


def test_deployment_wrapper_restoring_a_model_built_by_a_classmethod_factory(tmp_path):
    """The model comes from `Model.from_config` (a classmethod of a module class, re-exported by
    the package) through the wrapper's own loader that restores its weights."""
    write(tmp_path, {
        "models/__init__.py": "from .model import Model\n",
        "models/model.py": """\
            import torch.nn as nn


            class Model(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.drop = nn.Dropout(0.5)

                @classmethod
                def from_config(cls, config):
                    return cls()
        """,
        "deploy.py": """\
            import torch
            from models import Model


            class Deployment:
                def __init__(self, config, path):
                    self.model = self._load_model(config, path)

                def _load_model(self, config, path):
                    model = Model.from_config(config)
                    model.load_state_dict(torch.load(path, weights_only=True))
                    return model

                def _predict(self, data):
                    return self.model(data)
        """,
    })
    [(path, row, code, message)] = check(tmp_path)
    assert (path, row, code) == ("deploy.py", 15, "MG101") and "Model.from_config()" in message


def test_deployment_wrapper_that_evaluates_its_model_is_silent(tmp_path):
    write(tmp_path, {
        "models.py": NET.replace("self.drop = nn.Dropout(0.5)", "self.drop = nn.Dropout(0.5)\n\n    @classmethod\n    def build(cls):\n        return cls()"),
        "deploy.py": """\
            import torch
            from models import Net


            class Deployment:
                def __init__(self, path):
                    self.model = self._load_model(path)
                    self.model.eval()

                def _load_model(self, path):
                    model = Net.build()
                    model.load_state_dict(torch.load(path, weights_only=True))
                    return model

                def _predict(self, data):
                    return self.model(data)
        """,
    })
    assert check(tmp_path) == []


RETRIEVERS = {
    "base.py": """\
        class BaseRetriever:
            def embed(self, batch):
                raise NotImplementedError
    """,
    "hub.py": """\
        from base import BaseRetriever
        from zoo import build


        class HubRetriever(BaseRetriever):
            def __init__(self, name):
                self.model = build(name){evaluated}
    """,
    "wrapper.py": """\
        import torch
        from base import BaseRetriever


        class ModelRetriever(BaseRetriever):
            def __init__(self, model):
                self.model = model

            def embed(self, batch):
                with torch.no_grad():
                    return self.model(**batch)
    """,
}


@pytest.mark.parametrize("evaluated", [".eval()", ""])
def test_wrapper_of_a_callers_model_where_a_sibling_owns_the_mode(tmp_path, evaluated):
    """Another subclass of the same base puts its own model in eval mode: this one forgot."""
    write(tmp_path, {name: text.replace("{evaluated}", evaluated) for name, text in RETRIEVERS.items()})
    found = check(tmp_path)
    if not evaluated:
        assert found == []
        return
    [(path, row, code, message)] = found
    assert (path, row, code) == ("wrapper.py", 11, "MG101") and "HubRetriever" in message and "hub.py:7" in message
