"""``deflow --help`` / ``--version``: every subcommand's options carry a help text that states
their default, the clock option is ``--clock-mhz`` everywhere, and the version is the
package's."""

from __future__ import annotations

import argparse
import re
from importlib.metadata import version

import pytest

from sw.flows.cli import main


def _subparsers():
    """The subcommands' parsers, as ``main`` builds them (captured at parse time)."""
    captured = {}
    orig = argparse.ArgumentParser.parse_args

    def grab(self, args=None, namespace=None):
        for a in self._actions:
            if isinstance(a, argparse._SubParsersAction):
                captured.update(a.choices)
        raise SystemExit(0)

    argparse.ArgumentParser.parse_args = grab
    try:
        with pytest.raises(SystemExit):
            main(["--help"])
    finally:
        argparse.ArgumentParser.parse_args = orig
    return captured


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"deflow {version('deflow')}"


@pytest.mark.parametrize("cmd", ["compile", "demo", "simulate", "bitstream"])
def test_every_option_has_help_with_its_default(cmd):
    p = _subparsers()[cmd]
    text = " ".join(p.format_help().split())
    assert "--mhz" not in text
    for a in p._actions:
        if not a.option_strings or a.dest == "help":
            continue
        assert a.help, f"{cmd} {a.option_strings[0]} has no help text"
        shown = p.formatter_class(prog="x")._get_help_string(a)
        if not isinstance(a, argparse._StoreTrueAction) and a.required is False:
            assert "default" in shown, f"{cmd} {a.option_strings[0]}: no default in its help"
    assert "--clock-mhz CLOCK_MHZ" in text


def test_demo_help_shows_the_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert re.search(r"--frames FRAMES images streamed through the accelerator \(default: 3\)", out)
    assert "(default: sim)" in out and "(default: ultra96v2)" in out
    assert "default: the shipped models/checkpoints/small256_w4a8.pt" in out


@pytest.mark.parametrize("cmd", ["bench", "evaluate", "train", "learning-curve"])
def test_passthrough_commands_are_subcommands(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: deflow {cmd}"), out[:80]
    assert cmd in _subparsers()  # listed by `deflow --help`
