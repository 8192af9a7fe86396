"""`%load_ext modeguard`, then `%modeguard on`: the run-time mode checks of `modeguard run` in
Jupyter/IPython, reported after each cell (`%modeguard off` stops them)."""

from __future__ import annotations

from modeguard.findings import Finding

_USAGE = "usage: %modeguard on | off"


class CellReporter:
    """Owns the checks while they are on and reports each cell's findings after it ran."""

    def __init__(self, shell):
        self.shell = shell
        self.session = None

    def magic(self, line: str) -> None:
        word = line.strip().lower()
        if word == "on":
            self.on()
        elif word == "off":
            self.off()
        else:
            print(_USAGE)

    def on(self) -> None:
        if self.session is not None:
            return
        from modeguard._lazy import require_torch

        require_torch("%modeguard on")
        from modeguard.runtime.sanitizer import Session

        self.session = Session().start()
        self.shell.events.register("post_run_cell", self.after_cell)
        print("modeguard: train/eval-mode checks on (reported after each cell)")

    def off(self) -> None:
        if self.session is None:
            return
        self.shell.events.unregister("post_run_cell", self.after_cell)
        self.show(self.session.stop())
        self.session = None

    def after_cell(self, result=None) -> None:
        self.show(self.session.collect())

    @staticmethod
    def show(findings: list[Finding]) -> None:
        if not findings:
            return
        from rich.console import Console
        from rich.markup import escape

        console = Console(highlight=False)
        for f in findings:
            style = "bold red" if f.severity.value == "error" else "bold yellow"
            where = f"line {f.location.row}" if f.filename and f.filename.startswith("<") else f"{f.filename}:{f.location.row}"
            console.print(f"[{style}]{f.code}[/] {escape(f.message)} [dim]({escape(where)})[/]", soft_wrap=True)
            if f.fix:
                console.print(f"  help: {escape(f.fix)}", style="dim", soft_wrap=True)


def load_ipython_extension(shell) -> None:
    reporter = CellReporter(shell)
    shell.register_magic_function(reporter.magic, magic_kind="line", magic_name="modeguard")
    shell.user_ns.setdefault("_modeguard_reporter", reporter)


def unload_ipython_extension(shell) -> None:
    reporter = shell.user_ns.pop("_modeguard_reporter", None)
    if reporter is not None:
        reporter.off()
