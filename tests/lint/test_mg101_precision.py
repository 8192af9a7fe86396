"""MG101 precision in whole projects: a unit test's random models are no evidence of how the
project runs its functions, a timing loop over a random model in a test folder predicts nothing,
and an ignite evaluator run at the trainer's epoch end leaves the model in eval mode."""

from pathlib import Path

import pytest

from modeguard.lint.files import discover
from modeguard.lint.runner import lint_paths

from tests.lint.projects import SELECTION, write

NET = """\
    from torch import nn


    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 2))

        def forward(self, x):
            return self.body(x)
"""

ENCODE = """\
    import torch


    @torch.no_grad()
    def encode_graphs(model, graphs):
        return [model(g) for g in graphs]
"""

SHAPE_CHECK = """\
    from pkg.net import Net
    from pkg.encode import encode_graphs


    def check_shapes(graphs):
        model = Net()
        out = encode_graphs(model, graphs)
        assert out[0].shape == (1, 2)
"""

TIMING = """\
    import time

    import torch
    from pkg.net import Net

    if __name__ == '__main__':
        model = Net()
        start = time.time()
        for batch in batches():
            with torch.no_grad():
                model(batch)
        print(time.time() - start)
"""


def mg101(root: Path) -> list[tuple[str, int]]:
    findings = lint_paths(discover([str(root)]), SELECTION, jobs=1)
    return sorted((Path(f.filename).relative_to(root).as_posix(), f.location.row) for f in findings if f.code == "MG101")


@pytest.mark.parametrize("caller, found", [("tests/shapes.py", []), ("scripts/shapes.py", [("pkg/encode.py", 6)])])
def test_a_caller_in_test_code_is_no_evidence_of_training_mode(tmp_path, caller, found):
    write(tmp_path, {"pkg/__init__.py": "", "pkg/net.py": NET, "pkg/encode.py": ENCODE, caller: SHAPE_CHECK})
    assert mg101(tmp_path) == found


@pytest.mark.parametrize("script, found", [("test/bench_forward.py", []), ("bench_forward.py", [("bench_forward.py", 11)])])
def test_a_random_model_timed_in_a_test_folder_is_no_inference(tmp_path, script, found):
    write(tmp_path, {"pkg/__init__.py": "", "pkg/net.py": NET, script: TIMING})
    assert mg101(tmp_path) == found


# a reduced stand-in for ignite's engine factories, as the linter sees them inside the ignite repository
IGNITE_ENGINE = """\
    import torch


    class Engine:
        def __init__(self, step):
            self.step = step


    def create_supervised_trainer(model, optimizer, loss_fn):
        def update(engine, batch):
            model.train()
            loss_fn(model(batch[0]), batch[1]).backward()
            optimizer.step()

        return Engine(update)


    def create_supervised_evaluator(model, metrics=None):
        def inference(engine, batch):
            model.eval()
            with torch.no_grad():
                return model(batch[0])

        return Engine(inference)
"""

IGNITE_SCRIPT = """\
    import torch
    from ignite.engine import Events, create_supervised_evaluator, create_supervised_trainer
    from pkg.net import Net

    model = Net()
    trainer = create_supervised_trainer(model, optimizer, loss_fn)
    evaluator = create_supervised_evaluator(model, metrics=metrics)


    @{engine}.on(Events.{event})
    def log_results(engine):
        {body}


    trainer.run(train_loader, max_epochs=5)
    model.load_state_dict(torch.load(best_path, weights_only=True))
    print(model(x).argmax(1))
"""


@pytest.mark.parametrize(
    "engine, event, body, found",
    [
        ("trainer", "EPOCH_COMPLETED", "evaluator.run(val_loader)", []),
        ("trainer", "COMPLETED", "evaluator.run(val_loader)", []),
        # the evaluator is never run by the trainer: nothing puts the model in eval mode
        ("evaluator", "COMPLETED", "print(engine.state.metrics)", [("train.py", 17)]),
    ],
)
def test_an_ignite_evaluator_run_at_the_trainers_epoch_end_leaves_the_model_in_eval_mode(tmp_path, engine, event, body, found):
    script = IGNITE_SCRIPT.format(engine=engine, event=event, body=body)
    write(tmp_path, {"pkg/__init__.py": "", "pkg/net.py": NET, "ignite/__init__.py": "", "ignite/engine/__init__.py": IGNITE_ENGINE, "train.py": script})
    assert mg101(tmp_path) == found


def test_a_project_kept_in_a_folder_named_test_is_not_test_code(tmp_path):
    root = tmp_path / "test" / "project"
    write(root, {"pkg/__init__.py": "", "pkg/net.py": NET, "bench_forward.py": TIMING})
    assert mg101(root) == [("bench_forward.py", 11)]
