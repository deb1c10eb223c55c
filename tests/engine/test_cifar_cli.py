"""`python -m engine cifar ...` end to end on tiny data, and the torchrun path with 2 CPU ranks."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.engine.cifar_helpers import write_image_archive, write_image_folder

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_archive(tmp_path_factory):
    base = tmp_path_factory.mktemp("cifar-cli")
    folder = write_image_folder(base / "imgs", n_train=16, n_test=6)
    return write_image_archive(folder, base / "tiny.tar.gz")


def engine(*args, env=None, timeout=240):
    return subprocess.run([sys.executable, "-m", "engine", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


@pytest.mark.filterwarnings("ignore::FutureWarning")  # TorchScript is deprecated upstream
def test_train_json_then_resume_then_export(tiny_archive, tmp_path, capsys):
    common = ["--data", tiny_archive, "--model", "net", "--batch-size", "8", "--lr", "0.05",
              "--seed", "1", "--cache-dir", tmp_path / "cache", "--precision", "fp32"]
    first = engine("cifar", "train", *common, "--epochs", "1", "--classes", "cat,dog",
                   "--checkpoint", tmp_path / "c.pt", "--json")
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    assert {"test_acc", "train_time_s", "epochs", "history", "world_size"} <= set(result)
    assert result["epochs"] == 1 and result["world_size"] == 1
    assert result["class_names"] == ["cat", "dog"]
    assert "epoch 1 done" in first.stderr and "Traceback" not in first.stderr
    assert "evaluating on the test set: 0/12 images, ~" in first.stderr  # 2 classes x 6
    again = engine("cifar", "train", "--data", tiny_archive, "--cache-dir", tmp_path / "cache",
                   "--resume", tmp_path / "c.pt", "--epochs", "2", "--json")
    assert again.returncode == 0, again.stderr
    resumed = json.loads(again.stdout)
    assert resumed["epochs"] == 2 and resumed["history"][0] == result["history"][0]
    code, out, err = in_process(capsys, "cifar", "export", tmp_path / "c.pt",
                                tmp_path / "model.pt", "--json")
    assert code == 0, err
    assert json.loads(out)["class_names"] == ["cat", "dog"]
    if importlib.util.find_spec("onnx") is not None:  # the text names both files it writes
        code, out, err = in_process(capsys, "cifar", "export", tmp_path / "c.pt",
                                    tmp_path / "model.onnx")
        assert code == 0, err
        assert out.startswith(f"wrote {tmp_path / 'model.onnx'} and {tmp_path / 'model.json'} "
                              "(onnx; classes: cat, dog)")


def in_process(capsys, *args):
    from engine.cli import main

    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_user_errors_are_one_line_messages(tiny_archive, tmp_path, capsys):
    code, _, err = in_process(capsys, "cifar", "train", "--data", tmp_path / "nowhere",
                              "--model", "net")
    assert code == 1
    assert err.strip() == f"error: data path '{tmp_path / 'nowhere'}' does not exist"
    code, _, err = in_process(capsys, "cifar", "train", "--data", tiny_archive, "--model", "net",
                              "--classes", "cat,horse", "--cache-dir", tmp_path / "cache")
    assert code == 1 and "unknown class 'horse'" in err and "Traceback" not in err
    corrupt = tmp_path / "broken.pt"
    corrupt.write_bytes(b"nope")
    code, _, err = in_process(capsys, "cifar", "train", "--resume", corrupt)
    assert code == 1 and "not a readable checkpoint" in err
    code, _, err = in_process(capsys, "cifar", "train", "--model", "net")
    assert code == 1 and "--data PATH" in err


@pytest.mark.parametrize(("flag", "bad", "allowed"), [
    ("--epochs", "0", "a whole number of at least 1"),
    ("--batch-size", "0", "a whole number of at least 1"),
    ("--max-train", "-3", "a whole number of at least 1"),
    ("--max-test", "0", "a whole number of at least 1"),
    ("--lr", "nan", "a number above 0 and at most 100"),
    ("--lr", "0", "a number above 0 and at most 100"),
    ("--momentum", "1.5", "a number from 0 to 0.9999"),
    ("--muon-lr", "inf", "a number above 0 and at most 100"),
    ("--muon-momentum", "0", "a number above 0 and at most 0.9999"),
    ("--weight-decay", "-1", "a number from 0 to 10"),
    ("--label-smoothing", "1", "a number from 0 to 0.99"),
    ("--warmup", "1.5", "a number from 0 to 1"),
    ("--translate", "9", "a whole number of pixels from 0 to 8"),
    ("--tta", "4", "a whole number from 0 (off) to 3"),
    ("--eval-every", "-1", "a whole number, 0 (only at the end) or more"),
    ("--seed", "-1", "a whole number from 0 to 2**63 - 1"),
])
def test_a_bad_value_is_named_by_its_flag_with_the_allowed_range(tiny_archive, capsys, flag,
                                                                 bad, allowed):
    code, _, err = in_process(capsys, "cifar", "train", "--data", tiny_archive, "--model", "net",
                              "--schedule", "warmup_linear", flag, bad)
    assert code == 1
    assert err.strip() == f"error: {flag} must be {allowed}, not {bad}"


def test_info_reports_counts_and_channel_stats(tiny_archive, tmp_path, capsys):
    code, out, err = in_process(capsys, "cifar", "info", "--data", tiny_archive, "--cache-dir",
                                tmp_path / "c", "--json")
    assert code == 0, err
    data = json.loads(out)
    assert data["counts"]["train"] == {"cat": 16, "dog": 16, "ship": 16}
    assert len(data["mean"]) == 3 and all(0 < s < 1 for s in data["std"])


def test_torchrun_with_two_cpu_processes(tiny_archive, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "engine", "cifar", "train", "--data", str(tiny_archive), "--model", "net",
           "--epochs", "2", "--batch-size", "8", "--seed", "0", "--precision", "fp32",
           "--optimizer", "muon", "--muon-lr", "0.05",  # Muon steps every rank the same
           "--cache-dir", str(tmp_path / "cache"), "--checkpoint", str(tmp_path / "ddp.pt"),
           "--json"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    documents = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(documents) == 1  # only rank 0 prints
    result = json.loads(documents[0])
    assert result["world_size"] == 2 and result["epochs"] == 2
    assert result["status"] == "completed" and result["config"]["optimizer"] == "muon"
    assert sum(map(sum, result["confusion"])) == 18
    assert proc.stderr.count("epoch 1 done") == 1
    assert (tmp_path / "ddp.pt").is_file()


def torchrun_worker(tmp_path, config, stop_after=0, name="result"):
    out = tmp_path / f"{name}.json"
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(ROOT / "tests" / "engine" / "ddp_worker.py"), json.dumps(config), str(stop_after),
         str(out)], cwd=ROOT, capture_output=True, text=True, timeout=240,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


def test_torchrun_stopped_mid_epoch_resumes_exactly(tiny_archive, tmp_path):
    from engine.cifar.checkpoint import load_checkpoint

    config = {"data": str(tiny_archive), "model": "netdropout", "epochs": 2, "batch_size": 8,
              "seed": 2, "precision": "fp32", "flip": True, "translate": 2,
              "cache_dir": str(tmp_path / "cache")}
    straight = torchrun_worker(tmp_path, {**config, "checkpoint": str(tmp_path / "straight.pt")})
    # 6 steps an epoch (48 images, 8 per step over 2 ranks): stopped after step 2 of epoch 2
    stopped = torchrun_worker(tmp_path, {**config, "checkpoint": str(tmp_path / "stop.pt")},
                              stop_after=8, name="stopped")
    assert stopped["status"] == "stopped"
    saved = load_checkpoint(tmp_path / "stop.pt")
    assert (saved["epoch"], saved["step"]) == (1, 2)
    assert saved["partial"]["seen"] == 2 * 8  # both ranks' images, not rank 0's alone
    assert len(saved["rng_ranks"]) == 2
    resumed = torchrun_worker(tmp_path, {"resume": str(tmp_path / "stop.pt"),
                                         "cache_dir": str(tmp_path / "cache")}, name="resumed")
    assert [r["train_loss"] for r in resumed["history"]] == \
        [r["train_loss"] for r in straight["history"]]
    assert resumed["test_acc"] == straight["test_acc"]
    a, b = load_checkpoint(tmp_path / "straight.pt"), load_checkpoint(tmp_path / "stop.pt")
    assert all(torch_equal(a["model_state"][k], b["model_state"][k]) for k in a["model_state"])
    # the resumed epoch's speed counts only the images trained after the resume
    assert resumed["history"][1]["images_per_s"] < 4 * straight["history"][1]["images_per_s"]


def torch_equal(a, b):
    import torch

    return torch.equal(a, b)


@pytest.mark.parametrize(("args", "message"), [
    (["--data", "ARCHIVE", "--model", "net", "--lr", "-1"],
     "error: --lr must be a number above 0 and at most 100, not -1"),
    (["--model", "net"], "error: pass --data PATH"),  # checked before the trainer's settings
])
def test_torchrun_errors_print_once(tiny_archive, tmp_path, args, message):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "engine", "cifar", "train",
           *[str(tiny_archive) if a == "ARCHIVE" else a for a in args]]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode != 0
    assert proc.stderr.count(message) == 1, proc.stderr[-2000:]
    assert "error (rank" not in proc.stderr


def test_a_stop_while_the_data_loads_still_prints_json(tiny_archive, capsys, monkeypatch):
    import engine.cifar.trainer
    from engine.jobs import JobStopped

    def stopped_while_loading(config, ctx):
        raise JobStopped()

    monkeypatch.setattr(engine.cifar.trainer, "train_job", stopped_while_loading)
    code, out, err = in_process(capsys, "cifar", "train", "--data", tiny_archive, "--json")
    assert code == 130
    result = json.loads(out)
    assert result["status"] == "stopped" and result["epochs"] == 0 and result["test_acc"] is None


def test_other_ranks_print_only_their_own_problems(tiny_archive, capsys, monkeypatch):
    import engine.cifar.cli
    import engine.cifar.trainer
    from engine.jobs import JobError

    def failing(message, every_rank, ended_by_torchrun=False):
        def job(config, ctx):
            error = JobError(message)
            if every_rank:
                error.every_rank = True
            if ended_by_torchrun:  # as its SIGTERM does, once rank 0 has exited
                ctx.request_stop()
            raise error
        return job

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    # rank 0 says it for every rank, and torchrun then ends this one
    monkeypatch.setattr(engine.cifar.trainer, "train_job",
                        failing("lr is out of range", True, ended_by_torchrun=True))
    code, out, err = in_process(capsys, "cifar", "train", "--data", tiny_archive)
    assert (code, out, err) == (1, "", "")
    # no word from torchrun: rank 0 did not meet it, so this rank says it
    monkeypatch.setattr(engine.cifar.trainer, "train_job", failing("lr is out of range", True))
    monkeypatch.setattr(engine.cifar.cli, "EVERY_RANK_GRACE_S", 0.1)
    code, out, err = in_process(capsys, "cifar", "train", "--data", tiny_archive)
    assert code == 1 and err.strip() == "error (rank 1): lr is out of range"
    monkeypatch.setattr(engine.cifar.trainer, "train_job", failing("no data here", False))
    code, out, err = in_process(capsys, "cifar", "train", "--data", tiny_archive)
    assert code == 1 and err.strip() == "error (rank 1): no data here"


def test_rank_0_says_plainly_that_another_rank_has_gone(tiny_archive, tmp_path, capsys,
                                                        monkeypatch):
    import engine.cifar.trainer

    checkpoint = tmp_path / "c.pt"

    def failing(message, saves=False):
        def job(config, ctx):
            if saves:  # an epoch's end, before the other rank went
                checkpoint.write_bytes(b"saved at the last epoch")
            raise RuntimeError(message)
        return job

    # what gloo raises when the other rank is killed mid-step
    gone = ("[gloo/transport/tcp/pair.cc:545] Read error [127.0.0.1]:402: Connection reset by "
            "peer. This is typically caused by ...")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(engine.cifar.trainer, "train_job", failing(gone, saves=True))
    code, out, err = in_process(capsys, "cifar", "train", "--data", tiny_archive,
                                "--checkpoint", checkpoint)
    assert code == 1 and out == ""
    assert err.startswith("error: another process of this torchrun run stopped unexpectedly")
    assert "holds the last epoch it saved" in err and f"--resume {checkpoint}" in err
    assert "gloo" not in err
    # the file is an older run's, however recent: nothing of this one is there to resume
    os.utime(checkpoint, ns=(time.time_ns() + 10**9,) * 2)  # (a clock a little ahead, say)
    monkeypatch.setattr(engine.cifar.trainer, "train_job", failing(gone))
    code, out, err = in_process(capsys, "cifar", "train", "--data", tiny_archive,
                                "--checkpoint", checkpoint)
    assert err.strip().endswith("so training stopped before it saved a checkpoint")
    # rank 0's own failure (a store timeout, say) is said as it is, "peer" or not
    own = "wait timeout after 30000ms, keys: /peer_ready"
    monkeypatch.setattr(engine.cifar.trainer, "train_job", failing(own))
    code, out, err = in_process(capsys, "cifar", "train", "--data", tiny_archive)
    assert own in err and "another process" not in err


def test_a_peer_gone_is_recognised_on_the_read_and_the_write_side():
    from engine.cifar.cli import _peer_failed

    where = "[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:545]"
    tail = (" This is typically caused by a remote worker hanging or bugs in the application. "
            "Check the logs of the remote worker before reporting an error. GLHF!")
    # what rank 0 and rank 1 raised in every kill of the other rank on the 2-core VM
    assert _peer_failed(RuntimeError(
        f"{where} Read error [127.0.0.1]:10157: Connection reset by peer.{tail}"))
    assert _peer_failed(RuntimeError(
        f"{where[:-4]}561] Connection closed by peer [127.0.0.1]:33694. This is typically "
        "caused by a remote worker crashing."))
    # gloo's write-side failure (pair.cc's "writev " message with the socket's errno)
    assert _peer_failed(RuntimeError(f"{where[:-4]}481] writev [127.0.0.1]:40551: Broken pipe"))
    assert _peer_failed(RuntimeError(
        f"{where[:-4]}481] writev [127.0.0.1]:40551: Connection reset by peer"))
    # a store's broken pipe, and a broken pipe that is no RuntimeError, are not a peer's
    assert not _peer_failed(RuntimeError("[c10d] sendBytes failed on SocketImpl(fd=67): "
                                         "Broken pipe"))
    assert not _peer_failed(BrokenPipeError(32, "Broken pipe"))


def test_a_gpu_index_under_torchrun_is_refused_with_how_to_choose_gpus(tiny_archive, capsys,
                                                                       monkeypatch):
    import engine.cifar.trainer
    import engine.devices

    monkeypatch.setattr(engine.devices, "list_devices", lambda: [
        engine.devices.DeviceInfo(id=id_, kind=kind, name=id_, memory_bytes=None)
        for id_, kind in (("cpu", "cpu"), ("cuda:0", "cuda"), ("cuda:1", "cuda"))])
    devices_given = []

    def job(config, ctx):
        devices_given.append(ctx.device)
        return {"status": "completed", "test_acc": 0.5, "train_time_s": 0.0, "epochs": 1,
                "world_size": 2}

    monkeypatch.setattr(engine.cifar.trainer, "train_job", job)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    code, out, err = in_process(capsys, "cifar", "train", "--data", tiny_archive,
                                "--device", "cuda:1")
    assert (code, out, devices_given) == (1, "", [])
    assert err.startswith("error: under torchrun each process trains on the GPU of its local "
                          "rank (cuda:LOCAL_RANK), so --device cuda:1 cannot choose one")
    assert "--device cuda," in err and "CUDA_VISIBLE_DEVICES" in err
    code, _, err = in_process(capsys, "cifar", "train", "--data", tiny_archive, "--device", "cuda")
    assert code == 0 and devices_given == ["cuda:0"], err  # each rank's own GPU: the trainer's
    monkeypatch.setenv("WORLD_SIZE", "1")  # one process: the GPU asked for
    code, _, err = in_process(capsys, "cifar", "train", "--data", tiny_archive, "--device",
                              "cuda:1")
    assert code == 0 and devices_given[-1] == "cuda:1", err


def test_ctrl_c_while_pytorch_imports_still_prints_json(tiny_archive, capsys, monkeypatch):
    import contextlib
    import signal

    import engine.imports

    @contextlib.contextmanager
    def interrupted_imports():  # Ctrl-C in the second or so PyTorch takes to import
        os.kill(os.getpid(), signal.SIGINT)
        yield

    monkeypatch.setattr(engine.imports, "heavy_imports", interrupted_imports)
    code, out, err = in_process(capsys, "cifar", "train", "--data", tiny_archive, "--json")
    assert code == 130, err
    result = json.loads(out)
    assert result["status"] == "stopped" and result["epochs"] == 0
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back


def test_ctrl_c_while_the_data_decodes_says_so_and_stops_the_decode(tmp_path, capsys,
                                                                    monkeypatch):
    import signal

    import engine.cifar.data

    folder = write_image_folder(tmp_path / "imgs", n_train=100, n_test=2)  # 306 images
    decode = engine.cifar.data._decode_image
    decoded = []

    def decode_then_ctrl_c(raw, name):
        if not decoded:
            os.kill(os.getpid(), signal.SIGINT)
        decoded.append(name)
        return decode(raw, name)

    monkeypatch.setattr(engine.cifar.data, "_decode_image", decode_then_ctrl_c)
    code, out, err = in_process(capsys, "cifar", "train", "--data", folder, "--model", "net",
                                "--cache-dir", tmp_path / "cache", "--checkpoint",
                                tmp_path / "c.pt", "--json")
    assert code == 130, err
    assert json.loads(out)["status"] == "stopped"
    assert "stopping before training begins: nothing is trained and no checkpoint is written" \
        in err and "after this step" not in err
    assert len(decoded) <= 257  # the decode looks for a stop every 256 images
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and "imgs" not in p.parts]


def test_progress_json_lines_are_strict_json(capsys):
    from engine.cifar.cli import PROGRESS_PREFIX, _CliProgress

    _CliProgress(quiet=False, as_json=True)({"phase": "train", "loss": float("nan"),
                                             "eta_s": float("inf"), "step": 3})
    line = capsys.readouterr().err.strip()
    assert line.startswith(PROGRESS_PREFIX)
    update = json.loads(line[len(PROGRESS_PREFIX):], parse_constant=lambda c: 1 / 0)
    assert update == {"phase": "train", "loss": None, "eta_s": None, "step": 3}


def test_the_final_evaluation_shows_its_progress(capsys, monkeypatch):
    import engine.cli
    from engine.cifar.cli import _CliProgress, format_update

    def evaluate(done, eta_s):
        return {"phase": "evaluate", "done": done, "total": 10_000, "eta_s": eta_s}

    assert format_update(evaluate(4000, 6.2)) == \
        "evaluating on the test set: 4,000/10,000 images, ~6 s left"
    assert format_update(evaluate(0, 75)).endswith(": 0/10,000 images, ~1:15 left")
    assert format_update(evaluate(0, None)) == "evaluating on the test set: 0/10,000 images"
    assert format_update({"phase": "evaluate"}) == "evaluating on the test set"
    monkeypatch.setattr(engine.cli.time, "monotonic", lambda: 100.0)  # all in the same second
    progress = _CliProgress(quiet=False, as_json=False)
    progress({"phase": "train", "epoch": 1, "epochs": 1, "step": 1, "steps_per_epoch": 1,
              "loss": 1.0, "images_per_s": 10.0, "eta_s": 3.0})
    for done in (0, 1000, 2000):
        progress(evaluate(done, 5.0))
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("epoch 1/1 step 1/1")
    assert lines[1:] == ["evaluating on the test set: 0/10,000 images, ~5 s left"]


def test_an_evaluation_between_epochs_shows_its_progress_where_it_lasts(capsys, monkeypatch):
    import engine.cli
    from engine.cifar.cli import _CliProgress, format_update, stop_notice

    def testing(done):
        return {"phase": "evaluate", "done": done, "total": 10_000, "eta_s": 2.0, "epoch": 3,
                "between_epochs": True}

    assert format_update(testing(4000)) == \
        "testing after epoch 3: 4,000/10,000 images, ~2 s left"
    clock = [100.0]
    monkeypatch.setattr(engine.cli.time, "monotonic", lambda: clock[0])
    progress = _CliProgress(quiet=False, as_json=False)
    progress({"phase": "train", "epoch": 3, "epochs": 4, "step": 1, "steps_per_epoch": 1,
              "loss": 1.0, "images_per_s": 10.0, "eta_s": 3.0})
    progress(testing(0))  # in the same second: not shown (a short test prints nothing)
    clock[0] += 1.5
    progress(testing(6000))
    lines = capsys.readouterr().err.splitlines()
    assert lines[1:] == ["testing after epoch 3: 6,000/10,000 images, ~2 s left"]
    # a Ctrl-C now stops the run at this epoch's end, not in a final evaluation
    assert "this epoch's end" in stop_notice(progress.phase, progress.between_epochs)
    progress({"phase": "evaluate", "done": 0, "total": 10_000, "eta_s": 1.0, "epoch": 4,
              "between_epochs": False})
    assert "final evaluation" in stop_notice(progress.phase, progress.between_epochs)


def test_progress_json_carries_a_refused_setting_by_its_config_key(tiny_archive, capsys):
    from engine.cifar.cli import PROGRESS_PREFIX
    from engine.cifar.trainer import SettingError

    code, _, err = in_process(capsys, "cifar", "train", "--data", tiny_archive, "--model", "net",
                              "--batch-size", "0", "--progress-json")
    assert code == 1
    lines = err.strip().splitlines()
    assert lines[-1] == "error: --batch-size must be a whole number of at least 1, not 0"
    update = json.loads(lines[-2][len(PROGRESS_PREFIX):])
    assert update["phase"] == "error" and update["setting"]["key"] == "batch_size"
    assert SettingError(**update["setting"]).naming("Batch size") == \
        "Batch size must be a whole number of at least 1, not 0"


def test_a_cache_that_cannot_be_written_is_said_even_when_quiet(tiny_archive, tmp_path, capsys):
    from engine.cifar.cli import _CliProgress

    (tmp_path / "file").write_text("a file where the cache folder would go")
    code, out, err = in_process(capsys, "cifar", "info", "--data", tiny_archive,
                                "--cache-dir", tmp_path / "file")
    assert code == 0 and f"cannot keep the decoded images in '{tmp_path / 'file'}" in err
    _CliProgress(quiet=True, as_json=False)({"phase": "load", "step_name": "note",
                                             "message": "cannot keep the decoded images"})
    assert capsys.readouterr().err == "cannot keep the decoded images\n"


def test_the_summary_says_a_checkpoint_that_was_not_written(capsys):
    from engine.cifar.cli import _print_summary

    _print_summary({"status": "completed", "test_acc": 0.5, "train_time_s": 1.0, "epochs": 1,
                    "world_size": 1, "checkpoint": None,
                    "warning": "the trained model was not saved (disk full)"})
    assert "warning     the trained model was not saved (disk full)" in capsys.readouterr().out


def test_a_ctrl_c_while_stderr_writes_a_progress_line_still_says_it_stops(tmp_path,
                                                                         monkeypatch):
    import io
    import signal
    import threading

    from engine.cifar.cli import _CliProgress, _install_stop_handlers, _restore_handlers

    log = os.open(tmp_path / "stderr.txt", os.O_WRONLY | os.O_CREAT)

    class InterruptedDisk(io.RawIOBase):
        """stderr's file, where the first write is interrupted by a Ctrl-C."""

        def writable(self):
            return True

        def fileno(self):
            return log

        def write(self, data):
            if not stop_event.is_set():
                signal.getsignal(signal.SIGINT)(signal.SIGINT, None)
            return os.write(log, data)

    stop_event = threading.Event()
    stderr = io.TextIOWrapper(io.BufferedWriter(InterruptedDisk()), encoding="utf-8")
    monkeypatch.setattr(sys, "stderr", stderr)
    previous = _install_stop_handlers(stop_event, _CliProgress(quiet=True, as_json=False))
    try:
        print("epoch 1/2 step 3/9  loss 1.2", file=stderr, flush=True)  # no RuntimeError
    finally:
        _restore_handlers(previous)
        os.close(log)
    written = (tmp_path / "stderr.txt").read_text()
    assert stop_event.is_set() and "stopping" in written and "epoch 1/2 step 3/9" in written


