"""Weights downloads against a real HTTP server on 127.0.0.1: good, corrupt, truncated, server gone,
offline, cancelled. Never touches the internet."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
from pathlib import Path

import pytest

from engine.classify import weights
from engine.jobs import JobError, JobStopped
from tests.engine.conftest import PAYLOAD


def _named(payload: bytes, stem: str = "tinynet") -> str:
    return f"{stem}-{hashlib.sha256(payload).hexdigest()[:8]}.pth"


def _leftovers() -> list[Path]:
    folder = weights.checkpoint_dir()
    return sorted(folder.iterdir()) if folder.exists() else []


def test_good_download_lands_in_torch_cache_with_progress(server, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    name = _named(PAYLOAD)
    url = server(name, "good")
    updates = []
    path = weights.ensure_weights(url, progress=updates.append)
    assert path == tmp_path / "torch-home" / "hub" / "checkpoints" / name
    assert path.read_bytes() == PAYLOAD
    assert _leftovers() == [path]
    last = [u for u in updates if u["event"] == "download"][-1]
    assert last["file"] == name
    assert last["bytes"] == last["total"] == len(PAYLOAD) and last["speed"] > 0
    assert updates[-1]["event"] == "verify"  # then its hash is checked
    assert weights.is_cached(url)
    assert weights.ensure_weights(url) == path  # second call: no download


class FakeClock:
    """time.monotonic that moves 10 ms each time it is read: throttling is then tested on
    a fixed timeline, not the machine's speed."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.01
        return self.now


