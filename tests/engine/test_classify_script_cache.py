"""The default model's optimized TorchScript copy is cached on disk, reused with the same answers,
and a damaged, stale or unwritable cache costs time, never a wrong answer."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from engine.classify import jobs, script_cache
from engine.classify.classifier import Classifier
from engine.classify.jobs import classify_job, forget_cached_model
from engine.classify.zoo import default_model_cache_key, load_cached_default_model, load_model
from engine.jobs import JobContext
from tests.conftest import BOOK_IMAGES, ROOT, needs_book_photos

BOOK = [str(BOOK_IMAGES / name) for name in ("bobby.jpg", "horse.jpg", "cat1.png", "cat2.png")]


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHDESK_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "scripted"


@pytest.fixture(scope="module")
def python_lite0():
    """The default model with its Python module, not optimized (the reference answers)."""
    return Classifier(load_model("efficientnet_lite0", "cpu"))


def _probabilities(classifier: Classifier) -> torch.Tensor:
    return classifier.probabilities([classifier.prepare(p).crop for p in BOOK])


@needs_book_photos
def test_optimized_copy_is_written_once_and_loads_without_the_python_model(cache_dir,
                                                                          python_lite0):
    assert load_cached_default_model() is None  # nothing cached yet
    cache_dir.mkdir(parents=True)
    stale = cache_dir / "efficientnet_lite0-0123456789abcdef01234567.pt"  # an older torch's
    stale.write_bytes(b"old")
    first = Classifier(load_model("efficientnet_lite0", "cpu"))
    assert first.optimize_for_cpu()
    entries = list(cache_dir.glob("*.pt"))
    assert [e.name for e in entries] == [f"{default_model_cache_key()}.pt"]

    loaded = load_cached_default_model()
    assert loaded is not None and loaded.optimized
    assert isinstance(loaded.module, torch.jit.ScriptModule)
    assert len(loaded.categories) == 1000 and loaded.preprocess.crop_size == 224
    cached = Classifier(loaded)
    assert cached.optimized
    reference = _probabilities(python_lite0)
    assert torch.max(torch.abs(_probabilities(cached) - reference)).item() < 1e-5
    assert cached.top_k(_probabilities(cached), 1)[0][0]["label"] == "golden retriever"

    # a second Python-model classifier takes the cached copy instead of scripting again
    mtime = entries[0].stat().st_mtime_ns
    second = Classifier(load_model("efficientnet_lite0", "cpu"))
    assert second.optimize_for_cpu()
    assert entries[0].stat().st_mtime_ns == mtime
    assert torch.max(torch.abs(_probabilities(second) - reference)).item() < 1e-5


def test_damaged_or_stale_entries_are_dropped(cache_dir, python_lite0):
    key = default_model_cache_key()
    assert Classifier(load_model("efficientnet_lite0", "cpu")).optimize_for_cpu()
    entry = cache_dir / f"{key}.pt"
    good = entry.read_bytes()

    entry.write_bytes(good[: len(good) // 2])  # truncated
    assert load_cached_default_model() is None
    assert not entry.exists()

    # a well-formed file whose copy no longer gives the logits it was saved with
    scripted, _ = script_cache.script_and_optimize(python_lite0.model)
    probe = script_cache.probe_batch(224)
    with torch.inference_mode():
        wrong = python_lite0.model(probe) + 0.5
    assert script_cache.save(key, scripted, wrong) == entry
    assert load_cached_default_model() is None
    assert not entry.exists()

    # a Python model that disagrees with a good entry neither uses it nor overwrites it
    entry.write_bytes(good)
    before = entry.read_bytes()
    other = Classifier(load_model("efficientnet_lite0", "cpu"))
    with torch.no_grad():
        other.model.classifier.bias.add_(1.0)  # no longer the cached network
    assert other.optimize_for_cpu()
    with torch.inference_mode():
        assert torch.allclose(other._inference_model(probe), other.model(probe), atol=1e-4)
    assert entry.read_bytes() == before


def test_cache_key_follows_weights_file_and_code(tmp_path):
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"x" * 10)
    code = tmp_path / "model.py"
    code.write_text("A = 1\n")
    key = script_cache.cache_key("m", str(weights), (str(code),))
    assert key == script_cache.cache_key("m", str(weights), (str(code),))
    os.utime(weights, ns=(1, 2))
    assert script_cache.cache_key("m", str(weights), (str(code),)) != key
    key = script_cache.cache_key("m", str(weights), (str(code),))
    code.write_text("A = 2\n")
    assert script_cache.cache_key("m", str(weights), (str(code),)) != key
    assert script_cache.cache_key("m", str(tmp_path / "missing.pth")) is None


@needs_book_photos
def test_unwritable_cache_still_classifies(tmp_path, monkeypatch, python_lite0):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("TORCHDESK_CACHE_DIR", str(blocker))
    classifier = Classifier(load_model("efficientnet_lite0", "cpu"))
    assert classifier.optimize_for_cpu()  # optimized, just not saved
    reference = _probabilities(python_lite0)
    assert torch.max(torch.abs(_probabilities(classifier) - reference)).item() < 1e-5


FULL_DISK_SAVE = """
import resource, signal, sys, torch
from engine.classify import script_cache
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails like a full disk
scripted = torch.jit.script(torch.nn.Linear(500, 500))
resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
print(script_cache.save("linear-key", scripted, torch.zeros(1, 3)))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_FSIZE, SIGXFSZ")
def test_a_full_disk_leaves_the_cache_unwritten_without_aborting(tmp_path):
    """torch.jit.save onto a full disk aborts the process (a C++ error in a destructor): the
    entry is serialized in memory and written by Python, which can fail politely."""
    env = {**os.environ, "TORCHDESK_CACHE_DIR": str(tmp_path / "cache")}
    run = subprocess.run([sys.executable, "-c", FULL_DISK_SAVE], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-1500:]
    assert run.stdout.strip() == "None"
    assert list((tmp_path / "cache" / "scripted").iterdir()) == []  # no temporary file left


