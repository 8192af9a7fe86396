"""The run-time mode checks: one implementation of each rule, shared by `guard(model)` and
`modeguard run` (and `pytest --modeguard`, `%modeguard on`).

Global module hooks see every forward; autograd hooks and weak-reference finalizers on the
outputs tell whether a forward reached a backward. Each finding is decided from what happened:

- MG301: a model whose Dropout/BatchNorm are in training mode runs forwards whose outputs never
  reach a backward (a validation loop, a prediction, a teacher whose parameters never change).
  Single forwards between training steps of the same model (GAN sampling, logging a sample; the
  last one at that line too) and a model updated from another one (momentum/EMA encoder) are
  not findings.
- MG302: backward through outputs computed in eval mode, and the parameters then changed (an
  optimizer step). Saliency and adversarial gradients change no parameter.
- MG303: a submodule with mode-dependent layers in another mode than its model, checked on every
  call: trainable (requires_grad) parts in eval while the model trains, and parts left in
  training while the model is in eval. Frozen parts, BatchNorm kept in eval for fine-tuning,
  Monte-Carlo dropout and BatchNorm recalibration are recognised.
- MG305/MG306/MG315: random draws in the own code of a module in eval mode, seen on the first
  eval forward of each model at each call site.
- MG307: a module from a plain list/dict runs in training mode inside a model in eval mode.
- MG311: the BatchNorm "Expected more than 1 value per channel" error, explained.
- MG312: BatchNorm used in eval whose running statistics were never updated by the end.

Hot path: modules called inside a model whose flags and mode agree cost one comparison.
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
import sysconfig
import weakref
from collections import Counter, deque
from typing import Callable, Iterable

import torch
from torch import nn
from torch.nn.modules import module as torch_module
from torch.nn.modules.batchnorm import _BatchNorm
from torch.overrides import TorchFunctionMode

from modeguard.errors import ModeError
from modeguard.findings import Finding, Location
from modeguard.run_codes import RUN_CODES
from modeguard.runtime.batchnorm_health import is_never_calibrated
from modeguard.runtime.inventory import DROPOUT_TYPES, describe
from modeguard.runtime.structure import unreached_modules
from modeguard.runtime.trees import leaves

Site = tuple[str, int]

# Frames in these packages (and the standard library) are not where the user called a model.
LIBRARY_PACKAGES = (
    "torch", "modeguard", "lightning", "pytorch_lightning", "lightning_fabric", "transformers",
    "accelerate", "IPython", "_pytest", "pluggy", "typer", "click", "rich_click",
)
SINGLE_VALUE_ERROR = "Expected more than 1 value per channel when training"
_PENDING, _TRAINED, _INFERENCE, _FAILED = 0, 1, 2, 3
_WATCHED_OUTPUTS = 4  # output tensors watched per call: enough to see a loss reach them


def _library_dirs() -> tuple[str, ...]:
    dirs = []
    for name in LIBRARY_PACKAGES:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.submodule_search_locations:
            dirs.extend(os.path.join(path, "") for path in spec.submodule_search_locations)
    return tuple(dirs)


_LIBRARY_DIRS = _library_dirs()
_STDLIB = os.path.join(sysconfig.get_paths()["stdlib"], "")
_is_library_cache: dict[str, bool] = {}


def _is_library(filename: str) -> bool:
    known = _is_library_cache.get(filename)
    if known is None:
        known = (
            filename.startswith(_LIBRARY_DIRS)
            or filename.startswith("<frozen")
            or (filename.startswith(_STDLIB) and "-packages" not in filename)
        )
        _is_library_cache[filename] = known
    return known


def user_site(frame=None) -> Site:
    """The first frame outside torch, frameworks, modeguard and the standard library."""
    frame = frame or sys._getframe(1)
    while frame is not None and _is_library(frame.f_code.co_filename):
        frame = frame.f_back
    return (frame.f_code.co_filename, frame.f_lineno) if frame else ("<unknown>", 0)


def single_value_explanation(bn: nn.Module, shape: str) -> str:
    return (
        f"{type(bn).__name__} sees one value per channel in training mode (input {shape}): "
        "batch statistics need at least two. Fixes: call model.eval() for "
        "single-sample inference; train with batches of >= 2 (DataLoader(drop_last=True)); or "
        "freeze this layer (modeguard.freeze_bn)"
    )


def _fingerprint(root: nn.Module) -> list[torch.Tensor]:
    """A few values of every parameter: an optimizer step or an EMA update changes them."""
    return [p.detach().reshape(-1)[:4].clone() for p in root.parameters()]


def _same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def _is_dropout_like(module: nn.Module) -> bool:
    return isinstance(module, (*DROPOUT_TYPES, nn.MultiheadAttention, nn.RNNBase))


def _recalibrating(bn: nn.Module) -> bool:
    """BatchNorm set up to collect statistics: cumulative average (swa_utils.update_bn) or
    one batch at a time (fvcore, modeguard.recalibrate_bn)."""
    return bn.momentum is None or bn.momentum == 1.0


def _affine_learned(bn: nn.Module) -> bool:
    """Its weight or bias moved from the initial 1 and 0: the layer was trained or loaded, so
    running statistics still at their initial values were lost, not merely not yet computed."""
    return bn.weight is not None and bool((bn.weight != 1).any() or (bn.bias is not None and (bn.bias != 0).any()))


class _Call:
    """One forward in training mode whose fate (a backward reached it or not) is watched."""

    __slots__ = ("site", "state", "live", "__weakref__")

    def __init__(self, site: Site, state: int):
        self.site, self.state, self.live = site, state, 0


def _modules_by_id(root: nn.Module, ids: dict[int, str]) -> list[nn.Module]:
    return [m for item in unreached_modules(root) for m in item.module.modules() if id(m) in ids]


class ModelState:
    """What the checks remember about one model (the outermost module of a call)."""

    def __init__(self, root: nn.Module):
        named = list(root.named_modules())[1:]  # not the root: the state must not keep it alive
        self.root = weakref.ref(root)
        self.type_name = type(root).__name__
        self.modules = [m for _, m in named]
        self.names = {id(m): name for name, m in named}
        self.names[id(root)] = ""
        self.kinds = {id(m): describe(m) for _, m in [("", root), *named]}
        # modules in plain lists/dicts: model.eval() does not reach them (MG307)
        self.unregistered = {
            id(sub): item.path + (f".{name}" if name else "")
            for item in unreached_modules(root) if not item.registered_elsewhere
            for name, sub in item.module.named_modules()
        }
        self.sensitive = any(v is not None for v in self.kinds.values()) or any(
            describe(m) is not None for m in _modules_by_id(root, self.unregistered)
        )
        self.batchnorms = [m for m in [root, *self.modules] if isinstance(m, _BatchNorm)]
        self.flags: tuple | None = None
        self.root_mode: bool | None = None
        self.training_sensitive: list[str] = []
        self.calls: deque[_Call] = deque()
        self.run: Counter = Counter()  # consecutive inference forwards, by call site
        self.run_after_training = False
        self.run_start: list[torch.Tensor] | None = None
        self.run_reported = False
        self.ever_trained = False
        self.last_trained = False
        self.updated_elsewhere = False
        self.eval_backward: dict[Site, list[torch.Tensor]] = {}
        self.probed: set[Site] = set()
        self.interleaved: set[Site] = set()  # sites of single forwards between training steps
        self.uncalibrated: dict[int, tuple] = {}

    def subtree_sensitive(self, module: nn.Module) -> bool:
        return any(self.kinds.get(id(m)) is not None for m in module.modules())


class _RandomDraws(TorchFunctionMode):
    """Sees the torch functions called during one eval forward; reports random draws made by
    the own code of a module in eval mode."""

    def __init__(self, checks: "Checks"):
        super().__init__()
        self.checks = checks

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        kind = _random_kind(func, args, kwargs)
        if kind is not None:
            self.checks._random_draw(kind)
        return func(*args, **kwargs)


def _random_functions():
    F = torch.nn.functional
    dropout = {F.dropout: True, F.dropout1d: True, F.dropout2d: True, F.dropout3d: True,
               F.alpha_dropout: False, F.feature_alpha_dropout: False}
    names = ("rand", "randn", "randint", "rand_like", "randn_like", "randint_like", "randperm",
             "bernoulli", "normal", "multinomial", "poisson")
    methods = ("bernoulli_", "normal_", "uniform_", "random_", "exponential_", "geometric_",
               "log_normal_", "cauchy_")
    draws = {getattr(torch, n) for n in names} | {getattr(torch.Tensor, n) for n in methods}
    return dropout, draws


_DROPOUT_DEFAULT_TRAINING, _DRAWS = _random_functions()


def _random_kind(func, args, kwargs) -> str | None:
    if func in _DROPOUT_DEFAULT_TRAINING:
        p = kwargs.get("p", args[1] if len(args) > 1 else 0.5)
        training = kwargs.get("training", args[2] if len(args) > 2 else _DROPOUT_DEFAULT_TRAINING[func])
        return "MG305" if training and p > 0 else None
    if func is torch.dropout:
        return "MG305" if args[2] and args[1] > 0 else None
    if func is torch.nn.functional.scaled_dot_product_attention:
        p = kwargs.get("dropout_p", args[4] if len(args) > 4 else 0.0)
        return "MG306" if p > 0 else None
    if func in _DRAWS:
        return "MG315"
    return None


_INSTALLED: "weakref.WeakSet[Checks]" = weakref.WeakSet()


def _forget_in_child() -> None:
    """DataLoader workers (forked) are left untouched: no hooks, no findings."""
    for checks in list(_INSTALLED):
        checks.remove()


os.register_at_fork(after_in_child=_forget_in_child)


class Checks:
    """The mode checks over every model (`scope=None`) or one model. New findings collect in
    `findings`; `flush()` decides what waits for the end (outputs still alive, teachers, never
    calibrated BatchNorm)."""

    def __init__(
        self,
        *,
        scope: nn.Module | None = None,
        allow_eval: Iterable[int] = (),
        raise_single_value: bool = False,
        on_root: Callable[[], None] | None = None,
    ):
        self.scope = weakref.ref(scope) if scope is not None else None
        self.allow_eval = set(allow_eval)
        self.raise_single_value = raise_single_value
        self.on_root = on_root
        self.findings: list[Finding] = []
        self.reported: set[tuple] = set()
        self.models: "weakref.WeakKeyDictionary[nn.Module, ModelState]" = weakref.WeakKeyDictionary()
        self.calls_checked = 0
        self.depth = 0
        self.root_depth = 0
        self.current: ModelState | None = None
        self.root_training = True
        self.root_site: Site | None = None
        self.pending: _Call | None = None
        self.probe: _RandomDraws | None = None
        self.stack: list[nn.Module] | None = None
        self._explained: int | None = None
        self._handles: list = []

    # -- installation ------------------------------------------------------------------------
    def install(self) -> "Checks":
        self._handles = [
            torch_module.register_module_forward_pre_hook(self._before),
            torch_module.register_module_forward_hook(self._after, always_call=True),
        ]
        _INSTALLED.add(self)
        return self

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        _INSTALLED.discard(self)

    def drain(self) -> list[Finding]:
        new, self.findings = self.findings, []
        return new

    # -- reporting ---------------------------------------------------------------------------
    def _report(self, code: str, site: Site, state: ModelState, path: str, message: str, fix: str, **data) -> None:
        key = (code, site, state.type_name, path)
        if key in self.reported:
            return  # once per call site
        self.reported.add(key)
        run_code = RUN_CODES[code]
        where = state.type_name + (f".{path}" if path else "")
        self.findings.append(
            Finding(
                code, run_code.severity, f"{where}: {message}", fix, module=where,
                filename=site[0], location=Location(site[1], 1),
                data={"model": state.type_name, "submodule": path or None, "lint_rule": run_code.lint_rule, **data},
            )
        )

    def _state(self, root: nn.Module) -> ModelState:
        state = self.models.get(root)
        if state is None:
            state = self.models[root] = ModelState(root)
        return state

    # -- module hooks ------------------------------------------------------------------------
    def _before(self, module: nn.Module, args):
        depth = self.depth
        self.depth = depth + 1
        if self.current is not None:  # inside a checked model
            if self.stack is not None:
                self.stack.append(module)
            if module.training != self.root_training:
                self._mismatch(module)
            elif self.raise_single_value and module.training and isinstance(module, _BatchNorm):
                self._single_value_precheck(module, args)
            return None
        if self.scope is None:
            if depth:
                return None  # inside a model without mode-dependent layers
        elif module is not self.scope():
            return None
        state = self._state(module)
        if not state.sensitive:
            return None
        self.current, self.root_depth = state, depth
        self._root_call(module, state)
        if self.on_root is not None:
            self.on_root()
        return None

    def _after(self, module: nn.Module, args, result):
        self.depth = depth = max(self.depth - 1, 0)
        if result is None:
            self._explain_exception(module)
        if self.current is None:
            return None
        if depth != self.root_depth:
            if self.stack and self.stack[-1] is module:
                self.stack.pop()
            return None
        state, self.current = self.current, None
        self._root_done(module, state, result)
        if self.on_root is not None:
            self.on_root()
        return None

    # -- one call of a model -----------------------------------------------------------------
    def _root_call(self, root: nn.Module, state: ModelState) -> None:
        self.calls_checked += 1
        training = root.training
        self.root_training = training
        self.root_site = None
        flags = tuple(m.training for m in state.modules)
        if flags != state.flags or training != state.root_mode:
            self._modes_changed(root, state, flags)
        if state.eval_backward:
            self._check_eval_backward(root, state)
        self.pending = None
        if state.training_sensitive and not any(bn.training and _recalibrating(bn) for bn in state.batchnorms):
            grad = torch.is_grad_enabled()
            self.pending = _Call(self.site(), _PENDING if grad else _INFERENCE)
            state.calls.append(self.pending)
        if not training and self.site() not in state.probed:
            state.probed.add(self.site())
            self.stack = [root]
            self.probe = _RandomDraws(self)
            self.probe.__enter__()

    def _root_done(self, root: nn.Module, state: ModelState, result) -> None:
        if self.probe is not None:
            self.probe.__exit__(None, None, None)
            self._note_uncalibrated(state)
            self.probe, self.stack = None, None
        call, self.pending = self.pending, None
        if call is not None and result is None and sys.exc_info()[1] is not None:
            call.state = _FAILED  # the forward raised: neither training nor inference
        if call is not None and call.state == _PENDING:
            nodes = {id(t.grad_fn): t.grad_fn for _, t in leaves(result) if t.grad_fn is not None}
            if not nodes:
                call.state = _INFERENCE
            for node in list(nodes.values())[:_WATCHED_OUTPUTS]:
                # the graph node owns the hook: it dies with the graph (after backward, or when
                # the outputs are dropped without one), and the finalizer tells which
                reached = _Reached(call)
                call.live += 1
                node.register_hook(reached)
                weakref.finalize(reached, _freed, call, weakref.ref(self), weakref.ref(state))
        if call is not None:
            self._advance(root, state)
        elif not root.training and torch.is_grad_enabled() and not self.reported_eval_backward(state):
            node = next((t.grad_fn for _, t in leaves(result) if t.grad_fn is not None), None)
            if node is not None:
                node.register_hook(_EvalBackward(self.site(), weakref.ref(state)))

    def reported_eval_backward(self, state: ModelState) -> bool:
        return ("MG302", self.site(), state.type_name, "") in self.reported

    def site(self) -> Site:
        if self.root_site is None:
            self.root_site = user_site(sys._getframe(1))
        return self.root_site

    # -- MG303: modes of the parts --------------------------------------------------------
    def _modes_changed(self, root: nn.Module, state: ModelState, flags: tuple) -> None:
        training = root.training
        state.flags, state.root_mode = flags, training
        lagging: list[tuple[str, nn.Module]] = []
        for module, flag in zip(state.modules, flags):
            if flag != training:
                name = state.names[id(module)]
                if not any(name.startswith(outer + ".") for outer, _ in lagging):
                    lagging.append((name, module))
        for name, module in lagging:
            if id(module) in self.allow_eval or not state.subtree_sensitive(module):
                continue
            if training:
                if isinstance(module, _BatchNorm) or not any(p.requires_grad for p in module.parameters()):
                    continue  # frozen: BatchNorm statistics kept for fine-tuning, or no trainable weight
                self._report(
                    "MG303", self.site(), state, name,
                    f"{type(module).__name__} is in eval mode while the model trains, and its parameters "
                    "are trainable (requires_grad): its Dropout is off and its BatchNorm statistics are frozen",
                    "call model.train() after changing submodule modes; if the part is frozen on purpose, "
                    "freeze its parameters (requires_grad_(False)) or declare it (guard(..., allow_eval=[...]))",
                )
            elif not (_is_dropout_like(module) or (isinstance(module, _BatchNorm) and _recalibrating(module))):
                self._report(
                    "MG303", self.site(), state, name,
                    f"{type(module).__name__} stays in training mode while the model is in eval mode: "
                    "its Dropout drops and its BatchNorm uses batch statistics at inference "
                    "(an overridden train() or a .training assignment that does not recurse?)",
                    "call model.eval() on the root and let train() reach every submodule "
                    "(super().train(mode)); declare intended ones with allow_eval=",
                )
        mc_dropout = not training
        state.training_sensitive = [
            f"{state.names[id(m)] or '<root>'} ({type(m).__name__})"
            for m in [root, *state.modules]
            if m.training and state.kinds.get(id(m)) is not None and not (mc_dropout and _is_dropout_like(m))
        ]

    def _mismatch(self, module: nn.Module) -> None:
        """A module whose mode differs from its model's: MG307 when it is not registered."""
        state = self.current
        if id(module) in state.names or self.root_training or not module.training or describe(module) is None:
            return
        path = state.unregistered.get(id(module), type(module).__name__)
        self._report(
            "MG307", self.site(), state, path.split("[")[0],
            f"{type(module).__name__} {path} ran in training mode inside the model in eval mode: it "
            "is kept in a plain Python list/dict, so model.eval() never reached it (nor .to(), "
            ".parameters() and state_dict())",
            "wrap the container in nn.ModuleList / nn.ModuleDict (or nn.Sequential)",
        )

    # -- MG301: inference in training mode -----------------------------------------------
    def _advance(self, root: nn.Module, state: ModelState) -> None:
        """Consume the calls whose fate is known, in call order."""
        calls = state.calls
        while calls and calls[0].state != _PENDING:
            call = calls.popleft()
            if call.state == _FAILED:
                continue
            if call.state == _TRAINED:
                if len(state.run) == 1 and sum(state.run.values()) == 1 and state.run_after_training:
                    state.interleaved.update(state.run)  # one forward between training steps
                state.ever_trained = state.last_trained = True
                state.run, state.run_reported, state.run_start = Counter(), False, None
                continue
            if not state.run:
                state.run_after_training = state.last_trained
                state.run_start = None if state.updated_elsewhere else _fingerprint(root)
            state.last_trained = False
            state.run[call.site] += 1
            if sum(state.run.values()) >= 2:
                self._judge_run(root, state)

    def _judge_run(self, root: nn.Module, state: ModelState) -> None:
        count = sum(state.run.values())
        if count == 1 and state.run_after_training and next(iter(state.run)) in state.interleaved:
            return  # the last of the forwards made between training steps: sampling or logging
        if not state.ever_trained and not state.run_reported:  # decided once per run
            if state.updated_elsewhere:
                return
            if state.run_start is not None and not _same(state.run_start, _fingerprint(root)):
                state.updated_elsewhere = True  # a momentum/EMA copy of another model
                return
        state.run_reported = True
        layers = ", ".join(state.training_sensitive[:3]) + (" ..." if len(state.training_sensitive) > 3 else "")
        evidence = (
            "it was trained by backward() before, so this looks like a validation/test pass"
            if state.ever_trained else "its parameters never changed, so it is used for inference only"
        )
        for site, n in state.run.items():
            self._report(
                "MG301", site, state, "",
                "inference in training mode (forgot model.eval()?): forwards here ran with "
                f"mode-dependent layers in training mode ({layers}) and their outputs never reached "
                f"a backward(); {evidence}. Dropout dropped and BatchNorm used batch statistics "
                "(and updated its running statistics)",
                "call model.eval() before inference and model.train() before training again "
                "(or use `with modeguard.evaluating(model):`)",
                calls=n,
            )

    # -- MG302: training in eval mode --------------------------------------------------------
    def _check_eval_backward(self, root: nn.Module, state: ModelState) -> None:
        now = _fingerprint(root)
        for site, before in state.eval_backward.items():
            if not _same(before, now):
                self._report(
                    "MG302", site, state, "",
                    "training step in eval mode: backward() went through outputs computed here with "
                    "the model in eval mode and then the parameters changed (an optimizer step): "
                    "Dropout was off and BatchNorm statistics frozen while training (validation that "
                    "left the model in eval?)",
                    "call model.train() before the training steps (after validation)",
                )
        state.eval_backward.clear()

    # -- randomness in eval -----------------------------------------------------------------
    def _random_draw(self, code: str) -> None:
        if not self.stack or self.current is None:
            return
        owner = self.stack[-1]
        if owner.training:
            return  # a layer in training mode on purpose (Monte-Carlo dropout)
        state = self.current
        path = state.names.get(id(owner), type(owner).__name__)
        what = {
            "MG305": "called dropout with training=True (F.dropout defaults to training=True) in eval mode",
            "MG306": "called scaled_dot_product_attention with dropout_p > 0 in eval mode (it has no training flag)",
            "MG315": "drew random numbers in its own forward in eval mode",
        }[code]
        fix = {
            "MG305": "pass training=self.training (or use an nn.Dropout submodule)",
            "MG306": "pass dropout_p=self.p if self.training else 0.0",
            "MG315": "draw only when self.training, or make the eval path deterministic",
        }[code]
        self._report(code, user_site(sys._getframe(1)), state, path,
                     f"{type(owner).__name__} {what}: predictions are random", fix)

    # -- BatchNorm -----------------------------------------------------------------------------
    def _note_uncalibrated(self, state: ModelState) -> None:
        for module in state.batchnorms:
            if not module.training and is_never_calibrated(module):
                state.uncalibrated.setdefault(id(module), (weakref.ref(module), self.site()))

    def _single_value_precheck(self, bn: nn.Module, args) -> None:
        """guard() raises before the layer does: the same explanation, as a ModeError."""
        shape = args[0].shape if args and isinstance(args[0], torch.Tensor) else ()
        if len(shape) >= 2 and shape[0] * math.prod(shape[2:]) == 1:
            name = self.current.names.get(id(bn)) or "<root>"
            raise ModeError(f"{name}: " + single_value_explanation(bn, str(list(shape))))

    def _explain_exception(self, module: nn.Module) -> None:
        exc = sys.exc_info()[1]
        if exc is None or id(exc) == self._explained:
            return
        self._explained = id(exc)
        if isinstance(exc, ValueError) and SINGLE_VALUE_ERROR in str(exc) and isinstance(module, _BatchNorm):
            state = self.current
            if state is None:
                return
            shape = str(exc).rsplit("got input size ", 1)[-1]
            self._report(
                "MG311", self.site(), state, state.names.get(id(module), ""),
                single_value_explanation(module, shape),
                "model.eval() for single samples; DataLoader(drop_last=True) for training",
            )

    # -- the end ------------------------------------------------------------------------------
    def flush(self, final: bool = True) -> list[Finding]:
        """Decide what waited for the end (of the program, a test or a cell) and return the new
        findings. With `final`, forwards whose outputs are still alive count as never having
        reached a backward; otherwise they stay undecided."""
        for root, state in list(self.models.items()):
            if final:
                for call in state.calls:
                    if call.state == _PENDING:
                        call.state = _INFERENCE
            self._advance(root, state)
            if state.run:
                self._judge_run(root, state)
            state.run, state.run_start, state.run_reported = Counter(), None, False
            if state.eval_backward:
                self._check_eval_backward(root, state)
            for ref, site in state.uncalibrated.values():
                bn = ref()
                if bn is not None and is_never_calibrated(bn) and _affine_learned(bn):
                    self._report(
                        "MG312", site, state, state.names.get(id(bn), ""),
                        f"{type(bn).__name__} ran in eval mode with running statistics that were never "
                        "updated (mean 0, var 1, no batch tracked) although its affine weights were "
                        "trained or loaded: its output is not normalized (buffers not copied or loaded?)",
                        "train or recalibrate it (modeguard.recalibrate_bn, swa_utils.update_bn), or "
                        "load a checkpoint that has its buffers",
                    )
            state.uncalibrated.clear()
        return self.drain()


class _Reached:
    """Autograd hook on the node that made a watched output: a backward reached it."""

    __slots__ = ("call", "__weakref__")

    def __init__(self, call: _Call):
        self.call = call

    def __call__(self, grad_inputs, grad_outputs):
        self.call.state = _TRAINED
        return None


class _EvalBackward:
    """Autograd hook on an eval-mode output: remember the parameters as they were."""

    __slots__ = ("site", "state")

    def __init__(self, site, state):
        self.site, self.state = site, state

    def __call__(self, grad_inputs, grad_outputs):
        state = self.state()
        root = state.root() if state is not None else None
        if root is not None:
            state.eval_backward.setdefault(self.site, _fingerprint(root))
        return None


def _freed(call: _Call, checks_ref, state_ref) -> None:
    call.live -= 1
    if call.live == 0 and call.state == _PENDING:
        call.state = _INFERENCE
        checks, state = checks_ref(), state_ref()
        root = state.root() if state is not None else None
        if checks is not None and root is not None and checks._handles:
            checks._advance(root, state)