def test_a_refused_setting_is_named_by_its_flag_or_else_in_words():
    from engine.cifar.cli import _setting_message
    from engine.cifar.trainer import SettingError
    from engine.cli import build_parser

    flags = build_parser().parse_args(["cifar", "train"]).setting_flags
    assert flags["tta_level"] == "--tta" and flags["batch_size"] == "--batch-size"
    assert _setting_message(SettingError("tta_level", "{name} must be at most 3, not 7"),
                            flags) == "--tta must be at most 3, not 7"
    # only a (hand-edited) checkpoint holds it: no flag to name, nor to set it with
    refused = SettingError("whiten_bias_epochs", "{name} must be 0 or more, not -1",
                           whose="checkpoint")
    assert _setting_message(refused, flags) == ("whiten bias epochs must be 0 or more, not -1 "
                                                "(the checkpoint's value, which no flag "
                                                "replaces)")


def test_train_arguments_parse_back_to_the_config_they_came_from():
    from engine.cifar.cli import train_arguments
    from engine.cli import build_parser

    config = {"data": "/d", "model": "fast", "classes": ["cat", "dog"], "epochs": 3,
              "lr": 0.05, "muon_lr": 0.2, "tta_level": 2, "flip": False, "compile": True,
              "channels_last": True, "max_train": None, "device": "cuda"}
    args = build_parser().parse_args(["cifar", "train", *train_arguments(config)])
    for key, value in config.items():
        expected = "cat,dog" if key == "classes" else value
        assert getattr(args, key) == expected, key
    assert "--max-train" not in train_arguments(config)  # None: the default
    with pytest.raises(ValueError, match="no flag for the setting 'whiten_bias_epochs'"):
        train_arguments({"whiten_bias_epochs": 2})
    with pytest.raises(ValueError, match="no flag for the setting 'json'"):  # not a setting
        train_arguments({"json": True})
    # off is passed too: a resume would otherwise take the checkpoint's compile=True
    assert train_arguments({"compile": False, "resume": "a.pt"}) == ["--no-compile",
                                                                     "--resume", "a.pt"]
    with pytest.raises(ValueError, match="class name with a comma .*'a,b'"):
        train_arguments({"classes": ["a,b", "c"]})
