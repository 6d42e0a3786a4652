"""Static check of the project's own code: names that are used but never defined.

A NameError on a path that only a long run reaches (the demo's RTL backend, a board-only branch)
would otherwise surface after minutes of simulation; pyflakes finds it in a second.
"""

from __future__ import annotations

from pathlib import Path

from pyflakes import api, messages, reporter

ROOT = Path(__file__).resolve().parents[1]
#: the message kinds that are bugs, not style
BUGS = (messages.UndefinedName, messages.UndefinedLocal, messages.UndefinedExport,
        messages.DuplicateArgument, messages.ReturnOutsideFunction)


class _Collect(reporter.Reporter):
    def __init__(self):
        self.found = []

    def flake(self, message):
        if isinstance(message, BUGS):
            self.found.append(str(message))

    def syntaxError(self, filename, msg, lineno, offset, text):  # noqa: N802 (pyflakes API)
        self.found.append(f"{filename}:{lineno}: syntax error: {msg}")

    def unexpectedError(self, filename, msg):  # noqa: N802
        self.found.append(f"{filename}: {msg}")


def test_no_undefined_names():
    rep = _Collect()
    files = [p for d in ("sw", "hw", "models", "sim", "tests") for p in (ROOT / d).rglob("*.py")]
    assert len(files) > 50
    for p in files:
        api.checkPath(str(p), rep)
    assert rep.found == []
