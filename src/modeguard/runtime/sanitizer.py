"""`modeguard run`: the user's program, run unchanged (sys.argv, `__main__`, output, exit code and
exceptions) under the run-time mode checks of `modeguard.runtime.checks`."""

from __future__ import annotations

import os
import runpy
import sys
import traceback
from dataclasses import dataclass, field

from modeguard.findings import Finding
from modeguard.runtime.checks import Checks


class Session:
    """The checks over every model in this process; `collect()` returns the findings since the
    last collect."""

    def __init__(self):
        self.checks = Checks()
        self.findings: list[Finding] = []

    def start(self) -> "Session":
        self.checks.install()
        return self

    def collect(self, final: bool = False) -> list[Finding]:
        """At the end of a test or a cell (outputs still alive may yet reach a backward), or
        with `final` at the end of the program."""
        new = self.checks.flush(final)
        self.findings.extend(new)
        return new

    def stop(self) -> list[Finding]:
        new = self.collect(final=True)
        self.checks.remove()
        return new


@dataclass
class RunResult:
    exit_code: int
    findings: list[Finding] = field(default_factory=list)
    calls_checked: int = 0


def run_program(target: str, args: list[str], *, as_module: bool) -> RunResult:
    """Run a script (`python script.py args`) or a module (`python -m target args`) in this
    process, as Python would, with the checks on."""
    saved_argv, saved_path0 = sys.argv[:], sys.path[0] if sys.path else None
    sys.argv = [target, *args]
    if sys.path:
        sys.path[0] = "" if as_module else os.path.dirname(os.path.abspath(target))
    session = Session().start()
    try:
        if as_module:
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(target, run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = _exit_code(exc.code)
    except KeyboardInterrupt:
        traceback.print_exc()
        code = 130
    except BaseException as exc:  # the program's own exception, shown as Python shows it
        _print_user_traceback(exc)
        code = 1
    finally:
        session.stop()
        sys.argv = saved_argv
        if saved_path0 is not None:
            sys.path[0] = saved_path0
    return RunResult(code, session.findings, session.checks.calls_checked)


def _exit_code(code) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _print_user_traceback(exc: BaseException) -> None:
    """The traceback from the program's first frame on, without modeguard's and runpy's."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    tb = exc.__traceback__
    while tb is not None and (tb.tb_frame.f_code.co_filename.startswith((here, "<frozen runpy")) or tb.tb_frame.f_code.co_filename == runpy.__file__):
        tb = tb.tb_next
    traceback.print_exception(type(exc), exc, tb)
