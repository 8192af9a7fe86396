from modeguard.lint.rule import Rule


class SyntaxErrorRule(Rule):
    code = "MG100"
    name = "syntax-error"
    summary = "The file cannot be parsed or decoded, so no other rule could check it"
    rationale = (
        "A file that does not parse (a syntax error, Python 2 code, an undecodable byte or a "
        "null byte) is reported like ruff's E999 instead of crashing the run or being skipped "
        "silently."
    )
    invalid = ("print 'python 2'\n", "def f(:\n    pass\n")
    valid = ("print('python 3')\n",)

    def check(self, ctx):  # the engine reports parse failures before any rule runs
        return iter(())
