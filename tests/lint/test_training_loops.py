"""Evaluation inside and around training loops, across files: the evidence that separates the
real bugs (validation in training mode, training in eval mode) from correct code, and a cache
that re-checks a file when the file holding its evidence changes."""

import os
import textwrap

import pytest


from tests.lint.projects import check, write


ALGORITHM = """\
    import torch


    class OnPolicyAlgorithm:
        def collect_rollouts(self, obs):
            with torch.no_grad():
                return self.policy.forward(obs)

        def learn(self, steps, obs):
            for _ in range(steps):
                self.collect_rollouts(obs)
                self.train()
"""

PPO = """\
    import torch

    from .base import OnPolicyAlgorithm


    class PPO(OnPolicyAlgorithm):
        def __init__(self, policy_class):
            self.policy = policy_class()
            self.optimizer = torch.optim.Adam(self.policy.parameters())

        def train(self):
            loss = self.policy.evaluate_actions(self.batch)
            {backward}self.optimizer.step()
"""


def test_a_subclass_that_trains_the_policy_is_the_evidence_and_the_cache_follows_it(tmp_path):
    project, cache = tmp_path / "project", tmp_path / "cache"
    write(project, {
        "algo/__init__.py": "",
        "algo/base.py": ALGORITHM,
        "algo/ppo.py": PPO.format(backward="loss.backward()\n            "),
    })
    [(path, row, code, message)] = check(project, cache)
    assert (path, row, code) == ("algo/base.py", 7, "MG101")
    assert "PPO.train() (a subclass of OnPolicyAlgorithm)" in message and "ppo.py:13" in message
    # the subclass no longer trains the policy: base.py did not change, its finding must go
    (project / "algo/ppo.py").write_text(textwrap.dedent(PPO.format(backward="")))
    os.utime(project / "algo/ppo.py", ns=(1, 1))
    assert check(project, cache) == []


def test_the_policy_family_that_switches_modes_is_not_flagged(tmp_path):
    base = ALGORITHM.replace("with torch.no_grad():", "self.policy.set_training_mode(False)\n        with torch.no_grad():")
    write(tmp_path, {"algo/__init__.py": "", "algo/base.py": base, "algo/ppo.py": PPO.format(backward="loss.backward()\n            ")})
    assert check(tmp_path) == []


FACTORY = """\
    import torch.nn as nn


    def build_model(weights=None):
        model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1))
        model = model.eval()
        return model
"""

LIT = """\
    import lightning as L


    class LitModel(L.LightningModule):
        def __init__(self, model):
            super().__init__()
            self.model = model
            {restore}

        def training_step(self, batch, idx):
            return self.model(batch).mean()
"""

FIT = """\
    import lightning as L

    from lit import LitModel
    from models import build_model


    def main(loader):
        model = build_model()
        lit = LitModel(model)
        trainer = L.Trainer(max_epochs=1)
        trainer.fit(lit, loader)
"""


@pytest.mark.parametrize("restore", ["", "self.model.train()"])
def test_a_factorys_eval_that_reaches_a_fitted_lightning_module(tmp_path, restore):
    write(tmp_path, {"models.py": FACTORY, "lit.py": LIT.format(restore=restore), "train.py": FIT})
    found = check(tmp_path)
    if restore:
        assert found == []
        return
    [(path, row, code, message)] = found
    assert (path, row, code) == ("models.py", 6, "MG102")
    assert "train.py:8" in message and "LitModel" in message and "train.py:11" in message


BASE_LOGIC = """\
    class BaseLogic:
        def train_epoch_begin(self, models):
            pass

        def train_validation_begin(self, models):
            pass

        def train_validation_end(self, models):
            pass
"""

LOGIC = """\
    from base import BaseLogic


    class Logic(BaseLogic):
        def train_epoch_begin(self, models):
            model = models["main"]
            model.train()

        def train_step(self, models, batch):
            models["main"](batch).sum().backward()

        def train_validation_begin(self, models):
            model = models["main"]
            model.eval()
{end}"""


@pytest.mark.parametrize("end", ["", "\n    def train_validation_end(self, models):\n        model = models['main']\n        model.train()\n"])
def test_a_validation_hook_pair_declared_by_a_base_class_in_another_file(tmp_path, end):
    write(tmp_path, {"base.py": BASE_LOGIC, "logic.py": LOGIC.format(end=textwrap.indent(end, "    "))})
    found = check(tmp_path)
    if end:
        assert found == []
        return
    [(path, row, code, message)] = found
    assert (path, row, code) == ("logic.py", 14, "MG102")
    assert "BaseLogic.train_validation_end() (" in message and "base.py:8)" in message and "only train_epoch_begin()" in message


STEP = """\
    def make_step(net, optimizer):
        def step(batch, phase):
            net.train()
            loss = net(batch).mean()
            if phase == "train":
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
            return loss.item()
        return step
"""

LOOP = """\
    from steps import make_step


    def run(net, optimizer, loaders):
        step = make_step(net, optimizer)
        for phase in {phases}:
            for batch in loaders[phase]:
                step(batch, phase)
"""


def test_a_forward_shared_by_the_train_and_validation_phases(tmp_path):
    write(tmp_path, {"steps.py": STEP, "loop.py": LOOP.format(phases="['train', 'valid']")})
    [(path, row, code, message)] = check(tmp_path)
    assert (path, row, code) == ("steps.py", 4, "MG101")
    assert "backward() runs only when `phase == \"train\"`" in message and "net.train() at" in message


def test_a_phase_step_that_every_caller_runs_for_training_is_not_flagged(tmp_path):
    write(tmp_path, {
        "steps.py": """\
            def step(net, optimizer, batch, phase):
                net.train()
                loss = net(batch).mean()
                if phase == "train":
                    loss.backward()
                    optimizer.step()
                return loss.item()
        """,
        "loop.py": """\
            from steps import step


            def run(net, optimizer, loader):
                for batch in loader:
                    step(net, optimizer, batch, "train")
        """,
    })
    assert check(tmp_path) == []
