"""Checkpoints as training code writes them (real files, torch.save): unwrapped, or refused
with the exact reason; never audited as if they had loaded."""

import pytest
import torch
from torch import nn

from modeguard import CheckpointError, load_weights


def net():
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))


def trained_state():
    torch.manual_seed(0)
    model = net()
    with torch.no_grad():
        model(torch.randn(64, 4))  # calibrated running statistics
    return model.state_dict()


def prefixed(state, prefix):
    return {prefix + key: value for key, value in state.items()}


WRAPPERS = {
    "plain state_dict": lambda sd: sd,
    "Lightning (state_dict, model. prefix)": lambda sd: {
        "epoch": 3, "global_step": 120, "pytorch-lightning_version": "2.5.0",
        "state_dict": prefixed(sd, "model."), "loops": {}, "callbacks": {},
        "optimizer_states": [], "lr_schedulers": [], "hyper_parameters": {"hidden": 8},
    },
    "{'model': sd}": lambda sd: {"model": sd, "optimizer": {"state": {}, "param_groups": []}, "epoch": 7},
    "{'state_dict': sd}": lambda sd: {"state_dict": sd},
    "DDP module.": lambda sd: prefixed(sd, "module."),
    "torch.compile _orig_mod.": lambda sd: prefixed(sd, "_orig_mod."),
    "DDP of a compiled model": lambda sd: prefixed(sd, "module._orig_mod."),
    "{'model': DDP}": lambda sd: {"model": prefixed(sd, "module.")},
}


@pytest.mark.parametrize("wrapper", WRAPPERS)
def test_every_wrapper_format_loads_every_tensor(tmp_path, wrapper):
    state = trained_state()
    path = tmp_path / "ckpt.pt"
    torch.save(WRAPPERS[wrapper](state), path)
    model = net()
    missing, unexpected = load_weights(model, str(path))
    assert missing == [] and unexpected == []
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_a_lightning_module_whose_own_keys_carry_model_keeps_them(tmp_path):
    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = net()

    state = {"state_dict": prefixed(trained_state(), "model.")}
    torch.save(state, tmp_path / "ckpt.pt")
    module = Wrapper()
    assert load_weights(module, str(tmp_path / "ckpt.pt")) == ([], [])
    assert int(module.model[1].num_batches_tracked) == 1


def test_no_matching_key_is_an_error_that_names_both_sides(tmp_path):
    torch.save({"encoder.weight": torch.ones(2)}, tmp_path / "other.pt")
    model = net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"matches none of the model's 9 keys: .*encoder\.weight.*0\.weight"):
        load_weights(model, str(tmp_path / "other.pt"))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_a_shape_mismatch_names_the_tensor_and_both_shapes(tmp_path):
    state = trained_state()
    state["2.weight"] = torch.zeros(5, 8)
    state["2.bias"] = torch.zeros(5)
    torch.save({"state_dict": state}, tmp_path / "ckpt.pt")
    with pytest.raises(CheckpointError) as raised:
        load_weights(net(), str(tmp_path / "ckpt.pt"))
    message = str(raised.value)
    assert "\n" not in message
    assert "size mismatch for 2.weight: checkpoint [5, 8], model [2, 8] (and 1 more)" in message


def test_a_file_without_a_state_dict_says_what_it_holds(tmp_path):
    torch.save({"epoch": 3, "note": "x"}, tmp_path / "ckpt.pt")
    with pytest.raises(CheckpointError, match=r"holds no state_dict \(found: epoch, note\)"):
        load_weights(net(), str(tmp_path / "ckpt.pt"))
