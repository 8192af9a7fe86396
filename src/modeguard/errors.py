"""Typed exceptions: the CLI turns each into a one-line message and exit code 2."""


class ModeguardError(Exception):
    """Base class of every error modeguard raises on purpose."""


class TorchMissingError(ModeguardError, ImportError):
    def __init__(self, feature: str):
        super().__init__(
            f"{feature} needs PyTorch, which is not installed: pip install 'modeguard[torch]'"
        )


class InputError(ModeguardError, ValueError):
    """The model, its example input or a file given to modeguard cannot be used."""


class CheckpointError(InputError):
    """A checkpoint that cannot be this model's weights: it matches none of its keys, or a
    tensor's shape differs (the message names the exact mismatch)."""


class ModelCallError(ModeguardError, RuntimeError):
    """The model raised when called on the example input."""


class ModeError(ModeguardError, ValueError):
    """A model is about to run in a mode that cannot work (raised by the runtime guard)."""


class ModeWarning(UserWarning):
    """A model ran in a mode that is probably not what was meant (issued by the runtime guard)."""
