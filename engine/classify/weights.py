"""Pretrained weights on disk: torch's own cache, verified downloads, clear offline failures.

Files go to ``torch.hub.get_dir()/checkpoints`` (so ``TORCH_HOME`` is respected and files are
shared with ``torch.hub`` / torchvision). A download streams into a hidden ``.partial`` file in the
same folder, its SHA-256 is checked against the prefix in the file name (torchvision names files
``name-<sha256 prefix>.pth``), and only then is it renamed into place: a truncated, corrupt or
cancelled download never leaves a file behind that looks like weights. A file already in the
cache is checked the same way the first time it is used (then remembered, see
:func:`_remember_verified`); both checks report progress and can be stopped, like the download.

``TORCHDESK_WEIGHTS_MIRROR`` (a base URL) replaces ``https://download.pytorch.org/models/`` for
machines behind a mirror (and for tests, which serve files from 127.0.0.1).
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

from engine.downloads import cancel_blocked_reads
from engine.jobs import JobError, JobStopped

TORCHVISION_BASE_URL = "https://download.pytorch.org/models/"
MIRROR_ENV = "TORCHDESK_WEIGHTS_MIRROR"
HASH_IN_NAME = re.compile(r"-([a-f0-9]{6,64})\.")  # the same rule torch.hub uses
CHUNK_BYTES = 256 * 1024
#: A download reports its progress at most this often (seconds), besides its first and last
#: bytes: one report a chunk was hundreds a second from a fast mirror, each through the GUI.
DOWNLOAD_REPORT_INTERVAL_S = 0.1
#: Bytes hashed per step when checking a weights file; a stop is noticed between steps.
HASH_CHUNK_BYTES = 1024 * 1024
#: A check reports its progress at most this often (seconds), besides its first and last bytes.
CHECK_REPORT_INTERVAL_S = 0.1
#: Seconds to wait for a connection or for the next bytes; offline machines fail well within it.
NETWORK_TIMEOUT_S = 8.0

DownloadProgress = Callable[[dict], None]


def checkpoint_dir() -> Path:
    """``$TORCH_HOME/hub/checkpoints`` (torch's default cache for weights files)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def file_name(url: str) -> str:
    return os.path.basename(urlparse(url).path)


def cached_path(url: str) -> Path:
    """Where the weights at ``url`` live once downloaded (whether or not they are there yet)."""
    return checkpoint_dir() / file_name(url)


def is_cached(url: str) -> bool:
    return cached_path(url).is_file()


def download_url(url: str) -> str:
    """The URL to fetch from, after applying ``TORCHDESK_WEIGHTS_MIRROR`` when set."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if mirror and url.startswith(TORCHVISION_BASE_URL):
        if urlparse(mirror).scheme not in ("http", "https", "file"):
            raise JobError(f"{MIRROR_ENV} is {mirror!r}, not a URL: give one such as "
                           "http://host/models/, or unset it to download from PyTorch")
        return mirror.rstrip("/") + "/" + url[len(TORCHVISION_BASE_URL):]
    return url


def expected_hash_prefix(name: str) -> str | None:
    match = HASH_IN_NAME.search(name)
    return match.group(1) if match else None


def _where_to_put(url: str) -> str:
    return (
        f"Without a network, download {url} on another machine and put it in "
        f"{checkpoint_dir()}{os.sep} (or load the file as weights: --weights FILE, or "
        "Import weights… in the window)."
    )


def ensure_weights(
    url: str,
    progress: DownloadProgress | None = None,
    should_stop: Callable[[], bool] | None = None,
    timeout: float = NETWORK_TIMEOUT_S,
) -> Path:
    """Path of the verified weights file for ``url``, downloading it first when needed.

    ``progress`` gets ``{"event": "download", "file", "bytes", "total", "speed", "eta"}`` dicts
    (the first and last bytes, and at most every ``DOWNLOAD_REPORT_INTERVAL_S`` between), then,
    while the file's SHA-256 is checked, ``{"event": "verify", ...}`` ones (the same keys,
    and ``downloaded``: false for a copy already in the cache). ``should_stop()`` returning true
    cancels (raises :class:`JobStopped` saying what was stopped; leaves no new file, and a copy
    whose check was stopped is not noted as verified). Network and verification failures raise
    :class:`JobError` naming the file and where it goes.
    """
    target = cached_path(url)
    if target.is_file():
        _check_cached_copy(target, progress, should_stop)
        return target
    if target.exists() or target.is_symlink():  # a folder under its name, a broken link
        raise JobError(
            f"{target} is not a file, but the weights file should be there: remove it, and "
            "the weights are downloaded again (or load them as your own weights: --weights "
            "FILE, or Import weights… in the window)."
        )
    name = target.name
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _cannot_save(name, target.parent, exc) from None
    source = download_url(url)
    partial = target.with_name(f".{name}.{os.getpid()}.partial")
    try:
        _fetch(source, partial, name, progress, should_stop, timeout)
        expected = expected_hash_prefix(name)
        if expected:
            try:
                actual = sha256_of(partial, name, progress, should_stop, downloaded=True)
            except JobStopped:
                raise JobStopped(f"stopped checking the downloaded {name}; nothing was saved") \
                    from None
            except OSError as exc:
                raise JobError(f"cannot read back the downloaded {name} from {target.parent} "
                               f"to check it ({_why(exc)}); nothing was saved. Try again, or: "
                               + _where_to_put(url)) from None
            if not actual.startswith(expected):
                raise JobError(
                    f"downloaded {name} is corrupt: its SHA-256 starts {actual[:len(expected)]}, "
                    f"expected {expected}; nothing was saved. Try again, or: {_where_to_put(url)}"
                )
        try:
            os.replace(partial, target)
        except OSError as exc:
            raise _cannot_save(name, target.parent, exc) from None
    finally:
        partial.unlink(missing_ok=True)
    if expected:
        _remember_verified(target)
    return target


VERIFIED_FILE = "verified-weights.json"


def _stamp(path: Path) -> list:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _verified() -> dict:
    import json

    from engine.cache import cache_root

    try:
        notes = json.loads((cache_root() / VERIFIED_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return notes if isinstance(notes, dict) else {}  # a file some other tool wrote there


def _remember_verified(path: Path) -> None:
    """Note that ``path``, as it is now (size, time), has the SHA-256 its name promises, so
    it is not hashed again at every load. A note that cannot be written costs a hash later."""
    import json

    from engine.cache import cache_root
    from engine.files import remove_quietly, temporary_name

    note_file = cache_root() / VERIFIED_FILE
    tmp = temporary_name(note_file)
    try:
        notes = {**_verified(), str(path): _stamp(path)}
        note_file.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(notes), encoding="utf-8")
        os.replace(tmp, note_file)
    except OSError:
        remove_quietly(tmp)


def _why(exc: OSError) -> str:
    """'Permission denied', 'No space left on device': an OSError in plain words."""
    return exc.strerror or str(exc) or type(exc).__name__


def _cannot_save(name: str, folder: Path, exc: OSError) -> JobError:
    return JobError(
        f"cannot save {name} in {folder} ({_why(exc)}); nothing was saved. Make room there or "
        "give this user permission to write in it, or set TORCH_HOME to a folder that can "
        "hold the weights."
    )


def _check_cached_copy(
    path: Path,
    progress: DownloadProgress | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> None:
    """Raise :class:`JobError` unless the weights file already in the cache is the one
    published: a copy brought from another machine may be cut short, or another file put
    under its name, and would load as a damaged file or give wrong answers without a word.
    Hashed once (1-1.6 GB/s on a 2-core VM: 2-3 s for ViT-H/14's 2.5 GB) and then
    remembered by its size and time;
    a check that is stopped is not remembered, so it runs again the next time; one that cannot
    read the file (its permissions, a failing disk) says so, naming it."""
    expected = expected_hash_prefix(path.name)
    try:
        if not expected or _verified().get(str(path)) == _stamp(path):
            return
        actual = sha256_of(path, path.name, progress, should_stop, downloaded=False)
    except JobStopped:
        raise JobStopped(f"stopped checking {path.name}: it is not marked as checked, and is "
                         "checked again the next time it is used") from None
    except OSError as exc:
        raise JobError(
            f"cannot read {path} to check it ({_why(exc)}): give this user permission to read "
            "it, or delete it and it is downloaded again."
        ) from None
    if not actual.startswith(expected):
        raise JobError(
            f"{path} is not the file published for this model (its SHA-256 starts "
            f"{actual[:len(expected)]}, expected {expected}): it may be cut short or another "
            "file. Delete it and it is downloaded again; or load your own file as weights "
            "(--weights FILE, or Import weights… in the window)."
        )
    _remember_verified(path)


def sha256_of(
    path: Path,
    name: str | None = None,
    progress: DownloadProgress | None = None,
    should_stop: Callable[[], bool] | None = None,
    downloaded: bool = False,
    chunk_bytes: int | None = None,
    report_interval: float | None = None,
) -> str:
    """The SHA-256 (hex) of the file at ``path``, read ``chunk_bytes`` at a time.

    ``progress`` gets ``{"event": "verify", "file": name, "bytes", "total", "speed", "eta",
    "downloaded"}`` for the first and the last byte and at most every ``report_interval``
    seconds between; ``should_stop()`` is asked before each chunk and raises :class:`JobStopped`.
    """
    chunk_bytes = chunk_bytes or HASH_CHUNK_BYTES
    interval = CHECK_REPORT_INTERVAL_S if report_interval is None else report_interval
    stopped = should_stop or (lambda: False)
    name = name or path.name
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        total = os.fstat(f.fileno()).st_size
        started = last_report = time.monotonic()
        done = reported = 0
        _report(progress, name, 0, total, started, "verify", downloaded=downloaded)
        while True:
            if stopped():
                raise JobStopped()
            chunk = f.read(chunk_bytes)
            if not chunk:
                break
            digest.update(chunk)
            done += len(chunk)
            now = time.monotonic()
            if now - last_report >= interval:
                last_report, reported = now, done
                _report(progress, name, done, total, started, "verify", downloaded=downloaded)
        if reported != done:  # the last bytes, unless just reported
            _report(progress, name, done, total, started, "verify", downloaded=downloaded)
    return digest.hexdigest()


def resolve_host_quickly(host: str, timeout: float = 4.0) -> None:
    """Raise ``OSError`` unless ``host`` resolves within ``timeout`` seconds.

    ``urlopen``'s timeout does not cover the name lookup, which can hang for many seconds on a
    machine whose DNS server is unreachable; this bounds it (the lookup runs on a daemon thread).
    """
    outcome: dict[str, BaseException | bool] = {}

    def lookup() -> None:
        try:
            socket.getaddrinfo(host, None)
            outcome["ok"] = True
        except OSError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=lookup, daemon=True, name="dns-lookup")
    thread.start()
    thread.join(timeout)
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    if not outcome.get("ok"):
        raise OSError(f"looking up {host} took longer than {timeout:.0f} s")


def _fetch(
    url: str,
    partial: Path,
    name: str,
    progress: DownloadProgress | None,
    should_stop: Callable[[], bool] | None,
    timeout: float,
) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "TorchDesk"})
    received = 0
    total = None
    try:
        resolve_host_quickly(urlparse(url).hostname or "", min(timeout, 4.0))
    except OSError as exc:
        raise JobError(f"cannot download {name} (no network? {exc}). " + _where_to_put(url)) \
            from None
    stopped = should_stop or (lambda: False)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response, \
                cancel_blocked_reads(response, stopped):
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            started = last_report = time.monotonic()
            reported = 0
            _report(progress, name, 0, total, started)
            with _open_to_save(partial, name) as out:
                while True:
                    if stopped():
                        raise JobStopped()
                    chunk = response.read(CHUNK_BYTES)
                    if not chunk:
                        break
                    _save(out.write, chunk, partial, name)
                    received += len(chunk)
                    now = time.monotonic()
                    if now - last_report >= DOWNLOAD_REPORT_INTERVAL_S:
                        last_report, reported = now, received
                        _report(progress, name, received, total, started)
                _save(out.flush, None, partial, name)  # so that closing has nothing to write
            if reported != received:  # the last bytes, unless just reported
                _report(progress, name, received, total, started)
        if stopped():  # the read ended because Cancel shut the connection
            raise JobStopped()
    except urllib.error.HTTPError as exc:
        raise JobError(
            f"cannot download {name}: the server answered {exc.code} {exc.reason} for {url}. "
            + _where_to_put(url)
        ) from None
    except urllib.error.URLError as exc:
        reason = exc.reason if isinstance(exc.reason, str) else str(exc.reason) or "no answer"
        raise JobError(f"cannot download {name} (no network? {reason}). " + _where_to_put(url)) \
            from None
    except TimeoutError:
        raise JobError(
            f"cannot download {name}: no answer from the server within {timeout:.0f} s after "
            f"{_bytes(received)}. " + _where_to_put(url)
        ) from None
    except (http.client.IncompleteRead, ConnectionError, http.client.HTTPException) as exc:
        if stopped():  # the connection Cancel shut
            raise JobStopped() from None
        raise JobError(
            f"download of {name} broke off after {_bytes(received)}"
            f"{' of ' + _bytes(total) if total else ''} ({type(exc).__name__}); nothing was saved. "
            + _where_to_put(url)
        ) from None
    if total is not None and received != total:
        raise JobError(
            f"download of {name} is truncated: got {_bytes(received)} of {_bytes(total)}; "
            "nothing was saved. " + _where_to_put(url)
        )


def _open_to_save(partial: Path, name: str):
    try:
        return open(partial, "wb")  # noqa: SIM115 (the caller's with closes it)
    except OSError as exc:
        raise _cannot_save(name, partial.parent, exc) from None


def _save(write, chunk: bytes | None, partial: Path, name: str) -> None:
    """``write(chunk)`` (or ``write()``), its OSError (a full disk, most likely) said plainly."""
    try:
        write() if chunk is None else write(chunk)
    except OSError as exc:
        raise _cannot_save(name, partial.parent, exc) from None


def _report(progress, name: str, received: int, total: int | None, started: float,
            event: str = "download", **extra) -> None:
    if progress is None:
        return
    elapsed = max(time.monotonic() - started, 1e-6)
    speed = received / elapsed
    eta = (total - received) / speed if total and speed > 0 else None
    progress({"event": event, "file": name, "bytes": received, "total": total,
              "speed": speed, "eta": eta, **extra})


def _bytes(n: int | None) -> str:
    if n is None:
        return "?"
    if n < 1024 * 1024:
        return f"{n / 1024:.0f} KB"
    return f"{n / 1024 / 1024:.1f} MB"