@needs_book_photos
def test_jobs_use_the_cached_copy_only_for_inference(cache_dir):
    """The CLI's jobs (inference only) load the cached copy; a job that may want Grad-CAM gets
    the Python model even when the cached copy is already loaded."""
    assert Classifier(load_model("efficientnet_lite0", "cpu")).optimize_for_cpu()
    forget_cached_model()
    try:
        out = classify_job({"paths": BOOK, "inference_only": True, "top_k": 1}, JobContext("cpu"))
        assert out["classified"] == 4 and jobs._cached[1].loaded.optimized
        assert out["results"][0]["top"][0]["label"] == "golden retriever"
        out = classify_job({"paths": BOOK[:1], "gradcam_limit": 1, "views": True},
                           JobContext("cpu"))
        assert out["classified"] == 1 and not jobs._cached[1].loaded.optimized
    finally:
        forget_cached_model()


@needs_book_photos
def test_cli_gives_the_same_answers_with_and_without_the_cache(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(64):  # enough photos for the CLI to want the optimized copy
        source = BOOK[i % len(BOOK)]
        shutil.copy(source, folder / f"{i:02d}{os.path.splitext(source)[1]}")
    env = {**os.environ, "TORCHDESK_CACHE_DIR": str(tmp_path / "cache")}
    runs = []
    for _ in range(2):
        out = subprocess.run([sys.executable, "-m", "engine", "classify", str(folder), "--json"],
                             cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        runs.append(json.loads(out.stdout))
    assert list((tmp_path / "cache" / "scripted").glob("*.pt"))  # the first run wrote it
    first, second = runs
    assert [e["path"] for e in first] == [e["path"] for e in second]
    for a, b in zip(first, second, strict=True):
        assert [t["index"] for t in a["top"]] == [t["index"] for t in b["top"]]
        assert max(abs(x["prob"] - y["prob"]) for x, y in zip(a["top"], b["top"],
                                                               strict=True)) < 1e-5
