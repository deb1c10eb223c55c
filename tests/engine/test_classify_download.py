"""Weights downloads against a real HTTP server on 127.0.0.1: good, corrupt, truncated, server gone,
offline, cancelled. Never touches the internet."""

from __future__ import annotations

import hashlib
import json
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
    last = updates[-1]
    assert last["event"] == "download" and last["file"] == name
    assert last["bytes"] == last["total"] == len(PAYLOAD) and last["speed"] > 0
    assert weights.is_cached(url)
    assert weights.ensure_weights(url) == path  # second call: no download


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
    url = server(_named(PAYLOAD), "stalls")
    cancel = threading.Event()

    def progress(update):  # Cancel, a moment after all that was sent has arrived
        if update["bytes"] >= len(PAYLOAD) // 2:
            threading.Timer(0.5, cancel.set).start()

    with pytest.raises(JobStopped):  # not the read's timeout (a JobError)
        weights.ensure_weights(url, progress=progress, timeout=120, should_stop=cancel.is_set)
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
    real_sha256 = weights._sha256
    monkeypatch.setattr(weights, "_sha256", lambda path: hashed.append(path) or real_sha256(path))
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
