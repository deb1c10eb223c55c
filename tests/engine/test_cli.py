"""`python -m engine`: help, devices, and clean one-line errors instead of tracebacks."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run_engine(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "engine", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_help_lists_the_commands():
    result = run_engine("--help")
    assert result.returncode == 0
    assert "devices" in result.stdout


def test_devices_json_lists_the_cpu_first():
    result = run_engine("devices", "--json")
    assert result.returncode == 0, result.stderr
    devices = json.loads(result.stdout)
    assert devices[0]["id"] == "cpu"
    assert {"id", "kind", "name", "memory_bytes", "label"} <= set(devices[0])


def test_no_command_prints_help_and_fails():
    result = run_engine()
    assert result.returncode == 2
    assert "usage" in result.stdout


def test_resolve_device_explains_unknown_and_missing_devices():
    import pytest

    from engine.devices import resolve_device
    from engine.jobs import JobError

    assert resolve_device("cpu") == "cpu"
    assert resolve_device(None) == "cpu"
    with pytest.raises(JobError, match="unknown device 'toaster'; available: cpu"):
        resolve_device("toaster")
    with pytest.raises(JobError, match="not available here"):
        resolve_device("cuda:7")


def test_help_does_not_import_torch():
    """Building the parser stays cheap: each command imports torch inside its run()."""
    code = ("import sys\nfrom engine.cli import build_parser\nbuild_parser()\n"
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.stdout.strip() == "False", result.stderr


def test_json_output_turns_nan_into_null_and_stays_one_document(capsys):
    import json

    import numpy as np

    from engine.cli import print_json

    print_json({"test_acc": float("nan"), "history": [{"train_loss": float("inf")}],
                "probs": np.array([0.5, np.nan]), "ok": 1.5})
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert json.loads(out) == {"test_acc": None, "history": [{"train_loss": None}],
                               "probs": [0.5, None], "ok": 1.5}


def test_json_output_carries_file_names_that_are_not_utf8():
    """Python holds such bytes as lone surrogates, which strict JSON parsers refuse."""
    from engine.cli import json_text

    name = os.fsdecode(b"b\xe9b\xe9")  # Latin-1 folder names from an old camera card
    text = json_text({"class_names": [name], "per_class": {name: 0.5}})
    text.encode("utf-8")  # no lone surrogate left
    assert json.loads(text) == {"class_names": ["b\\xe9b\\xe9"], "per_class": {"b\\xe9b\\xe9": 0.5}}


def _script_running_command(body: str) -> str:
    """A ``python -c`` script that runs ``engine.cli.main`` with one command whose body (code
    indented by four spaces) is ``body``."""
    return (
        "import argparse, sys\n"
        "import engine.cli as cli\n"
        "def command(args):\n"
        f"{body}"
        "def parser():\n"
        "    p = argparse.ArgumentParser()\n"
        "    p.set_defaults(func=command)\n"
        "    return p\n"
        "cli.build_parser = parser\n"
        "sys.exit(cli.main([]))\n"
    )


def test_text_output_survives_a_name_that_is_not_utf8():
    script = _script_running_command(
        "    print('class ' + __import__('os').fsdecode(b'b\\xe9b\\xe9'))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env={**os.environ, "PYTHONIOENCODING": "utf-8:strict"}, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("class b\\xe9b\\xe9")  # as the JSON shows it


def test_a_console_without_unicode_gets_escapes_not_a_crash():
    """cp1252 or ascii consoles: a name in another script is escaped, as a non-UTF-8 one is."""
    import codecs

    from engine.cli import PRINTABLE_ERRORS, _escape_undecodable

    codecs.register_error(PRINTABLE_ERRORS, _escape_undecodable)
    text = "猫 " + os.fsdecode(b"b\xe9")
    assert text.encode("ascii", PRINTABLE_ERRORS) == b"\\u732b b\\xe9"


def test_format_duration():
    from engine.cli import format_duration

    assert (format_duration(65), format_duration(7325)) == ("1:05", "2:02:05")


def test_a_reader_that_goes_away_ends_the_command_quietly():
    """``python -m engine devices | head -0``: no 'error: BrokenPipeError', the SIGPIPE status."""
    from engine.cli import BROKEN_PIPE_EXIT

    process = subprocess.Popen([sys.executable, "-m", "engine", "devices", "--json"], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    process.stdout.close()  # before the command writes: its write finds no reader
    _, stderr = process.communicate(timeout=180)
    assert process.returncode == BROKEN_PIPE_EXIT
    assert stderr == ""


def test_a_broken_pipe_of_the_job_itself_is_an_error():
    """A socket whose peer went away is a failure to report; only stdout's reader leaving is
    quiet."""
    script = _script_running_command(
        "    import socket\n"
        "    print('partial result')\n"
        "    ours, theirs = socket.socketpair()\n"
        "    theirs.close()\n"
        "    ours.sendall(b'x' * 100000)\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith("error: BrokenPipeError"), result.stderr
    assert result.stdout == "partial result\n"


def test_a_closed_stdout_is_no_error():
    """Started with stdout closed (``>&-``): the command runs, its output goes nowhere."""
    result = subprocess.run([sys.executable, "-m", "engine", "devices", "--json"], cwd=ROOT,
                            stderr=subprocess.PIPE, text=True, timeout=180,
                            preexec_fn=lambda: os.close(1))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_ctrl_c_while_the_engine_still_imports_prints_no_traceback():
    """A Ctrl-C in the first moments, before a command handles it: one word, status 130."""
    interrupt_on_import = (
        "import runpy, sys, types\n"
        "cli = types.ModuleType('engine.cli')\n"
        "def interrupted(name):\n"
        "    raise KeyboardInterrupt\n"
        "cli.__getattr__ = interrupted\n"
        "sys.modules['engine.cli'] = cli\n"
        "runpy.run_module('engine', run_name='__main__', alter_sys=True)\n")
    result = subprocess.run([sys.executable, "-c", interrupt_on_import], cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stderr) == (130, "interrupted\n")
