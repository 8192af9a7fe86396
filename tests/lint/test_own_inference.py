"""MG101 on an nn.Module's own inference methods (`predict()`, no_grad methods): flagged only
where the class itself leaves a restored instance in training mode (weights restored in
`__init__`, or a loader that builds and restores it) and the module holds, or is given,
Dropout/BatchNorm; the evidence names the class, the loader and the path."""

from pathlib import Path


from tests.lint.projects import check as check_project, write


def check(root: Path, files: dict[str, str]):
    write(root, files)
    return check_project(root)


# a base class whose inherited helper runs the layers; a subclass restores its weights in __init__
BASE = """\
    import torch
    import torch.nn as nn


    def mlp(p):
        return nn.Sequential(nn.Linear(4, 8), nn.Dropout(p))


    class Regressor(nn.Module):
        def __init__(self):
            super().__init__()
            self.hidden = mlp(0.1)
            self.head = nn.Linear(8, 1)

        def params_from_tensor(self, x):
            return self.head(self.hidden(x))

        def forward(self, x):
            return self.params_from_tensor(x)

        def predict(self, x):
            with torch.no_grad():
                return self.params_from_tensor(x)
"""

PRETRAINED = """\
    import torch

    from base import Regressor


    class Pretrained(Regressor):
        def __init__(self):
            super().__init__()
            self.load_state_dict(torch.load("weights.pt", weights_only=True)){after}
"""


def test_inherited_helper_of_a_class_that_restores_its_weights_in_init(tmp_path):
    [(path, row, code, message)] = check(tmp_path, {"base.py": BASE, "pretrained.py": PRETRAINED.format(after="")})
    assert (path, row, code) == ("base.py", 16, "MG101")
    assert "Pretrained.__init__ restores its weights (" in message and "pretrained.py:9)" in message
    assert "predict(), through params_from_tensor()" in message


def test_class_that_calls_eval_after_restoring_is_silent(tmp_path):
    assert check(tmp_path, {"base.py": BASE, "pretrained.py": PRETRAINED.format(after="\n            self.eval()")}) == []


def test_no_class_restores_weights_is_silent(tmp_path):
    assert check(tmp_path, {"base.py": BASE}) == []


def test_module_without_dropout_or_batchnorm_is_silent(tmp_path):
    plain = BASE.replace("nn.Sequential(nn.Linear(4, 8), nn.Dropout(p))", "nn.Sequential(nn.Linear(4, 8), nn.ReLU())")
    assert check(tmp_path, {"base.py": plain, "pretrained.py": PRETRAINED.format(after="")}) == []


# the base class's predict() dispatches to an abstract method that a subclass implements; the
# base's loader builds cls() and restores its weights; the features extractor is the user's class
POLICIES = """\
    from abc import abstractmethod
    from typing import Type

    import torch
    import torch.nn as nn


    class BasePolicy(nn.Module):
        def __init__(self, extractor_class: Type[nn.Module]):
            super().__init__()
            self.extractor = extractor_class()

        @classmethod
        def load(cls, path):
            policy = cls(nn.Flatten)
            policy.load_state_dict(torch.load(path, weights_only=True))
            return policy

        @abstractmethod
        def _predict(self, obs):
            pass

        def predict(self, obs):
            with torch.no_grad():
                return self._predict(obs)


    class MlpPolicy(BasePolicy):
        def _predict(self, obs):
            return self.extractor(obs)
"""


def test_predict_dispatching_to_a_subclass_after_a_loader_without_eval(tmp_path):
    [(path, row, code, message)] = check(tmp_path, {"policies.py": POLICIES})
    assert (path, row, code) == ("policies.py", 25, "MG101")
    assert "BasePolicy.load() (" in message and "policies.py:15) builds it and restores its weights without eval()" in message
    assert "through MlpPolicy._predict()" in message


def test_loader_that_calls_eval_is_silent(tmp_path):
    evaluated = POLICIES.replace("            return policy", "            return policy.eval()")
    assert check(tmp_path, {"policies.py": evaluated}) == []


def test_project_whose_callers_evaluate_what_the_loader_returns_is_silent(tmp_path):
    main = """\
        from policies import MlpPolicy

        policy = MlpPolicy.load("policy.pt")
        policy.eval()
        print(policy.predict(1))
    """
    assert check(tmp_path, {"policies.py": POLICIES, "main.py": main}) == []


def test_project_whose_callers_evaluate_the_pretrained_class_is_silent(tmp_path):
    main = """\
        from pretrained import Pretrained

        model = Pretrained()
        model.eval()
        print(model.predict(1))
    """
    files = {"base.py": BASE, "pretrained.py": PRETRAINED.format(after=""), "main.py": main}
    assert check(tmp_path, files) == []


# loaders that return a pickled module (its mode is the one it was saved in): flagged only where
# the project's own convention is that the module's predict() sets the mode itself
TAGGER = """\
    import torch
    import torch.nn as nn


    class Tagger(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5))

        @staticmethod
        def load(path):
            model = torch.load(path, weights_only=False)
            return model

        def forward(self, x):
            return self.net(x)

        def predict(self, x):
            return self(x).argmax(1)
"""

SEQ2SEQ = """\
    import torch.nn as nn


    class Seq2Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5))

        def predict(self, x):
            self.eval()
            return self.net(x)
"""


def test_pickled_loader_where_the_project_convention_is_predict_sets_eval(tmp_path):
    [(path, row, code, message)] = check(tmp_path, {"tagger.py": TAGGER, "seq2seq.py": SEQ2SEQ})
    assert (path, row, code) == ("tagger.py", 19, "MG101")
    assert "Tagger.load() (" in message and "tagger.py:12) returns a pickled module" in message
    assert "Seq2Seq.predict() (" in message and "seq2seq.py:10) calls self.eval() itself" in message


def test_pickled_loader_alone_is_silent(tmp_path):
    assert check(tmp_path, {"tagger.py": TAGGER}) == []


# a synthesizer (not a module) trains a generator whose layers its caller builds (BatchNorm2d)
SYNTH = """\
    import torch.nn as nn


    def determine_layers():
        return [nn.ConvTranspose2d(8, 4, 2), nn.BatchNorm2d(4), nn.ReLU()]


    class Generator(nn.Module):
        def __init__(self, layers):
            super().__init__()
            self.seq = nn.Sequential(*layers)

        def forward(self, x):
            return self.seq(x)


    class Synthesizer:
        def fit(self, loader, optimizer):
            self.generator = Generator(determine_layers())
            for noise in loader:
                self.generator(noise).mean().backward()
                optimizer.step()

        def sample(self, noise):
            return self.generator(noise)
"""


def test_generator_built_from_given_layers_sampled_after_fit(tmp_path):
    [(path, row, code, message)] = check(tmp_path, {"synth.py": SYNTH})
    assert (path, row, code) == ("synth.py", 25, "MG101") and "fit() trains self.generator" in message


def test_generator_switched_to_eval_before_sampling_is_silent(tmp_path):
    fixed = SYNTH.replace("            return self.generator(noise)", "            self.generator.eval()\n            return self.generator(noise)")
    assert check(tmp_path, {"synth.py": fixed}) == []
