"""Every tool's command line: ``--help`` says what it does in plain text, every option says what
it is, multi-word flags are spelled with underscores (Caffe's) and take dashes as an alias."""
import argparse
import importlib
import os
import re
import subprocess
import sys

import pytest

from minicaffe.commands import _cli

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))
TOOLS = sorted(t for t in os.listdir(os.path.join(ROOT, "tools")) if not t.startswith("."))
COMMANDS = sorted(m[:-3] for m in os.listdir(os.path.join(ROOT, "minicaffe", "commands"))
                  if m.endswith(".py") and not m.startswith("_")
                  and "def build_parser" in open(os.path.join(ROOT, "minicaffe", "commands", m)).read())


def _env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))


@pytest.fixture(scope="module")
def helps():
    """{tool: (exit status, stdout + stderr)} of ``tools/NAME --help``, run side by side."""
    procs = {t: subprocess.Popen([sys.executable, os.path.join(ROOT, "tools", t), "--help"],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 env=_env(), cwd=ROOT) for t in TOOLS}
    return {t: (p.wait(timeout=300), p.communicate()[0]) for t, p in procs.items()}


def _description(text):
    """The paragraph after argparse's usage block, or the first line of a hand-written help."""
    paras = [p for p in text.strip().split("\n\n") if p.strip()]
    return paras[1] if paras[0].startswith("usage:") else paras[0].splitlines()[0]


def _options_without_help(text):
    """Option entries of an argparse help with no text beside or below them."""
    lines = text.split("\n")
    missing = []
    for i, line in enumerate(lines):
        if not re.match(r"^  -", line):
            continue
        beside = re.match(r"^  (-\S.*?)\s{2,}\S", line)
        below = i + 1 < len(lines) and re.match(r"^\s{6,}[^\s-]", lines[i + 1])
        if not (beside or below):
            missing.append(line.strip())
    return missing


def test_tools_are_found():
    assert {"train", "test", "reproduce", "evaluate", "gpu_check", "convert_imageset"} <= set(TOOLS)
    assert len(TOOLS) >= 20 and "reproduce" in COMMANDS and "train" in COMMANDS


@pytest.mark.parametrize("tool", TOOLS)
def test_every_tool_help_describes_it_in_plain_text(helps, tool):
    status, text = helps[tool]
    assert status == 0, text[-2000:]
    assert "Traceback" not in text and "``" not in text
    desc = " ".join(_description(text).split())
    assert len(desc.split()) >= 4 and desc[0].isupper() and not desc.startswith("tools/"), desc
    assert _options_without_help(text) == []


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_has_help_and_underscores(command):
    parser = importlib.import_module("minicaffe.commands." + command).build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction) or action.help == argparse.SUPPRESS:
            continue
        assert action.help, (command, action.option_strings or action.dest)
        for flag in action.option_strings:
            assert "-" not in flag.lstrip("-"), (command, flag)   # --per_class, not --per-class


def test_summary_strips_the_tool_name_and_markup():
    doc = '''``tools/evaluate``: a trained ``code`` model's accuracy,
    and mAP.

    More text.'''
    assert _cli.summary(doc) == "A trained code model's accuracy, and mAP."
    assert _cli.summary("tools/gpu_check: the GPU path.\n\nx") == "The GPU path."


def test_dashes_and_underscores_alike(capsys):
    from minicaffe.commands import benchmark, make_dataset, reproduce
    seen = []
    keep = lambda a: seen.append(a) or 0    # noqa: E731
    for argv in (["--per-class", "3"], ["--per_class=4"], ["-per_class", "5"], ["--per-class=6"]):
        assert _cli.run(keep, argv, parser=make_dataset.build_parser()) == 0
    assert [a.per_class for a in seen] == [3, 4, 5, 6]
    assert _cli.run(keep, ["--no-figures", "--per-class", "2", "--log-level", "WARNING"],
                    parser=reproduce.build_parser()) == 0
    assert (seen[-1].no_figures, seen[-1].per_class, seen[-1].log_level) == (True, 2, "WARNING")
    assert _cli.run(keep, ["--no-torch", "--save-nets", "d"], parser=benchmark.build_parser()) == 0
    assert (seen[-1].no_torch, seen[-1].save_nets) == (True, "d")
    # a value that looks like a flag and everything after "--" are left alone
    p = argparse.ArgumentParser()
    p.add_argument("--per_class")
    p.add_argument("rest", nargs="*")
    assert _cli.flag_spelling(["--per-class", "--x-y", "--", "--per-class"], p) == \
        ["--per_class", "--x-y", "--", "--per-class"]
    assert _cli.run(keep, ["--per-klass", "3"], parser=make_dataset.build_parser()) == 2
    assert "unrecognized arguments: --per-klass 3" in capsys.readouterr().err


def test_convert_imageset_and_gpu_check_take_both_spellings(helps):
    from minicaffe.commands import convert_imageset
    flags, pos = convert_imageset.parse_args(["--resize-height=8", "-resize_width", "9",
                                              "--check-size", "a/", "l", "db"])
    assert (flags["resize_height"], flags["resize_width"], flags["check_size"], pos) == \
        (8, 9, True, ["a/", "l", "db"])
    assert convert_imageset.parse_args(["--nocheck-size"])[0]["check_size"] is False
    text = helps["gpu_check"][1]
    assert "--skip_tests" in text and "--skip-tests" not in text
