"""``python -m engine fit`` as a user runs it: real subprocesses, exit codes, JSON."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_fit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine", "fit", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_book_run_json() -> None:
    proc = run_fit("--model", "linear", "--optimizer", "gd", "--lr", "0.01", "--epochs", "5000",
                   "--input-scale", "0.1", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "done" and result["epochs"] == 5000
    assert f"{result['params']['w']:.4f}" == "5.3671"
    assert f"{result['params']['b']:.4f}" == "-17.3012"
    assert result["train_loss"] == pytest.approx(2.927648, abs=2e-6)
    assert result["val_loss"] is None


def test_help_documents_every_json_field_and_which_parameters_its_losses_are_at() -> None:
    helptext = run_fit("--help").stdout
    fields = json.loads(run_fit("--epochs", "1", "--json", "-q").stdout)
    race_fields = json.loads(run_fit("--race", "--epochs", "1", "--json", "-q").stdout)
    assert all(name in helptext for name in (*fields, *race_fields))
    assert "train_loss      training loss at the final parameters" in helptext
    assert "before its\n                  update, as the book prints it" in helptext
    text = run_fit("--epochs", "3", "-q").stdout
    assert re.search(r"^train loss [0-9.]+ at the final parameters, after 3 epochs$", text, re.M)


def test_diverged_run_exits_non_zero_with_one_line() -> None:
    proc = run_fit("--input-scale", "1", "--json", "--quiet")
    assert proc.returncode == 1
    assert json.loads(proc.stdout)["status"] == "diverged"
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: Training diverged at epoch")


def test_a_diverged_run_in_text_mode_prints_only_the_error() -> None:
    proc = run_fit("--lr", "1e9", "--quiet")  # w and b overflow: nothing to show as a fit
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith("error: Training diverged") and "Traceback" not in proc.stderr


def test_bad_csv_exits_1_naming_the_line(tmp_path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("x,y\n1,2\n3,oops\n")
    proc = run_fit("--data", str(bad))
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: bad.csv line 3: 'oops' is not a number"
    assert "Traceback" not in proc.stderr


def test_csv_mlp_validation_json(tmp_path) -> None:
    data = tmp_path / "points.csv"
    data.write_text("x,y\n" + "".join(f"{i},{2 * i + 1}\n" for i in range(10)))
    proc = run_fit("--data", str(data), "--model", "mlp", "--hidden", "8", "--optimizer",
                   "adam", "--lr", "0.01", "--epochs", "50", "--input-scale", "0.1",
                   "--val-fraction", "0.2", "--seed", "1", "--json", "-q")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["val_loss"] is not None and result["n_val"] == 2
    assert result["config"]["hidden"] == 8 and "0.weight" in result["params"]


def test_race_shows_validation_and_why_every_racer_failed(tmp_path) -> None:
    proc = run_fit("--race", "--val-fraction", "0.2", "--epochs", "20", "-q")
    assert proc.returncode == 0, proc.stderr
    racer_lines = [ln for ln in proc.stdout.splitlines() if " w = " in ln]
    assert len(racer_lines) == 3 and all(", val loss " in ln for ln in racer_lines)

    huge = tmp_path / "huge.csv"
    huge.write_text("1,1e30\n3,4e30\n")  # y² overflows float32 before any step
    proc = run_fit("--race", "--data", str(huge), "-q")
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: Training cannot start") and "divide y" in proc.stderr


@pytest.mark.parametrize("args, message", [
    (("--race", "--model", "mlp"), "--race compares gd, momentum and Adam on the linear model"),
    (("--epochs", "0"), "--epochs must be at least 1"),
    (("--seed", "99999999999999999999"), "--seed must be between 0 and 2**63 - 1"),
    (("--data", ""), "--data is empty"),
    (("--hidden", "5000"), "--hidden and --activation shape the MLP"),
    (("--race", "--optimizer", "adam"), "--race runs gd, momentum and Adam side by side"),
])
def test_settings_the_run_cannot_honour_are_refused(args, message) -> None:
    proc = run_fit(*args, "--json")
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith(f"error: {message}") and proc.stderr.count("\n") == 1
    assert "Traceback" not in proc.stderr