def test_progress_of_a_download_is_throttled(server, tmp_path, monkeypatch):
    """4 MiB from 127.0.0.1 read 16 KiB at a time (256 reads): the first and the last bytes
    are reported, and between them at most one report every DOWNLOAD_REPORT_INTERVAL_S."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # the saved file stays here
    payload = bytes(range(256)) * (16 * 1024)
    chunk = 16 * 1024
    url = server(_named(payload), "good", payload)
    clock = FakeClock()
    monkeypatch.setattr(weights, "CHUNK_BYTES", chunk)
    monkeypatch.setattr(weights.time, "monotonic", clock)
    reported_at = []
    downloads = []

    def progress(update):
        if update["event"] == "download":
            downloads.append(update)
            reported_at.append(clock.now)

    path = weights.ensure_weights(url, progress=progress)
    assert path.read_bytes() == payload
    assert downloads[0]["bytes"] == 0
    assert downloads[-1]["bytes"] == downloads[-1]["total"] == len(payload)  # 100%
    reads = len(payload) // chunk
    assert 3 <= len(downloads) <= reads // 4  # some between, far from one a read
    gaps = [b - a for a, b in zip(reported_at[:-2], reported_at[1:-1], strict=True)]
    assert min(gaps) >= weights.DOWNLOAD_REPORT_INTERVAL_S - 1e-9
    done = [u["bytes"] for u in downloads]
    assert done == sorted(set(done))


def test_corrupt_file_is_rejected_and_not_kept(server):
    name = _named(b"the real weights")
    url = server(name, "good", PAYLOAD)  # served bytes do not match the hash in the name
    with pytest.raises(JobError, match=f"downloaded {name} is corrupt"):
        weights.ensure_weights(url)
    assert _leftovers() == []


@pytest.mark.parametrize("behaviour", ["truncated", "dies"])
def test_broken_transfers_leave_nothing_behind(server, behaviour):
    name = _named(PAYLOAD)
    url = server(name, behaviour)
    with pytest.raises(JobError) as err:
        weights.ensure_weights(url)
    message = str(err.value)
    assert name in message and ("truncated" in message or "broke off" in message)
    assert str(weights.checkpoint_dir()) in message
    assert _leftovers() == []


def test_http_error_names_the_file(server):
    url = server("gone-12345678.pth", "missing")
    with pytest.raises(JobError, match="404"):
        weights.ensure_weights(url)


def test_offline_fails_and_says_where_to_put_the_file():
    with socket.socket() as s:  # a port nobody listens on: connection refused, like no network
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/resnet18-f37072fd.pth"
    with pytest.raises(JobError) as err:  # at once: no retry loop on a refused port
        weights.ensure_weights(url)
    message = str(err.value)
    assert "resnet18-f37072fd.pth" in message and str(weights.checkpoint_dir()) in message


def test_cancel_mid_download_leaves_nothing(server):
    name = _named(PAYLOAD)
    url = server(name, "slow")
    seen = []

    def stop_after_some_bytes() -> bool:
        return bool(seen) and seen[-1]["bytes"] > 100_000

    with pytest.raises(JobStopped):
        weights.ensure_weights(url, progress=seen.append, should_stop=stop_after_some_bytes)
    assert 0 < seen[-1]["bytes"] < len(PAYLOAD)
    assert _leftovers() == []


def test_cancel_ends_a_download_that_the_server_has_stalled(server):
    name = _named(PAYLOAD)
    url = server(name, "stalls")
    cancel = threading.Event()

    def cancel_once_all_that_was_sent_is_written() -> None:
        # seen on disk, not in the reports: they are throttled, and none comes while stalled
        partial = weights.checkpoint_dir() / f".{name}.{os.getpid()}.partial"
        for _ in range(600):
            if partial.is_file() and partial.stat().st_size >= len(PAYLOAD) // 2:
                break
            cancel.wait(0.05)
        cancel.wait(0.3)  # the next read is surely waiting on the server by now
        cancel.set()

    canceller = threading.Thread(target=cancel_once_all_that_was_sent_is_written, daemon=True)
    canceller.start()
    with pytest.raises(JobStopped):  # not the read's timeout (a JobError)
        weights.ensure_weights(url, timeout=120, should_stop=cancel.is_set)
    canceller.join()
    assert _leftovers() == []


def test_mirror_replaces_the_torchvision_host(monkeypatch):
    monkeypatch.setenv(weights.MIRROR_ENV, "http://127.0.0.1:9/models/")
    url = weights.TORCHVISION_BASE_URL + "resnet18-f37072fd.pth"
    assert weights.download_url(url) == "http://127.0.0.1:9/models/resnet18-f37072fd.pth"
    monkeypatch.setenv(weights.MIRROR_ENV, "notaurl")
    with pytest.raises(JobError, match="TORCHDESK_WEIGHTS_MIRROR is 'notaurl', not a URL"):
        weights.download_url(url)


def test_torchvision_model_download_goes_through_the_mirror(server, monkeypatch):
    """load_model for a torchvision architecture fetches its real file name via the mirror and
    refuses a file whose hash does not match."""
    from engine.classify.zoo import load_model

    url = server("squeezenet1_1-b8a52dc0.pth", "good", b"not really squeezenet")
    monkeypatch.setenv(weights.MIRROR_ENV, url.rsplit("/", 1)[0])
    with pytest.raises(JobError, match="squeezenet1_1-b8a52dc0.pth is corrupt"):
        load_model("squeezenet1_1")
    assert _leftovers() == []


def test_a_hanging_name_lookup_still_fails(monkeypatch):
    real_lookup = socket.getaddrinfo
    never_answered = threading.Event()

    def hanging_lookup(host, *args, **kwargs):
        if host == "weights.invalid":
            never_answered.wait()  # set only when the test ends, to free the lookup thread
        return real_lookup(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", hanging_lookup)
    try:
        with pytest.raises(JobError, match="tiny-1234abcd.pth .*longer than"):
            weights.ensure_weights("http://weights.invalid/tiny-1234abcd.pth", timeout=2)
    finally:
        never_answered.set()


def test_a_cached_copy_that_is_cut_short_or_another_file_is_refused(tmp_path, monkeypatch):
    """Weights brought from another machine (as the offline message advises) may arrive cut
    short: the message names the file and how to get a good one, instead of a load error."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    url = weights.TORCHVISION_BASE_URL + _named(PAYLOAD)
    copy = weights.cached_path(url)
    copy.parent.mkdir(parents=True)
    copy.write_bytes(PAYLOAD[: len(PAYLOAD) // 2])
    with pytest.raises(JobError, match=f"{copy} is not the file published.*Delete it"):
        weights.ensure_weights(url)
    assert copy.exists()  # the user's file: theirs to delete


def test_a_good_cached_copy_is_hashed_once(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    url = weights.TORCHVISION_BASE_URL + _named(PAYLOAD)
    copy = weights.cached_path(url)
    copy.parent.mkdir(parents=True)
    copy.write_bytes(PAYLOAD)
    hashed = []
    real_sha256 = weights.sha256_of
    monkeypatch.setattr(weights, "sha256_of",
                        lambda path, *args, **kwargs: hashed.append(path)
                        or real_sha256(path, *args, **kwargs))
    assert weights.ensure_weights(url) == copy
    assert weights.ensure_weights(url) == copy
    assert hashed == [copy]
    copy.write_bytes(PAYLOAD[:10])  # replaced since: checked again
    with pytest.raises(JobError, match="not the file published"):
        weights.ensure_weights(url)


def test_a_notes_file_that_is_not_ours_only_costs_a_hash(tmp_path, monkeypatch):
    """verified-weights.json holding something else (a list, say) is no crash: the copy is
    hashed and the notes written again."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("TORCHDESK_CACHE_DIR", str(tmp_path / "cache"))
    url = weights.TORCHVISION_BASE_URL + _named(PAYLOAD)
    copy = weights.cached_path(url)
    copy.parent.mkdir(parents=True)
    copy.write_bytes(PAYLOAD)
    notes = tmp_path / "cache" / weights.VERIFIED_FILE
    notes.parent.mkdir()
    notes.write_text("[1, 2]")
    assert weights.ensure_weights(url) == copy
    assert json.loads(notes.read_text()) == {str(copy): [len(PAYLOAD), copy.stat().st_mtime_ns]}


# ---- the SHA-256 check: progress and stop, like the download ------------------------------------
FEW_MB = bytes(range(256)) * (4 * 4096)  # 4 MiB
SMALL_CHUNK = 64 * 1024


@pytest.fixture
def small_hash_steps(monkeypatch):
    """Hash 64 KiB at a time and report every step, so a few MB give many reports."""
    monkeypatch.setattr(weights, "HASH_CHUNK_BYTES", SMALL_CHUNK)
    monkeypatch.setattr(weights, "CHECK_REPORT_INTERVAL_S", 0.0)


def _copy_in_cache(tmp_path, monkeypatch, payload: bytes = FEW_MB) -> tuple[str, Path, Path]:
    """A good copy of some weights already in the cache: (its url, its path, the notes file)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("TORCHDESK_CACHE_DIR", str(tmp_path / "cache"))
    url = weights.TORCHVISION_BASE_URL + _named(payload)
    copy = weights.cached_path(url)
    copy.parent.mkdir(parents=True)
    copy.write_bytes(payload)
    return url, copy, tmp_path / "cache" / weights.VERIFIED_FILE


def _checks(updates: list[dict]) -> list[dict]:
    return [u for u in updates if u["event"] == "verify"]


def test_checking_a_cached_copy_reports_progress_up_to_its_size(tmp_path, monkeypatch,
                                                                small_hash_steps):
    url, copy, notes = _copy_in_cache(tmp_path, monkeypatch)
    updates = []
    assert weights.ensure_weights(url, progress=updates.append) == copy
    checks = _checks(updates)
    done = [u["bytes"] for u in checks]
    assert done[0] == 0 and done[-1] == len(FEW_MB)
    assert len(done) == len(FEW_MB) // SMALL_CHUNK + 1 and done == sorted(set(done))
    assert all(u["total"] == len(FEW_MB) and u["file"] == copy.name for u in checks)
    assert not any(u["downloaded"] for u in checks)
    assert str(copy) in json.loads(notes.read_text())
    updates.clear()
    weights.ensure_weights(url, progress=updates.append)  # remembered: no check, no reports
    assert updates == []


def test_progress_of_a_check_is_throttled(tmp_path, monkeypatch):
    """Between the first and the last, reports come at most every CHECK_REPORT_INTERVAL_S, on
    a fake clock that moves 10 ms each time it is read (no timing in the test)."""
    class FakeClock:
        now = 0.0

        def __call__(self) -> float:
            self.now += 0.01
            return self.now

    clock = FakeClock()
    monkeypatch.setattr(weights, "HASH_CHUNK_BYTES", SMALL_CHUNK)
    monkeypatch.setattr(weights.time, "monotonic", clock)
    path = tmp_path / "weights.bin"
    path.write_bytes(FEW_MB)
    reported_at = []
    updates = []
    digest = weights.sha256_of(path, progress=lambda u: (updates.append(u),
                                                         reported_at.append(clock.now)))
    assert digest == hashlib.sha256(FEW_MB).hexdigest()
    assert updates[0]["bytes"] == 0 and updates[-1]["bytes"] == len(FEW_MB)
    assert 3 <= len(updates) < len(FEW_MB) // SMALL_CHUNK  # some between, not one per chunk
    gaps = [b - a for a, b in zip(reported_at[:-2], reported_at[1:-1], strict=True)]
    assert min(gaps) >= weights.CHECK_REPORT_INTERVAL_S - 1e-9


def test_a_check_stopped_midway_is_not_remembered_and_runs_again(tmp_path, monkeypatch,
                                                                 small_hash_steps):
    url, copy, notes = _copy_in_cache(tmp_path, monkeypatch)
    updates = []

    def stop_halfway() -> bool:
        checks = _checks(updates)
        return bool(checks) and checks[-1]["bytes"] >= len(FEW_MB) // 2

    with pytest.raises(JobStopped, match=f"stopped checking {copy.name}: it is not marked as "
                                         "checked, and is checked again"):
        weights.ensure_weights(url, progress=updates.append, should_stop=stop_halfway)
    assert 0 < _checks(updates)[-1]["bytes"] < len(FEW_MB)
    assert copy.read_bytes() == FEW_MB  # the user's file stays
    assert not notes.exists() or str(copy) not in json.loads(notes.read_text())
    updates.clear()
    assert weights.ensure_weights(url, progress=updates.append) == copy  # checked again, whole
    assert _checks(updates)[-1]["bytes"] == len(FEW_MB)
    assert str(copy) in json.loads(notes.read_text())


def test_a_download_is_checked_with_progress_and_a_stop_then_saves_nothing(server, tmp_path,
                                                                           monkeypatch,
                                                                           small_hash_steps):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # it is saved at the end
    name = _named(PAYLOAD)
    url = server(name, "good")
    updates = []

    def stop_once_checking() -> bool:
        checks = _checks(updates)
        return bool(checks) and checks[-1]["bytes"] > 0

    with pytest.raises(JobStopped, match=f"stopped checking the downloaded {name}; nothing was "
                                         "saved"):
        weights.ensure_weights(url, progress=updates.append, should_stop=stop_once_checking)
    assert updates[0]["event"] == "download" and _checks(updates)[0]["downloaded"]
    assert _leftovers() == []
    updates.clear()
    path = weights.ensure_weights(url, progress=updates.append)
    assert path.read_bytes() == PAYLOAD and _checks(updates)[-1]["bytes"] == len(PAYLOAD)


def test_cli_shows_the_check_and_its_first_ctrl_c_stops_it(tmp_path, monkeypatch, capsys,
                                                           small_hash_steps):
    """`python -m engine classify --model squeezenet1_1` with a copy of its weights brought from
    elsewhere: stderr says the file is being checked; Ctrl-C midway stops the check (exit 130,
    saying the file is checked again next time), and the next run checks it again."""
    import signal

    from PIL import Image

    from engine.cli import main

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("TORCHDESK_CACHE_DIR", str(tmp_path / "cache"))
    copy = weights.checkpoint_dir() / "squeezenet1_1-b8a52dc0.pth"
    copy.parent.mkdir(parents=True)
    copy.write_bytes(FEW_MB)  # not the published file: only a full check can tell
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (64, 48), "green").save(photo)
    real_report = weights._report

    def ctrl_c_halfway(progress, name, done, total, *args, **kwargs):
        real_report(progress, name, done, total, *args, **kwargs)
        if done >= len(FEW_MB) // 2 and not interrupted:
            interrupted.append(done)
            os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl-C

    interrupted: list[int] = []
    monkeypatch.setattr(weights, "_report", ctrl_c_halfway)
    assert main(["classify", str(photo), "--model", "squeezenet1_1"]) == 130
    out, err = capsys.readouterr()
    assert out == ""
    assert f"checking the weights {copy.name} (once, at their first use): 0% of 4.0 MB" in err
    assert f"stopped checking {copy.name}: it is not marked as checked, and is checked again" \
        in err
    assert "Traceback" not in err
    notes = tmp_path / "cache" / weights.VERIFIED_FILE
    assert not notes.exists() or str(copy) not in json.loads(notes.read_text())

    monkeypatch.setattr(weights, "_report", real_report)
    assert main(["classify", str(photo), "--model", "squeezenet1_1"]) == 1  # checked again
    assert f"{copy} is not the file published" in capsys.readouterr().err


def test_weights_are_checked_before_the_network_is_built(tmp_path, monkeypatch,
                                                         small_hash_steps):
    """Building a big torchvision network takes seconds that cannot be stopped or followed:
    the check of its weights comes first, so its progress shows at once, a stop is obeyed at
    once, and a file that is not the published one is refused without building anything."""
    import torchvision.models

    from engine.classify.zoo import load_model

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("TORCHDESK_CACHE_DIR", str(tmp_path / "cache"))
    copy = weights.checkpoint_dir() / "squeezenet1_1-b8a52dc0.pth"
    copy.parent.mkdir(parents=True)
    copy.write_bytes(FEW_MB)
    events = []
    real_get_model = torchvision.models.get_model
    monkeypatch.setattr(torchvision.models, "get_model",
                        lambda *args, **kwargs: events.append("build")
                        or real_get_model(*args, **kwargs))

    def progress(update):
        event = update["event"]
        events.append(f"loading: {update['stage']}" if event == "loading" else event)

    with pytest.raises(JobStopped):
        load_model("squeezenet1_1", progress=progress, should_stop=lambda: "verify" in events)
    assert events == ["loading: import", "loading: weights", "verify"]
    with pytest.raises(JobError, match="not the file published"):
        load_model("squeezenet1_1", progress=progress)
    assert "build" not in events


def test_cli_progress_counts_megabytes_as_the_model_list_does():
    """The size a download or check says is the one --list-models gives (torchvision's
    file sizes are in 1024 × 1024-byte MB)."""
    from engine.classify.cli import _format_progress
    from engine.classify.zoo import torchvision_model_info

    info = torchvision_model_info("resnet50")
    size = round(info.file_mb * 1024 * 1024)
    listed = f"{info.file_mb:.1f} MB"
    assert listed in info.summary
    for event in ("download", "verify"):
        line = _format_progress({"event": event, "file": "resnet50.pth", "bytes": size,
                                 "total": size, "speed": 1.0, "eta": None})
        assert f"of {listed}" in line


def test_cli_prints_each_phase_of_a_load_at_once(capsys):
    """Progress lines are at most one a second, but the check's first line follows the
    download's last at once, and the model's line the check's."""
    from engine.classify.cli import _each_phase_at_once, _format_progress
    from engine.cli import StderrProgress

    progress = _each_phase_at_once(StderrProgress(_format_progress, interval=3600))
    size = 8 * 1024 * 1024
    for event in ("download", "download", "verify", "verify"):
        progress({"event": event, "file": "w-1234abcd.pth", "bytes": size, "total": size,
                  "speed": 1e6, "eta": None, "downloaded": True})
    progress({"event": "model", "model": {"title": "ResNet-18"}, "load_seconds": 1.25})
    assert capsys.readouterr().err.splitlines() == [
        "downloading w-1234abcd.pth: 8.0 of 8.0 MB, 1.0 MB/s",
        "checking the downloaded weights w-1234abcd.pth: 100% of 8.0 MB",
        "model: ResNet-18 (1.2 s)",
    ]


# ---- files that cannot be read or written: a plain message, never a raw OSError ---------------
# The tests run as root, whom chmod 000 does not stop: open() is replaced where it is used.
class _WrappedFile:
    """A file object standing in for ``file``: what a subclass does not replace is the file's."""

    def __init__(self, file):
        self._file = file

    def __getattr__(self, attr):
        return getattr(self._file, attr)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self._file.close()


def _open_that_fails(monkeypatch, module, path: Path, error: OSError,
                     after_bytes: int | None = None):
    """``module``'s open() fails for ``path``: at once (``after_bytes`` None), or its reads
    fail once ``after_bytes`` were read (a file made unreadable, a disk failing midway)."""
    real_open = open

    class FailingReads(_WrappedFile):
        _read = 0

        def read(self, size=-1):
            if self._read >= after_bytes:
                raise error
            data = self._file.read(size)
            self._read += len(data)
            return data

    def failing_open(file, mode="r", *args, **kwargs):
        if Path(file) != path:
            return real_open(file, mode, *args, **kwargs)
        if after_bytes is None:
            raise error
        return FailingReads(real_open(file, mode, *args, **kwargs))

    monkeypatch.setattr(module, "open", failing_open, raising=False)


def test_a_cached_copy_that_cannot_be_read_is_named_with_what_to_do(tmp_path, monkeypatch):
    url, copy, notes = _copy_in_cache(tmp_path, monkeypatch)
    _open_that_fails(monkeypatch, weights, copy, PermissionError(13, "Permission denied"))
    with pytest.raises(JobError) as err:
        weights.ensure_weights(url)
    assert str(err.value) == (f"cannot read {copy} to check it (Permission denied): give this "
                              "user permission to read it, or delete it and it is downloaded "
                              "again.")
    assert not notes.exists()


def test_a_cached_copy_that_becomes_unreadable_during_its_check(tmp_path, monkeypatch,
                                                                small_hash_steps):
    url, copy, notes = _copy_in_cache(tmp_path, monkeypatch)
    _open_that_fails(monkeypatch, weights, copy, OSError(5, "Input/output error"),
                     after_bytes=len(FEW_MB) // 2)
    updates = []
    with pytest.raises(JobError, match=f"cannot read {copy} to check it "
                                       r"\(Input/output error\)"):
        weights.ensure_weights(url, progress=updates.append)
    assert 0 < _checks(updates)[-1]["bytes"] < len(FEW_MB)  # it failed midway
    assert not notes.exists()
    assert copy.read_bytes() == FEW_MB  # the user's file stays


def test_a_folder_where_the_weights_file_should_be_is_named_before_any_download(server):
    name = _named(PAYLOAD)
    url = server(name, "good")
    in_the_way = weights.checkpoint_dir() / name
    in_the_way.mkdir(parents=True)
    updates = []
    try:
        with pytest.raises(JobError, match=f"{in_the_way} is not a file, but the weights file "
                                           "should be there: remove it"):
            weights.ensure_weights(url, progress=updates.append)
        assert updates == []  # nothing downloaded
    finally:
        in_the_way.rmdir()


def test_a_checkpoint_folder_that_cannot_be_made_says_so(server, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    (tmp_path / "torch-home" / "hub").mkdir(parents=True)
    weights.checkpoint_dir().write_text("a file where the folder should be")
    url = server(_named(PAYLOAD), "good")
    with pytest.raises(JobError, match=f"cannot save {_named(PAYLOAD)} in "
                                       f"{weights.checkpoint_dir()} .*; nothing was saved. "
                                       "Make room there or give this user permission"):
        weights.ensure_weights(url)


@pytest.mark.parametrize("failing", ["open", "write"])
def test_a_download_that_cannot_be_saved_says_so_and_leaves_nothing(server, monkeypatch,
                                                                    failing):
    name = _named(PAYLOAD)
    url = server(name, "good")
    partial = weights.checkpoint_dir() / f".{name}.{os.getpid()}.partial"
    real_open = open
    full_disk = OSError(28, "No space left on device")

    class FullDisk(_WrappedFile):
        def write(self, data):
            raise full_disk

    def open_on_a_full_disk(file, mode="r", *args, **kwargs):
        if Path(file) != partial:
            return real_open(file, mode, *args, **kwargs)
        if failing == "open":
            raise PermissionError(13, "Permission denied")
        return FullDisk(real_open(file, mode, *args, **kwargs))

    monkeypatch.setattr(weights, "open", open_on_a_full_disk, raising=False)
    why = "Permission denied" if failing == "open" else "No space left on device"
    with pytest.raises(JobError, match=f"cannot save {name} in {weights.checkpoint_dir()} "
                                       rf"\({why}\); nothing was saved"):
        weights.ensure_weights(url)
    assert _leftovers() == []


def test_weights_that_cannot_be_read_are_not_called_something_else(tmp_path, monkeypatch):
    """Import weights… of a file this user may not read: said so, not 'not a PyTorch weights
    file'."""
    from engine.classify import zoo
    from engine.classify.zoo import load_model

    mine = tmp_path / "mine.pth"
    mine.write_bytes(b"\x80" + b"\0" * 64)
    _open_that_fails(monkeypatch, zoo, mine, PermissionError(13, "Permission denied"))
    with pytest.raises(JobError) as err:
        load_model("squeezenet1_1", weights_file=str(mine))
    assert str(err.value).startswith(f"cannot read {mine} (Permission denied): give this user "
                                     "permission to read it")
