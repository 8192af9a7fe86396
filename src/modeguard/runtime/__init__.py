"""Live-model analysis and fixes. Everything here imports torch."""

import random as _random

# rich draws from Python's `random` when first imported; the run-time API imports it lazily,
# on the user's first call, which must not change the user's random state.
_state = _random.getstate()
import rich.console  # noqa: E402,F401
import rich.table  # noqa: E402,F401

_random.setstate(_state)
