"""The CIFAR trainer: it learns, reports, stops, resumes exactly, and checkpoints atomically."""

from __future__ import annotations

import math
import os
import shutil

import pytest
import torch

from engine.cifar import checkpoint as ckpt
from engine.cifar.models import build_model
from engine.cifar.trainer import augment_batch, resolve_config, train_job
from engine.jobs import JobContext, JobError
from tests.engine.cifar_helpers import synthetic_dataset

DATA = synthetic_dataset(n_train=96, n_test=48)


def base_config(**overrides):
    config = {"dataset": DATA, "model": "net", "epochs": 2, "batch_size": 16, "lr": 0.05,
              "seed": 3, "precision": "fp32", "eval_batch_size": 32}
    config.update(overrides)
    return config


def run(config, stop_when=None):
    events = []
    ctx = JobContext("cpu")

    def collect(update):
        events.append(update)
        if stop_when is not None and stop_when(update):
            ctx.request_stop()

    ctx._progress = collect
    return train_job(config, ctx), events


def model_state(path):
    return ckpt.load_checkpoint(path)["model_state"]


def test_training_learns_and_reports_everything_the_gui_needs(tmp_path):
    result, events = run(base_config(model="netbatchnorm", epochs=3, flip=True, translate=2,
                                     checkpoint=tmp_path / "c.pt"))
    assert result["status"] == "completed"
    assert result["test_acc"] > 0.9
    assert result["epochs"] == 3 and len(result["history"]) == 3
    assert all("test_acc" in row for row in result["history"])
    assert result["world_size"] == 1
    assert result["class_names"] == ["cat", "dog", "ship"]
    confusion = torch.tensor(result["confusion"])
    assert confusion.sum() == 48 and confusion.shape == (3, 3)
    wrong = sum(len(v) for v in result["misclassified"].values())
    assert wrong == confusion.sum() - confusion.trace()
    assert set(result["per_class_acc"]) == {"cat", "dog", "ship"}
    steps = [e for e in events if e["phase"] == "train"]
    assert steps and {"loss", "images_per_s", "eta_s", "epoch_progress", "lr"} <= set(steps[0])
    assert steps[-1]["global_step"] == steps[-1]["total_steps"] == 3 * 6
    assert [e["epoch"] for e in events if e["phase"] == "epoch"] == [1, 2, 3]
    assert (tmp_path / "c.pt").is_file()
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def test_resume_after_two_epochs_equals_three_straight(tmp_path):
    straight, _ = run(base_config(epochs=3, model="netdropout", flip=True, translate=2,
                                  checkpoint=tmp_path / "straight.pt"))
    run(base_config(epochs=2, model="netdropout", flip=True, translate=2,
                    checkpoint=tmp_path / "two.pt"))
    resumed, _ = run({"dataset": DATA, "resume": tmp_path / "two.pt", "epochs": 3})
    assert resumed["test_acc"] == straight["test_acc"]
    assert [r["train_loss"] for r in resumed["history"]] == \
        [r["train_loss"] for r in straight["history"]]
    a, b = model_state(tmp_path / "straight.pt"), model_state(tmp_path / "two.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)  # resume writes back into its own file


def test_stop_mid_epoch_keeps_a_checkpoint_that_resumes_exactly(tmp_path):
    # report_interval_s=0: every step is reported, so the stop lands on step 8 whatever the pace
    config = base_config(epochs=2, model="netdropout", schedule="warmup_linear", flip=True,
                         translate=1, optimizer="nesterov", report_interval_s=0,
                         alternate_flip=True, lookahead=True)
    straight, _ = run({**config, "checkpoint": tmp_path / "straight.pt"})
    stopped, _ = run({**config, "checkpoint": tmp_path / "stop.pt"},
                     stop_when=lambda u: u.get("phase") == "train" and u["global_step"] == 8)
    assert stopped["status"] == "stopped"
    saved = ckpt.load_checkpoint(tmp_path / "stop.pt")
    assert (saved["epoch"], saved["step"]) == (1, 2)
    assert stopped["saved_at"] == [1, 2]  # a front end words its stop from this
    resumed, _ = run({"dataset": DATA, "resume": tmp_path / "stop.pt"})
    assert resumed["status"] == "completed"
    assert resumed["test_acc"] == straight["test_acc"]
    a, b = model_state(tmp_path / "straight.pt"), model_state(tmp_path / "stop.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_optimizers_and_schedules_train(optimizer, tmp_path):
    lr = 3e-3 if optimizer.startswith("adam") else 0.05
    result, events = run(base_config(epochs=1, optimizer=optimizer, lr=lr,
                                     schedule="warmup_cosine", warmup=0.5,
                                     label_smoothing=0.1, weight_decay=5e-4,
                                     report_interval_s=0, checkpoint=tmp_path / "c.pt"))
    lrs = [e["lr"] for e in events if e["phase"] == "train"]
    assert max(lrs) == pytest.approx(lr, rel=0.01) and lrs[-1] < lr / 10
    assert result["history"][0]["train_loss"] > 0
    # the optimizer that ran is the one asked for: Adam's moments, AdamW's decoupled decay
    state = ckpt.load_checkpoint(tmp_path / "c.pt")["optimizer_state"]
    group, first = state["param_groups"][0], next(iter(state["state"].values()))
    if optimizer == "sgd":
        assert "momentum_buffer" in first and group["momentum"] > 0
    else:
        assert "exp_avg" in first and group["weight_decay"] == 5e-4
        assert group["decoupled_weight_decay"] == (optimizer == "adamw")


def test_bf16_autocast_runs_on_the_cpu(monkeypatch):
    import engine.cifar.trainer as trainer

    conv_dtypes = set()

    def build_and_watch(*args, **kwargs):
        model = build_model(*args, **kwargs)
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.register_forward_hook(lambda m, i, out: conv_dtypes.add(out.dtype))
        return model

    monkeypatch.setattr(trainer, "build_model", build_and_watch)
    result, _ = run(base_config(epochs=1, precision="bf16", batch_size=32))
    assert result["precision"] == "bfloat16"
    assert conv_dtypes == {torch.bfloat16}
    assert 0.0 <= result["test_acc"] <= 1.0


def test_augmentation_flips_and_shifts_in_one_batched_gather():
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.uint8).view(2, 3, 4, 4)
    idx = torch.tensor([1, 0, 1])
    plain = augment_batch(images, idx, flip=False, translate=0, generator=None)
    assert torch.equal(plain, images[idx])
    gen = torch.Generator().manual_seed(0)
    out = augment_batch(images, idx.repeat(20), flip=True, translate=1, generator=gen)
    assert out.shape == (60, 3, 4, 4)
    flipped = images[1].flip(-1)
    assert any(torch.equal(o, flipped) for o in out[::2])
    # every output pixel row comes from the source image (reflect padding, no zeros invented)
    assert set(out[0].unique().tolist()) <= set(images[1].unique().tolist())


def test_bad_settings_are_clear_errors():
    with pytest.raises(JobError, match="unknown optimizer 'rmsprop'"):
        resolve_config(base_config(optimizer="rmsprop"))
    with pytest.raises(JobError, match="batch_size must be a whole number of at least 1, not 0"):
        resolve_config(base_config(batch_size=0))
    with pytest.raises(JobError, match="no data given"):
        resolve_config({"model": "net"})
    with pytest.raises(JobError, match="fp16 is for GPUs"):
        run(base_config(precision="fp16", epochs=1))
    with pytest.raises(JobError, match=r"tta_level must be .* from 0 \(off\) to 3, not 7"):
        resolve_config(base_config(tta_level=7))
    with pytest.raises(JobError, match=r"eval_every must be .*0 \(only at the end\) or more"):
        resolve_config(base_config(eval_every=-1))
    with pytest.raises(JobError, match=r"seed must be .* from 0 to 2\*\*63 - 1, not -1"):
        resolve_config(base_config(seed=-1))
    # the book's nets train at a constant rate: a warm-up given for them would do nothing
    with pytest.raises(JobError, match="warmup applies to the warm-up schedules"):
        resolve_config(base_config(warmup=0.2))
    assert resolve_config(base_config(warmup=0.2, schedule="warmup_cosine"))["warmup"] == 0.2
    assert resolve_config(base_config(warmup=0.0))["schedule"] == "constant"


def test_huge_and_fractional_numbers_are_refused_clearly():
    with pytest.raises(JobError, match=r"lr must be a number above 0 and at most 100, "
                                       r"not about 10\*\*400"):
        resolve_config(base_config(lr=10**400))
    with pytest.raises(JobError, match=r"seed must be .* not about 10\*\*5000"):
        resolve_config(base_config(seed=10**5000))  # past what Python writes as digits
    with pytest.raises(JobError, match="epochs must be a whole number of at least 1, not 2.7"):
        resolve_config(base_config(epochs=2.7))
    assert resolve_config(base_config(epochs=3.0))["epochs"] == 3


def test_images_of_one_colour_are_refused_and_a_constant_channel_trains():
    import dataclasses
    import math

    blank = dataclasses.replace(DATA, train_images=torch.zeros_like(DATA.train_images))
    with pytest.raises(JobError, match="every training image is one and the same colour"):
        run(base_config(dataset=blank, epochs=1))
    no_blue = DATA.train_images.clone()
    no_blue[:, 2] = 0  # red-green images: the blue channel's std is 0
    result, _ = run(base_config(dataset=dataclasses.replace(DATA, train_images=no_blue),
                                epochs=1))
    assert result["std"][2] > 0 and all(math.isfinite(row["train_loss"])
                                        for row in result["history"])


def _in_the_final_evaluation(update):
    return update["phase"] == "evaluate" and not update["between_epochs"]


def test_a_stop_during_the_final_evaluation_gives_it_up_and_keeps_the_weights(tmp_path):
    path = tmp_path / "c.pt"
    result, events = run(base_config(checkpoint=path, tta_level=2),
                         stop_when=_in_the_final_evaluation)
    assert result["status"] == "stopped" and result["checkpoint"] == str(path)
    assert "confusion" not in result
    assert result["test_acc"] == result["history"][0]["test_acc"]  # the last one measured
    assert [e for e in events if e["phase"] == "done"][0]["status"] == "stopped"
    assert [e["epoch"] for e in events if e["phase"] == "epoch"] == [1, 2]  # the last row too
    saved = ckpt.load_checkpoint(path)
    assert saved["epoch"] == 2 and len(saved["history"]) == 2
    # resuming it trains nothing more and evaluates
    resumed, events = run({"dataset": DATA, "resume": path})
    assert resumed["status"] == "completed" and "confusion" in resumed
    assert not [e for e in events if e["phase"] == "train"]
    # without a checkpoint file nothing is kept, and the result says so
    result, _ = run(base_config(tta_level=2), stop_when=_in_the_final_evaluation)
    assert result["status"] == "stopped" and result["checkpoint"] is None


def test_paths_are_stored_absolute(tmp_path, monkeypatch):
    from engine.cifar.trainer import _make_paths_absolute

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cfg = {"data": "data", "checkpoint": "run.pt", "cache_dir": "~/cache", "resume": None}
    _make_paths_absolute(cfg, from_checkpoint=False)
    assert cfg == {"data": str(tmp_path / "data"), "checkpoint": str(tmp_path / "run.pt"),
                   "cache_dir": str(tmp_path / "home" / "cache"), "resume": None}


def _disk_full_after(monkeypatch, files_written: int):
    """The disk fills up while the (files_written + 1)-th file is being written."""
    import errno

    real_fsync, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) > files_written:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "model.pt"
    ckpt.save_checkpoint(path, {"marker": "old"})
    _disk_full_after(monkeypatch, files_written=0)
    with pytest.raises(JobError, match="cannot write the checkpoint .*No space left on device"):
        ckpt.save_checkpoint(path, {"marker": "new"})
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["marker"] == "old"
    assert os.listdir(tmp_path) == ["model.pt"]


def test_a_checkpoint_through_a_link_replaces_the_target_and_keeps_the_link(tmp_path):
    target = tmp_path / "runs" / "real.pt"
    target.parent.mkdir()
    link = tmp_path / "latest.pt"
    link.symlink_to(target)
    run(base_config(epochs=1, checkpoint=link))
    assert link.is_symlink() and ckpt.load_checkpoint(target)["epoch"] == 1
    run({"dataset": DATA, "resume": link, "epochs": 2})
    assert link.is_symlink() and ckpt.load_checkpoint(target)["epoch"] == 2
    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(JobError, match="is a device, pipe or socket"):
        run(base_config(epochs=1, checkpoint=tmp_path / "pipe"))
    with pytest.raises(JobError, match="is a device, pipe or socket"):
        ckpt.export_model(target, tmp_path / "pipe", fmt="torchscript")


def test_corrupt_and_mismatched_checkpoints_are_explained(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(JobError, match="not a readable checkpoint"):
        run({"dataset": DATA, "resume": bad})
    with pytest.raises(JobError, match="does not exist"):
        run({"dataset": DATA, "resume": tmp_path / "nope.pt"})
    with pytest.raises(JobError, match="is a folder; give the checkpoint file"):
        run({"dataset": DATA, "resume": tmp_path})
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    with pytest.raises(JobError, match="not a TorchDesk CIFAR checkpoint"):
        ckpt.load_checkpoint(tmp_path / "foreign.pt")
    good = tmp_path / "good.pt"
    run(base_config(epochs=1, checkpoint=good))
    with pytest.raises(JobError, match="trained with model 'net'"):
        run({"dataset": DATA, "resume": good, "model": "netres"})
    other_classes = synthetic_dataset(n_train=64, n_test=32, classes=("cat", "dog"))
    with pytest.raises(JobError, match="do not match"):
        run({"dataset": other_classes, "resume": good})
    def edited(**changes):
        blob = {k: v for k, v in ckpt.load_checkpoint(good).items()
                if k not in ("format", "version")}
        ckpt.save_checkpoint(tmp_path / "edited.pt", {**blob, **changes})
        return tmp_path / "edited.pt"

    lying = edited(model_name="netwidth", config={**ckpt.load_checkpoint(good)["config"],
                                                  "model": "netwidth"})
    with pytest.raises(JobError, match="do not fit this model"):
        ckpt.export_model(lying, tmp_path / "x.pt")
    for changes, problem in (({"mean": [0.5]}, "mean and std must be three numbers"),
                             ({"epoch": "two"}, "epoch must be a whole number"),
                             ({"model_name": "netwidth"}, "unknown or mismatched model"),
                             ({"class_names": ["cat"]}, "class_names must list at least two"),
                             ({"std": [0.0, 0.2, 0.2]}, "mean and std must be finite, and std"),
                             ({"mean": [float("nan"), 0.5, 0.5]}, "mean and std must be finite"),
                             ({"step": -3}, "step must be a whole number"),
                             ({"history": "x"}, "history must be a list"),
                             *(({"config": {**ckpt.load_checkpoint(good)["config"],
                                            "epochs": bad}}, "config's epochs must be")
                               for bad in ("abc", 0, False, ""))):
        with pytest.raises(JobError, match=f"inconsistent \\({problem}"):
            run({"dataset": DATA, "resume": edited(**changes)})
        with pytest.raises(JobError, match=f"inconsistent \\({problem}"):  # not a NaN model
            ckpt.export_model(edited(**changes), tmp_path / "x.pt")


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.load is deprecated upstream
def test_torchscript_export_carries_classes_and_normalization(tmp_path):
    good = tmp_path / "good.pt"
    result, _ = run(base_config(epochs=1, checkpoint=good))
    meta = ckpt.export_model(good, tmp_path / "export" / "net.pt")
    assert meta["class_names"] == ["cat", "dog", "ship"]
    assert ckpt.read_exported_metadata(tmp_path / "export" / "net.pt")["mean"] == result["mean"]
    scripted = torch.jit.load(str(tmp_path / "export" / "net.pt"))
    model = ckpt.model_from_checkpoint(ckpt.load_checkpoint(good))
    x = DATA.test_images[:5].float() / 255
    mean = torch.tensor(result["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(result["std"]).view(1, 3, 1, 1)
    assert torch.allclose(scripted(x), model((x - mean) / std), atol=1e-5)
    with pytest.raises(JobError, match="would overwrite the checkpoint"):
        ckpt.export_model(good, good)
    with pytest.raises(JobError, match="is a TorchScript export, not a training checkpoint"):
        ckpt.load_checkpoint(tmp_path / "export" / "net.pt")
    assert ckpt.load_checkpoint(good)["class_names"] == ["cat", "dog", "ship"]  # untouched


def test_a_device_that_is_not_there_is_a_clear_error(monkeypatch):
    """The GUI hands its device to the job; a GPU gone since the menu listed it is said so."""
    import engine.devices

    monkeypatch.setattr(engine.devices, "list_devices", lambda: [
        engine.devices.DeviceInfo(id="cpu", kind="cpu", name="CPU", memory_bytes=None)])
    with pytest.raises(JobError, match="device 'cuda:0' is not available here; available: cpu"):
        train_job(base_config(epochs=1), JobContext("cuda:0"))


def test_a_refused_setting_can_be_named_by_each_front_end():
    from engine.cifar.trainer import SettingError

    with pytest.raises(SettingError) as refused:
        resolve_config(base_config(lr=float("nan")))
    assert refused.value.key == "lr"
    assert str(refused.value) == "lr must be a number above 0 and at most 100, not nan"
    assert refused.value.naming("Learning rate") == \
        "Learning rate must be a number above 0 and at most 100, not nan"
    for bad in (float("inf"), "many"):  # int() raises OverflowError and ValueError
        with pytest.raises(SettingError, match="seed must be a whole number from 0 to"):
            resolve_config(base_config(seed=bad))


def test_a_bad_value_from_a_checkpoint_is_said_to_be_the_checkpoints(tmp_path):
    from engine.cifar.trainer import SettingError

    checkpoint = base_config(lr=0.05)
    with pytest.raises(SettingError) as refused:
        resolve_config({"resume": "c.pt"}, base={**resolve_config(checkpoint), "lr": -1.0})
    assert str(refused.value) == ("lr must be a number above 0 and at most 100, not -1 (the "
                                  "checkpoint's value; set lr to replace it)")
    assert resolve_config({"resume": "c.pt", "dataset": DATA, "lr": 0.1},
                          base={**resolve_config(checkpoint), "lr": -1.0})["lr"] == 0.1
    # the advice is the command line's unless a front end words its own
    assert refused.value.whose == "checkpoint"
    assert refused.value.naming("LR", {"checkpoint": " (kept: {name})"}) == \
        "LR must be a number above 0 and at most 100, not -1 (kept: LR)"
    with pytest.raises(SettingError) as refused:
        resolve_config({"resume": "c.pt", "model": "fast"}, base=resolve_config(checkpoint))
    assert refused.value.whose == "differs" and str(refused.value) == \
        "the checkpoint was trained with model 'net', not 'fast'; leave model unset to resume it"


def test_subset_sizes_must_be_positive():
    for key in ("max_train", "max_test"):
        for bad in (0, -5):
            with pytest.raises(JobError, match=f"{key} must be a whole number of at least 1"):
                resolve_config(base_config(**{key: bad}))
    assert resolve_config(base_config(max_train=None))["max_train"] is None


def test_resume_notes_count_one_epoch_as_one_and_say_a_finished_run_is_evaluated(tmp_path):
    run(base_config(epochs=1, schedule="warmup_linear", checkpoint=tmp_path / "one.pt"))
    _, events = run({"dataset": DATA, "resume": tmp_path / "one.pt"})
    notes = [u["message"] for u in events if u.get("phase") == "resume"]
    assert any("already finished its 1 epoch: it is evaluated, not trained" in n for n in notes)
    _, events = run({"dataset": DATA, "resume": tmp_path / "one.pt", "epochs": 2})
    notes = [u["message"] for u in events if u.get("phase") == "resume"]
    assert any("planned for 1 epoch and now spans 2" in n for n in notes)


def test_resuming_a_stopped_run_with_the_epochs_it_finished_says_only_that_it_is_evaluated(
        tmp_path):
    path = tmp_path / "three.pt"
    run(base_config(epochs=3, schedule="warmup_linear", checkpoint=path),
        stop_when=lambda u: u.get("phase") == "epoch" and u["epoch"] == 2)
    assert ckpt.load_checkpoint(path)["epoch"] == 2
    _, events = run({"dataset": DATA, "resume": path, "epochs": 2})
    notes = [u["message"] for u in events if u.get("phase") == "resume"]
    assert len(notes) == 1 and "it is evaluated, not trained" in notes[0], notes


def test_resuming_a_scheduled_run_for_more_epochs_says_it_differs(tmp_path):
    config = base_config(schedule="warmup_linear", checkpoint=tmp_path / "two.pt")
    run(config)
    _, events = run({"dataset": DATA, "resume": tmp_path / "two.pt", "epochs": 3})
    notes = [u["message"] for u in events if u.get("phase") == "resume"]
    assert any("planned for 2 epochs and now spans 3" in n for n in notes)
    constant = base_config(checkpoint=tmp_path / "constant.pt")
    run(constant)
    _, events = run({"dataset": DATA, "resume": tmp_path / "constant.pt", "epochs": 3})
    assert not [u for u in events if u.get("phase") == "resume"]


def test_resuming_with_fewer_epochs_than_trained_is_refused_and_leaves_the_file(tmp_path):
    path = tmp_path / "two.pt"
    run(base_config(checkpoint=path))
    before = path.read_bytes()
    with pytest.raises(JobError, match="already trained 2 epochs; resume it with at least 2"):
        run({"dataset": DATA, "resume": path, "epochs": 1})
    assert path.read_bytes() == before
    result, _ = run({"dataset": DATA, "resume": path, "epochs": 2})
    assert result["status"] == "completed" and len(result["history"]) == 2


def test_an_unwritable_checkpoint_path_fails_before_training(tmp_path):
    events = []
    with pytest.raises(JobError, match="it is a folder"):
        train_job(base_config(checkpoint=tmp_path), JobContext("cpu", progress=events.append))
    assert not [u for u in events if u.get("phase") == "epoch"]
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(JobError, match="cannot create the checkpoint folder"):
        run(base_config(checkpoint=blocker / "run.pt"))


def test_onnx_export_explains_a_missing_package(tmp_path, monkeypatch):
    good = tmp_path / "good.pt"
    run(base_config(epochs=1, checkpoint=good))
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnx" else real(name, *a))
    with pytest.raises(JobError, match="pip install onnx"):
        ckpt.export_model(good, tmp_path / "m.onnx")
    with pytest.raises(JobError, match="pip install onnx"):
        ckpt.export_model(good, tmp_path / "new" / "m.onnx")
    assert not (tmp_path / "new").exists()  # no empty folder left by an export that never ran


@pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")
def test_onnx_export_runs_in_onnxruntime_like_torchscript(tmp_path):
    pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    checkpoint = tmp_path / "fast.pt"
    small = synthetic_dataset(n_train=24, n_test=6)
    run({"dataset": small, "model": "fast", "epochs": 1, "batch_size": 12, "precision": "fp32",
         "checkpoint": checkpoint, "model_options": {"variant": "cpu"}})
    onnx_meta = ckpt.export_model(checkpoint, tmp_path / "fast.onnx")
    script_meta = ckpt.export_model(checkpoint, tmp_path / "fast.ts.pt")
    x = torch.rand(5, 3, 32, 32)  # another batch size than the export's example
    expected = torch.jit.load(script_meta["path"])(x).detach().numpy()
    session = onnxruntime.InferenceSession(onnx_meta["path"], providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": x.numpy()})[0]
    assert got.shape == (5, 3)
    assert abs(got - expected).max() < 1e-4
    assert onnx_meta["class_names"] == ["cat", "dog", "ship"]
    # exported again over itself, also once its description has gone
    (tmp_path / "fast.json").unlink()
    assert ckpt.export_model(checkpoint, tmp_path / "fast.onnx")["format"] == "onnx"
    # the disk fills up while the description is written: neither file is replaced
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    with pytest.MonkeyPatch.context() as patch:
        _disk_full_after(patch, files_written=1)
        with pytest.raises(JobError, match="cannot write the export .*No space left"):
            ckpt.export_model(checkpoint, tmp_path / "fast.onnx")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
    # ... or the description cannot be renamed into place after the model was
    real_replace = os.replace

    def second_rename_fails(src, dst):
        if str(dst).endswith(".json"):
            raise PermissionError(1, "Operation not permitted")
        real_replace(src, dst)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "replace", second_rename_fails)
        with pytest.raises(JobError, match="cannot write the export .*not permitted"):
            ckpt.export_model(checkpoint, tmp_path / "fast.onnx")
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_fast_recipe_defaults_variant_resume_and_export(tmp_path):
    from engine.cifar import fast

    checkpoint = tmp_path / "fast.pt"
    small = synthetic_dataset(n_train=24, n_test=6)
    config = {"dataset": small, "model": "fast", "epochs": 1, "batch_size": 12,
              "precision": "fp32", "checkpoint": checkpoint,
              "model_options": {"variant": "cpu"}}  # what resume and export rebuild
    result, _ = run(config)
    recipe = fast.fast_defaults("cpu")
    assert result["config"]["optimizer"] == recipe["optimizer"] == "muon"
    assert result["config"]["muon_lr"] == recipe["muon_lr"]
    assert result["config"]["label_smoothing"] == recipe["label_smoothing"]
    assert result["config"]["batch_size"] == 12  # the user's value wins over the recipe's
    assert result["tta_level"] == recipe["tta_level"]
    resumed, _ = run({"dataset": small, "resume": checkpoint, "epochs": 2})
    assert resumed["epochs"] == 2 and resumed["config"]["model_options"] == {"variant": "cpu"}
    meta = ckpt.export_model(checkpoint, tmp_path / "fast.torchscript.pt")
    scripted = torch.jit.load(meta["path"])
    assert scripted(torch.rand(2, 3, 32, 32)).shape == (2, 3)


def test_alternating_flips_show_every_image_both_ways_round():
    from engine.cifar.trainer import alternating_flips

    bits = alternating_flips(1000, seed=5, device=torch.device("cpu"))
    assert torch.equal(bits, alternating_flips(1000, seed=5, device=torch.device("cpu")))
    assert 400 < int(bits.sum()) < 600
    epoch0, epoch1 = bits ^ False, bits ^ True
    assert not (epoch0 & epoch1).any() and (epoch0 | epoch1).all()

    images = torch.arange(4 * 3 * 4 * 4, dtype=torch.uint8).view(4, 3, 4, 4)
    rows = torch.tensor([0, 1, 2, 3])
    mirror = torch.tensor([True, False, True, False])
    out = augment_batch(images, rows, flip=True, translate=0, generator=None, flips=mirror)
    assert torch.equal(out[0], images[0].flip(-1)) and torch.equal(out[1], images[1])
    assert torch.equal(out[2], images[2].flip(-1)) and torch.equal(out[3], images[3])


def test_lookahead_pulls_the_weights_back_to_their_average():
    from engine.cifar.trainer import Lookahead

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    lookahead = Lookahead(model, total_steps=10, every=5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    moved = {k: v.clone() for k, v in model.state_dict().items()}
    for step in range(1, 5):  # only every 5th step syncs
        lookahead.step(step)
    assert all(torch.equal(model.state_dict()[k], moved[k]) for k in moved)
    lookahead.step(5)  # the first sync starts the average from the live weights
    assert all(torch.equal(v, moved[k]) for k, v in lookahead.state_dict().items())
    with torch.no_grad():
        model[0].weight.add_(1.0)
    lookahead.step(10)
    decay = 0.95**5 * 1.0**3
    weight = model.state_dict()["0.weight"]
    assert torch.allclose(weight, start["0.weight"] + 1.0 + (1 - decay) * 1.0)
    assert torch.equal(model.state_dict()["1.num_batches_tracked"], moved["1.num_batches_tracked"])

    saved = lookahead.state_dict()
    with torch.no_grad():
        model[0].weight.add_(5.0)
    lookahead.finish()  # the model takes the average
    assert torch.allclose(model.state_dict()["0.weight"], saved["0.weight"])
    other = Lookahead(torch.nn.Linear(3, 1), total_steps=10)
    with pytest.raises(JobError, match="does not fit"):
        other.load_state_dict(saved)

    # a run too short to sync keeps what it learned (it used to end on the start weights)
    short = torch.nn.Linear(2, 2)
    lookahead = Lookahead(short, total_steps=4, every=5)
    with torch.no_grad():
        short.weight.add_(1.0)
    trained = short.weight.clone()
    for step in range(1, 5):
        lookahead.step(step)
    lookahead.finish()
    assert torch.equal(short.weight, trained)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_whitening_bias_trains_only_for_its_first_epochs(tmp_path):
    small = synthetic_dataset(n_train=24, n_test=6)
    base = {"dataset": small, "model": "fast", "batch_size": 12, "precision": "fp32",
            "model_options": {"variant": "cpu"}, "whiten_bias_epochs": 1,
            "lookahead": False}
    first, second = tmp_path / "one.pt", tmp_path / "two.pt"
    run({**base, "epochs": 1, "checkpoint": first})
    run({**base, "epochs": 2, "resume": first, "checkpoint": second})
    initial = build_model("fast", 3, small.train_images, variant="cpu").whiten.bias.detach()

    def whiten_bias(path):
        return torch.load(path, weights_only=False)["model_state"]["whiten.bias"]

    assert not torch.equal(whiten_bias(first), initial)  # trained in epoch 1
    assert torch.equal(whiten_bias(second), whiten_bias(first))  # frozen in epoch 2
    with pytest.raises(JobError, match="whiten_bias_epochs"):
        run({**base, "whiten_bias_epochs": -1})


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_warm_up_leaves_no_trace_in_the_result():
    small = synthetic_dataset(n_train=24, n_test=6)
    config = {"dataset": small, "model": "fast", "epochs": 2, "batch_size": 12,
              "precision": "fp32", "model_options": {"variant": "cpu"}}
    cold, _ = run({**config, "warm_up": False})
    warm, updates = run({**config, "warm_up": True})
    assert cold["warmup_time_s"] == 0 and warm["warmup_time_s"] > 0
    assert any(u.get("phase") == "warm-up" for u in updates)
    assert warm["test_acc"] == cold["test_acc"]
    assert [row["train_loss"] for row in warm["history"]] == \
        [row["train_loss"] for row in cold["history"]]


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_gpu_sized_fast_net_trains_through_the_whole_loop_on_the_cpu():
    small = synthetic_dataset(n_train=24, n_test=6)
    result, _ = run({"dataset": small, "model": "fast", "epochs": 1, "batch_size": 12,
                     "precision": "fp32", "model_options": {"variant": "gpu"},
                     "whiten_bias_epochs": 3})
    assert result["status"] == "completed" and result["params"]["trainable"] > 1_000_000


def test_whole_epoch_augmentation_stops_and_resumes_exactly(tmp_path):
    # GPUs augment a whole epoch at once (seeded by the epoch alone); forced here on the CPU.
    config = base_config(epochs=2, flip=True, translate=2, alternate_flip=True,
                         augment_per="epoch", report_interval_s=0)
    straight, _ = run({**config, "checkpoint": tmp_path / "straight.pt"})
    again, _ = run(config)
    timing = ("time_s", "epoch_time_s", "images_per_s")

    def untimed(history):
        return [{k: v for k, v in row.items() if k not in timing} for row in history]

    assert untimed(again["history"]) == untimed(straight["history"])
    stopped, _ = run({**config, "checkpoint": tmp_path / "stop.pt"},
                     stop_when=lambda u: u.get("phase") == "train" and u["global_step"] == 8)
    assert stopped["status"] == "stopped"
    resumed, _ = run({"dataset": DATA, "resume": tmp_path / "stop.pt"})
    assert resumed["test_acc"] == straight["test_acc"]
    a, b = model_state(tmp_path / "straight.pt"), model_state(tmp_path / "stop.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_whole_epoch_augmentation_learns_like_per_batch():
    per_batch, _ = run(base_config(model="netbatchnorm", epochs=3, flip=True, translate=2))
    per_epoch, _ = run(base_config(model="netbatchnorm", epochs=3, flip=True, translate=2,
                                   augment_per="epoch"))
    assert per_batch["test_acc"] > 0.9 and per_epoch["test_acc"] > 0.9
    assert per_batch["history"][0]["train_loss"] != per_epoch["history"][0]["train_loss"]


def test_schedule_starts_and_ends_where_asked():
    from engine.cifar.trainer import _make_schedule

    def factors(**kwargs):
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
        scheduler = _make_schedule(optimizer, "warmup_linear", 0.2, 100, **kwargs)
        seen = []
        for _ in range(100):
            seen.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        return seen

    plain = factors()
    assert plain[0] == pytest.approx(1 / 20) and max(plain) == 1.0
    assert plain[-1] == pytest.approx(1 / 80)  # reaches 0 one step after the last
    shaped = factors(start=0.2, end=0.07)
    assert shaped[0] == pytest.approx(0.2 + 0.8 / 20) and max(shaped) == 1.0
    assert shaped[-1] == pytest.approx(0.07 + 0.93 / 80)
    assert plain == factors(start=0.0, end=0.0)


def test_fading_groups_go_to_zero_over_their_own_steps():
    from engine.cifar.trainer import _make_schedule

    main, faded = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([{"params": [main]}, {"params": [faded], "lr": 4.0, "fade": True}],
                                lr=1.0)
    scheduler = _make_schedule(optimizer, "warmup_linear", 0.0, 100, fade_steps=30)
    seen = []
    for _ in range(100):
        seen.append([group["lr"] for group in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    assert seen[0] == [1.0, 4.0]
    assert seen[15][1] == pytest.approx(2.0) and seen[15][0] == pytest.approx(0.85)
    assert all(lrs[1] == 0.0 for lrs in seen[30:])
    assert seen[99][0] == pytest.approx(0.01)


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_faded_whitening_bias_trains_stops_and_resumes_exactly(tmp_path):
    small = synthetic_dataset(n_train=48, n_test=12)
    config = {"dataset": small, "model": "fast", "batch_size": 12, "precision": "fp32",
              "model_options": {"variant": "cpu"}, "whiten_bias_epochs": 2,
              "whiten_bias_fade": True, "optimizer": "muon", "lookahead": False}
    straight, _ = run({**config, "epochs": 3, "checkpoint": tmp_path / "straight.pt"})
    # stopped mid-fade (step 6 of the 8 the fade lasts), then resumed
    stopped, _ = run({**config, "epochs": 3, "report_interval_s": 0,
                      "checkpoint": tmp_path / "resumed.pt"},
                     stop_when=lambda u: u.get("phase") == "train" and u["global_step"] == 6)
    assert stopped["status"] == "stopped"
    resumed, _ = run({"dataset": small, "resume": tmp_path / "resumed.pt",
                      "checkpoint": tmp_path / "resumed.pt"})
    assert resumed["test_acc"] == straight["test_acc"]
    for key, value in model_state(tmp_path / "straight.pt").items():
        assert torch.equal(model_state(tmp_path / "resumed.pt")[key], value), key
    initial = build_model("fast", 3, small.train_images, variant="cpu").whiten.bias.detach()
    assert not torch.equal(model_state(tmp_path / "straight.pt")["whiten.bias"], initial)
    with pytest.raises(JobError, match="whiten_bias_fade needs whiten_bias_epochs"):
        resolve_config({**config, "whiten_bias_epochs": 0, "epochs": 1})


def test_new_recipe_settings_are_checked():
    for bad in ({"augment_per": "step"}, {"lr_start": 1.5}, {"lr_end": -0.1}):
        with pytest.raises(JobError):
            resolve_config(base_config(**bad))
    old = resolve_config(base_config(), base={**resolve_config(base_config()),
                                              "lr_start": None, "lr_end": None})
    assert old["lr_start"] == old["lr_end"] == 0.0  # checkpoints from before these keys


def test_muon_trains_the_fast_net_and_resumes_exactly(tmp_path):
    small = synthetic_dataset(n_train=48, n_test=12)
    config = {"dataset": small, "model": "fast", "epochs": 2, "batch_size": 12,
              "precision": "fp32", "optimizer": "muon", "muon_lr": 0.1, "seed": 1, "warmup": 0.5,
              "report_interval_s": 0, "model_options": {"variant": "cpu"}}
    straight, events = run({**config, "checkpoint": tmp_path / "straight.pt"})
    assert straight["config"]["optimizer"] == "muon"
    lrs = [e["lr"] for e in events if e["phase"] == "train"]
    # progress shows the SGD part's rate (the recipe's lr), not Muon's
    assert max(lrs) == pytest.approx(straight["config"]["lr"], rel=0.01)
    losses = [r["train_loss"] for r in straight["history"]]
    assert losses[1] < losses[0]
    stopped, _ = run({**config, "checkpoint": tmp_path / "stop.pt"},
                     stop_when=lambda u: u.get("phase") == "train" and u["global_step"] == 6)
    assert stopped["status"] == "stopped"
    saved = ckpt.load_checkpoint(tmp_path / "stop.pt")
    assert any(g.get("orthogonalize") for g in saved["optimizer_state"]["param_groups"])
    resumed, _ = run({"dataset": small, "resume": tmp_path / "stop.pt"})
    assert resumed["test_acc"] == straight["test_acc"]
    a, b = model_state(tmp_path / "straight.pt"), model_state(tmp_path / "stop.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # a new rate for the filters on resume reaches Muon's group; the other groups keep theirs
    before = saved["optimizer_state"]["param_groups"]
    _, events = run({"dataset": small, "resume": tmp_path / "straight.pt", "epochs": 3,
                     "muon_lr": 0.05})
    assert "from here on: muon lr 0.1 -> 0.05" in [u.get("message") for u in events]
    after = ckpt.load_checkpoint(tmp_path / "straight.pt")["optimizer_state"]["param_groups"]
    assert [g["initial_lr"] for g in after] == [
        0.05 if g.get("orthogonalize") else g["initial_lr"] for g in before]


def test_muon_on_a_book_net_and_its_settings_are_checked():
    # The book's Net has unnormalized convs: Muon steps them with weight decay, no rescaling,
    # at the generic default rate.
    result, _ = run(base_config(epochs=2, optimizer="muon", weight_decay=1e-4))
    assert result["config"]["muon_lr"] == 0.02
    assert result["test_acc"] > 0.5
    for bad in ({"muon_lr": 0}, {"muon_momentum": 1.0}, {"muon_lr": "fast"}):
        with pytest.raises(JobError):
            resolve_config(base_config(optimizer="muon", **bad))
    with pytest.raises(JobError, match="momentum"):
        run(base_config(optimizer="muon", momentum=0.0))


def test_a_resumed_run_writes_to_the_file_it_resumes_and_stores_absolute_paths(
        tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run(base_config(epochs=1, checkpoint="first.pt"))
    (tmp_path / "copy.pt").write_bytes((tmp_path / "first.pt").read_bytes())
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    result, _ = run({"dataset": DATA, "resume": "../copy.pt", "epochs": 2})
    assert result["checkpoint"] == str(tmp_path / "copy.pt")
    assert list((tmp_path / "elsewhere").iterdir()) == []
    assert ckpt.load_checkpoint(tmp_path / "first.pt")["epoch"] == 1  # the first run's file
    resumed = ckpt.load_checkpoint(tmp_path / "copy.pt")
    assert resumed["epoch"] == 2
    assert os.path.isabs(resumed["config"]["checkpoint"])


def test_resuming_without_data_explains_a_dataset_that_moved(tmp_path):
    blob = _checkpoint_after_one_epoch(tmp_path)
    blob["config"]["data"] = str(tmp_path / "gone.tar.gz")
    ckpt.save_checkpoint(tmp_path / "moved.pt", blob)
    with pytest.raises(JobError, match=r"is not there any more; load it from its new place "
                                       r"\(headless: --data"):
        train_job({"resume": tmp_path / "moved.pt", "epochs": 2}, JobContext("cpu"))


def _checkpoint_after_one_epoch(tmp_path, **overrides):
    path = tmp_path / "one.pt"
    run(base_config(epochs=1, checkpoint=path, momentum=0.9, **overrides))
    blob = ckpt.load_checkpoint(path)
    return {k: v for k, v in blob.items() if k not in ("format", "version")}


def test_resuming_with_a_new_learning_rate_uses_it_and_keeps_the_momentum(tmp_path):
    path = tmp_path / "one.pt"
    _checkpoint_after_one_epoch(tmp_path)
    before = model_state(path)
    (tmp_path / "same.pt").write_bytes(path.read_bytes())
    _, events = run({"dataset": DATA, "resume": path, "epochs": 2, "lr": 1e-9,
                     "report_interval_s": 0})
    notes = [u["message"] for u in events if u.get("phase") == "resume"]
    assert notes == ["from here on: lr 0.05 -> 1e-09"]
    assert {u["lr"] for u in events if u.get("phase") == "train"} == {1e-9}
    after = ckpt.load_checkpoint(path)
    assert [g["lr"] for g in after["optimizer_state"]["param_groups"]] == [1e-9]
    assert after["config"]["lr"] == 1e-9
    # at lr 1e-9 the weights stay put (the old rate would have moved them by ~1e-2)
    assert max((after["model_state"][k] - before[k]).abs().max() for k in before) < 1e-6
    assert any(len(s["momentum_buffer"]) for s in after["optimizer_state"]["state"].values())
    run({"dataset": DATA, "resume": tmp_path / "same.pt", "epochs": 2})
    moved = model_state(tmp_path / "same.pt")
    assert max((moved[k] - before[k]).abs().max() for k in before) > 1e-3


def test_a_changed_learning_rate_follows_the_schedule_from_where_it_was(tmp_path):
    _checkpoint_after_one_epoch(tmp_path, schedule="warmup_linear", warmup=0.5)
    _, events = run({"dataset": DATA, "resume": tmp_path / "one.pt", "epochs": 2, "lr": 0.5,
                     "report_interval_s": 0})
    steps = [u for u in events if u.get("phase") == "train"]
    # 12 steps, 6 of warm-up: the resumed epoch decays linearly from the peak 0.5 towards 0
    assert [round(u["lr"], 6) for u in steps] == [round(0.5 * (12 - s) / 6, 6)
                                                  for s in range(7, 13)]


def test_resuming_with_another_optimizer_is_refused(tmp_path):
    _checkpoint_after_one_epoch(tmp_path)
    with pytest.raises(JobError, match="trained with optimizer 'sgd', not 'adam'"):
        run({"dataset": DATA, "resume": tmp_path / "one.pt", "epochs": 2, "optimizer": "adam"})


def test_a_mid_epoch_checkpoint_resumes_only_in_the_same_batches(tmp_path):
    path = tmp_path / "stop.pt"
    run(base_config(epochs=2, checkpoint=path, report_interval_s=0, seed=0),
        stop_when=lambda u: u.get("phase") == "train" and u["global_step"] == 8)
    saved = ckpt.load_checkpoint(path)
    assert (saved["epoch"], saved["step"]) == (1, 2)
    before = path.read_bytes()
    # each refusal names what differs (the same settings on other data: its image count)
    for change, differs in (({"batch_size": 32}, r"batch \(all processes\) 16 then, 32 now"),
                            ({"max_train": 48}, r"training images 96 then, 48 now"),
                            ({"seed": 4}, r"seed 0 then, 4 now")):
        with pytest.raises(JobError, match=r"middle of epoch 2 \(after step 2 of 6\).*\(.*"
                                           + differs + r".*\): resume on the same data with "
                                           r"batch size 16, max train all, seed 0"):
            run({"dataset": DATA, "resume": path, **change})
    older = {k: v for k, v in saved.items() if k not in ("format", "version", "position")}
    ckpt.save_checkpoint(tmp_path / "older.pt", older)  # written before positions were kept
    with pytest.raises(JobError, match=r"middle of epoch 2 \(after step 2\)"):
        run({"dataset": DATA, "resume": tmp_path / "older.pt", "batch_size": 32})
    assert path.read_bytes() == before
    older_result, _ = run({"dataset": DATA, "resume": tmp_path / "older.pt"})
    assert older_result["status"] == "completed"
    result, _ = run({"dataset": DATA, "resume": path, "batch_size": 16})
    assert result["status"] == "completed" and len(result["history"]) == 2


def test_a_checkpoint_never_overwrites_the_data_or_a_file_that_is_no_checkpoint(tmp_path):
    from tests.engine.cifar_helpers import write_image_archive, write_image_folder

    archive = write_image_archive(write_image_folder(tmp_path / "imgs"), tmp_path / "d.tar.gz")
    before = archive.read_bytes()
    with pytest.raises(JobError, match="is the dataset itself"):
        run({"data": str(archive), "model": "net", "epochs": 1, "checkpoint": str(archive),
             "cache_dir": str(tmp_path / "cache")})
    notes = tmp_path / "notes.pt"
    notes.write_text("my notes")
    with pytest.raises(JobError, match="exists and is not a TorchDesk checkpoint"):
        run(base_config(epochs=1, checkpoint=notes))
    assert archive.read_bytes() == before and notes.read_text() == "my notes"
    run(base_config(epochs=1, checkpoint=tmp_path / "run.pt"))
    run(base_config(epochs=1, checkpoint=tmp_path / "run.pt"))  # an older checkpoint: replaced


def test_export_names_and_places_are_checked(tmp_path):
    good = tmp_path / "good.pt"
    run(base_config(epochs=1, checkpoint=good))
    with pytest.raises(JobError, match="is a folder; give the export a file name"):
        ckpt.export_model(good, tmp_path)
    with pytest.raises(JobError, match=r"ending in .pt \(TorchScript\) or .onnx"):
        ckpt.export_model(good, tmp_path / "model.json")
    as_json = tmp_path / "run.json"
    as_json.write_bytes(good.read_bytes())
    with pytest.raises(JobError, match="would overwrite the checkpoint it is made from"):
        ckpt.export_model(as_json, tmp_path / "run.onnx")  # its description is run.json
    (tmp_path / "m.json").mkdir()
    with pytest.raises(JobError, match="would replace a folder"):
        ckpt.export_model(good, tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()
    # an earlier export is replaced; a checkpoint, notes or foreign JSON are not
    exported = tmp_path / "model.pt"
    ckpt.export_model(good, exported)
    ckpt.export_model(good, exported)
    other_run = tmp_path / "other_run.pt"
    other_run.write_bytes(good.read_bytes())
    notes = tmp_path / "notes.pt"
    notes.write_text("my notes")
    results = tmp_path / "results.json"
    results.write_text('{"test_acc": 0.9}')
    for target in (other_run, notes, tmp_path / "results.onnx"):
        with pytest.raises(JobError, match="exists and is not a TorchDesk export"):
            ckpt.export_model(good, target)
    assert ckpt.is_checkpoint_file(other_run) and notes.read_text() == "my notes"
    assert results.read_text() == '{"test_acc": 0.9}'
    # each file of an ONNX export is judged on its own: a description of ours beside it does
    # not make a checkpoint replaceable
    (tmp_path / "other_run.json").write_text('{"format": "onnx", "class_names": ["a"]}')
    shutil.copy(good, tmp_path / "other_run.onnx")
    with pytest.raises(JobError, match="other_run.onnx' exists and is not a TorchDesk export"):
        ckpt.export_model(good, tmp_path / "other_run.onnx")


@pytest.mark.filterwarnings("ignore::FutureWarning")  # TorchScript is deprecated upstream
def test_export_targets_are_the_files_an_export_writes(tmp_path):
    pytest.importorskip("onnx")
    good = tmp_path / "good.pt"
    run(base_config(epochs=1, checkpoint=good))
    for name in ("model.pt", "model.pth", "model.onnx", "linked.onnx"):
        folder = tmp_path / name.replace(".", "-")
        (folder / "elsewhere").mkdir(parents=True)
        if name == "linked.onnx":  # a link is followed: its target and the target's .json
            (folder / name).symlink_to(folder / "elsewhere" / "model.onnx")
        ckpt.export_model(good, folder / name)
        written = {path for path in folder.rglob("*") if path.is_file() and not path.is_symlink()}
        assert set(ckpt.export_targets(folder / name)) == written, name
    assert ckpt.export_targets(tmp_path / "m.onnx", "torchscript") == [tmp_path / "m.onnx"]
    with pytest.raises(JobError, match=r"ending in .pt \(TorchScript\) or .onnx"):
        ckpt.export_targets(tmp_path / "model.json")
    assert ckpt.export_name("/m/model", "onnx") == "/m/model.onnx"
    assert ckpt.export_name("/m/model.pth", "onnx") == "/m/model.pth"  # its suffix says it


def test_classes_without_test_images_have_no_accuracy():
    result, _ = run(base_config(epochs=1, max_test=1))
    per_class = result["per_class_acc"]
    assert sum(acc is None for acc in per_class.values()) == 2
    assert all(acc in (0.0, 1.0) for acc in per_class.values() if acc is not None)
    assert result["batch_size"] == 16


def test_resuming_all_classes_with_a_class_list_says_all_classes(tmp_path):
    _checkpoint_after_one_epoch(tmp_path)
    with pytest.raises(JobError, match="trained with all classes, not classes cat, dog"):
        run({"dataset": DATA, "resume": tmp_path / "one.pt", "epochs": 2,
             "classes": ["cat", "dog"]})


def test_other_batches_per_epoch_on_resume_keep_the_schedule_in_step(tmp_path):
    path = tmp_path / "two.pt"
    run(base_config(schedule="warmup_linear", warmup=0.5, checkpoint=path))  # 2 x 6 steps
    _, events = run({"dataset": DATA, "resume": path, "epochs": 4, "batch_size": 8,
                     "report_interval_s": 0})
    notes = [u["message"] for u in events if u.get("phase") == "resume"]
    assert any("an epoch is now 12 steps" in n for n in notes)
    steps = [u for u in events if u.get("phase") == "train"]
    # 48 steps, 24 of warm-up; resumed at step 24 (2 epochs of 12): decaying from the peak
    assert steps[0]["global_step"] == 25
    assert steps[0]["lr"] == pytest.approx(0.05 * 23 / 24)
    assert steps[-1]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_a_diverging_run_is_an_error_and_writes_no_broken_checkpoint(tmp_path):
    path = tmp_path / "run.pt"
    with pytest.raises(JobError, match=r"diverged in epoch 1 \(the loss became (nan|inf)\): "
                                       r"lower the learning rate or the momentum$"):
        run(base_config(model="netres", epochs=2, lr=10, momentum=0.99, checkpoint=path))
    assert not path.exists()


def test_a_resume_keeps_the_class_it_trained_when_names_differ_only_by_case(tmp_path):
    data = synthetic_dataset(n_train=48, n_test=24, classes=("Cat", "cat", "dog"))
    path = tmp_path / "run.pt"
    first, _ = run({**base_config(epochs=1, checkpoint=path), "dataset": data,
                    "classes": ["Cat", "dog"]})
    assert first["class_names"] == ["Cat", "dog"]
    resumed, _ = run({"dataset": data, "resume": path, "epochs": 2, "classes": ["cat", "dog"]})
    assert resumed["class_names"] == ["Cat", "dog"]


@pytest.mark.parametrize("warm_up", [True, False])
def test_a_compile_failure_says_to_train_without_compile(monkeypatch, warm_up):
    class FailsToCompile(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):  # what a missing C compiler or an old GPU gives on the first call
            raise RuntimeError("backend='inductor' raised: no working C compiler found")

    monkeypatch.setattr(torch, "compile", lambda model, **_: FailsToCompile(model))
    with pytest.raises(JobError, match="torch.compile failed here .*no working C compiler.*"
                                       "train without compile"):
        run(base_config(epochs=1, compile=True, warm_up=warm_up))


def test_a_run_stopped_on_a_gpu_resumes_mid_epoch_on_the_cpu(tmp_path):
    config = base_config(epochs=2, flip=True, translate=1, report_interval_s=0,
                         checkpoint=tmp_path / "stop.pt")
    run(config, stop_when=lambda u: u.get("phase") == "train" and u["global_step"] == 8)
    blob = {k: v for k, v in ckpt.load_checkpoint(tmp_path / "stop.pt").items()
            if k not in ("format", "version")}
    # a CUDA generator's state: seed and offset, 16 bytes (a CPU one's is 5056)
    cuda_like = torch.cat([torch.tensor([7], dtype=torch.int64).view(torch.uint8),
                           torch.zeros(8, dtype=torch.uint8)])
    blob["rng"] = {**blob["rng"], "aug": cuda_like}
    ckpt.save_checkpoint(tmp_path / "from-gpu.pt", blob)
    resumed, _ = run({"dataset": DATA, "resume": tmp_path / "from-gpu.pt"})
    assert resumed["status"] == "completed" and len(resumed["history"]) == 2


def test_the_eta_counts_what_each_epoch_end_costs(monkeypatch):
    import engine.cifar.trainer as trainer

    clock = [0.0]

    def tick():  # a step-driven clock: each reading is 1 ms later
        clock[0] += 0.001
        return clock[0]

    real_accuracy = trainer._accuracy

    def slow_accuracy(*args, **kwargs):  # a test set that takes 10 s to evaluate
        clock[0] += 10.0
        return real_accuracy(*args, **kwargs)

    monkeypatch.setattr(trainer.time, "perf_counter", tick)
    monkeypatch.setattr(trainer, "_accuracy", slow_accuracy)
    _, events = run(base_config(epochs=4, eval_every=1, report_interval_s=0))
    first_of_epoch_2 = next(e for e in events if e["phase"] == "train" and e["epoch"] == 2)
    # three epoch ends to come (two evaluations and the final one), ~10 s each
    assert 25 < first_of_epoch_2["eta_s"] < 35


def _step_driven_clock(monkeypatch):
    """The trainer's clock made to advance 1 ms a reading (its reports then follow the code's
    logic, not the machine's pace); returns the clock, a one-item list, to move it on."""
    import engine.cifar.trainer as trainer

    clock = [0.0]

    def tick():
        clock[0] += 0.001
        return clock[0]

    monkeypatch.setattr(trainer.time, "perf_counter", tick)
    return clock


def test_the_final_evaluation_reports_its_progress_up_to_every_test_image():
    _, events = run(base_config(epochs=1, tta_level=1, eval_batch_size=16, report_interval_s=0))
    evaluating = [e for e in events if e["phase"] == "evaluate"]
    assert [e["done"] for e in evaluating] == [0, 16, 32, 48]  # the 48 test images, by batch
    assert {e["total"] for e in evaluating} == {48}
    assert all(e["eta_s"] >= 0 for e in evaluating) and evaluating[-1]["eta_s"] == 0
    # the training reports' interval: the first and last always, none between here
    _, events = run(base_config(epochs=1, eval_batch_size=16, report_interval_s=1e9))
    assert [e["done"] for e in events if e["phase"] == "evaluate"] == [0, 48]


def test_the_eta_counts_the_final_evaluation_with_its_tta_views(monkeypatch):
    from engine.cifar.fast import tta_views
    from engine.cifar.trainer import FORWARD_SHARE_OF_A_STEP

    clock = _step_driven_clock(monkeypatch)
    etas = {}
    for tta_level in (0, 2):
        clock[0] = 0.0  # both runs read the same times
        _, events = run(base_config(epochs=2, eval_every=0, tta_level=tta_level,
                                    report_interval_s=0))
        etas[tta_level] = [e for e in events if e["phase"] == "train" and e["epoch"] == 2]
    plain, tta = etas[0], etas[2]
    assert [e["global_step"] for e in tta] == [e["global_step"] for e in plain] == \
        list(range(7, 13))
    for with_tta, without in zip(tta, plain, strict=True):
        seconds_per_image = 1 / with_tta["images_per_s"]
        assert seconds_per_image == 1 / without["images_per_s"]
        steps_left = 16 * seconds_per_image * (with_tta["total_steps"] - with_tta["global_step"])
        # without an evaluation between epochs, a view of an image is estimated from training
        extra_views = tta_views(2) - tta_views(0)
        assert with_tta["eta_s"] - without["eta_s"] == pytest.approx(
            48 * extra_views * FORWARD_SHARE_OF_A_STEP * seconds_per_image)
        assert with_tta["eta_s"] > without["eta_s"] > steps_left
    assert tta[-1]["global_step"] == tta[-1]["total_steps"] and tta[-1]["eta_s"] > 0


def test_the_final_evaluation_is_estimated_at_the_pace_of_the_ones_between_epochs(monkeypatch):
    import engine.cifar.trainer as trainer

    clock = _step_driven_clock(monkeypatch)
    real_accuracy = trainer._accuracy

    def slow_accuracy(*args, **kwargs):  # a test set that takes 10 s to evaluate
        clock[0] += 10.0
        return real_accuracy(*args, **kwargs)

    monkeypatch.setattr(trainer, "_accuracy", slow_accuracy)
    _, events = run(base_config(epochs=3, eval_every=1, tta_level=2, report_interval_s=0))
    first_of_last_epoch = next(e for e in events if e["phase"] == "train" and e["epoch"] == 3)
    # no evaluation between epochs to come; the final one looks at 6 views: ~60 s
    assert 55 < first_of_last_epoch["eta_s"] < 65
    evaluating = [e for e in events if _in_the_final_evaluation(e)]
    assert evaluating[0]["done"] == 0 and 55 < evaluating[0]["eta_s"] < 65


def test_the_evaluations_between_epochs_report_their_progress_too():
    _, events = run(base_config(epochs=3, eval_every=1, eval_batch_size=16, report_interval_s=0))
    evaluating = [e for e in events if e["phase"] == "evaluate"]
    by_epoch = {}
    for e in evaluating:
        by_epoch.setdefault((e["epoch"], e["between_epochs"]), []).append(e["done"])
    # each of the 48 test images, by batch: after epochs 1 and 2, then the final evaluation
    assert by_epoch == {(1, True): [0, 16, 32, 48], (2, True): [0, 16, 32, 48],
                        (3, False): [0, 16, 32, 48]}
    assert {e["total"] for e in evaluating} == {48}
    # estimated from the start (the first from the training's pace), 0 s left at the end
    assert all(e["eta_s"] >= 0 for e in evaluating)
    assert [e["eta_s"] for e in evaluating if e["done"] == 48] == [0, 0, 0]
    # each comes before its epoch's report, which has its test accuracy
    phases = [(e["phase"], e["epoch"]) for e in events if e["phase"] in ("evaluate", "epoch")]
    assert phases.index(("evaluate", 1)) < phases.index(("epoch", 1)) < \
        phases.index(("evaluate", 2))
    # throttled like the training reports: the first and last only, here
    _, events = run(base_config(epochs=2, eval_every=1, eval_batch_size=16,
                                report_interval_s=1e9))
    assert [(e["done"], e["between_epochs"]) for e in events if e["phase"] == "evaluate"] == \
        [(0, True), (48, True), (0, False), (48, False)]


def test_a_stop_during_an_evaluation_between_epochs_stops_at_that_epochs_end(tmp_path):
    path = tmp_path / "c.pt"
    result, events = run(base_config(epochs=3, eval_every=1, checkpoint=path),
                         stop_when=lambda u: u["phase"] == "evaluate" and u["between_epochs"])
    assert result["status"] == "stopped" and len(result["history"]) == 1
    assert "test_acc" not in result["history"][0]  # given up
    assert ckpt.load_checkpoint(path)["epoch"] == 1


def test_errors_every_torchrun_rank_meets_alike_are_marked_for_rank_0_to_say_once(tmp_path):
    # the optimizer's own checks come with the other settings, before any data is loaded
    with pytest.raises(JobError, match="Nesterov SGD needs momentum above 0"):
        resolve_config(base_config(optimizer="nesterov", momentum=0))
    path = tmp_path / "stop.pt"
    run(base_config(epochs=2, checkpoint=path, report_interval_s=0),
        stop_when=lambda u: u.get("phase") == "train" and u["global_step"] == 8)
    blob = {k: v for k, v in ckpt.load_checkpoint(path).items() if k not in ("format", "version")}
    blob["model_state"] = dict(list(blob["model_state"].items())[1:])
    ckpt.save_checkpoint(tmp_path / "weights-missing.pt", blob)
    for resumed in ({"resume": path, "batch_size": 32},  # other batches mid-epoch
                    {"resume": path, "dataset": synthetic_dataset(classes=("cat", "dog"))},
                    {"resume": tmp_path / "weights-missing.pt"},
                    {"resume": tmp_path / "not-there.pt"}):  # rank 1 is not first to say it
        with pytest.raises(JobError) as error:
            run({"dataset": DATA, **resumed})
        assert getattr(error.value, "every_rank", False), error.value


def test_a_checkpoint_write_that_fails_mid_run_says_what_the_file_keeps(tmp_path, monkeypatch):
    real_write = ckpt.write_atomically
    writes = []

    def disk_full_from_the_second_write(path, files, what):
        writes.append(path)
        if len(writes) >= 2:  # what write_atomically says when the disk is full
            raise JobError(f"cannot write {what} '{path}': No space left on device")
        real_write(path, files, what)

    monkeypatch.setattr(ckpt, "write_atomically", disk_full_from_the_second_write)
    path = tmp_path / "c.pt"
    with pytest.raises(JobError, match=r"No space left on device; training stopped, and the "
                                       r"checkpoint keeps 1 finished epoch \(resume from it\)$"):
        run(base_config(epochs=3, checkpoint=path))
    assert ckpt.load_checkpoint(path)["epoch"] == 1
    writes.clear()
    writes.append("the first write fails too")
    with pytest.raises(JobError, match="before its first checkpoint was saved$"):
        run(base_config(epochs=3, checkpoint=tmp_path / "other.pt"))


def test_a_checkpoint_write_that_fails_after_training_keeps_the_result_and_warns(
        tmp_path, monkeypatch):
    real_write = ckpt.write_atomically
    failing = set()  # which writes fail, counted from 1
    writes = []

    def disk_full(path, files, what):
        writes.append(path)
        if len(writes) in failing:
            raise JobError(f"cannot write {what} '{path}': No space left on device")
        real_write(path, files, what)

    monkeypatch.setattr(ckpt, "write_atomically", disk_full)
    failing.add(2)  # epoch 1's end is written; the finished model is not
    result, _ = run(base_config(checkpoint=tmp_path / "c.pt"))
    assert result["status"] == "completed" and result["test_acc"] is not None
    assert result["checkpoint"] is None
    assert result["warning"].startswith("the trained model was not saved (cannot write")
    assert result["warning"].endswith("No space left on device); the checkpoint holds its 1 "
                                      "finished epoch (resume from it to train and save the "
                                      "rest)")
    writes.clear()
    failing.clear()
    failing.add(3)  # the model is written; the test accuracy added after the evaluation is not
    result, _ = run(base_config(checkpoint=tmp_path / "d.pt"))
    assert result["status"] == "completed" and result["checkpoint"] == str(tmp_path / "d.pt")
    assert "the test accuracy was not added to the checkpoint" in result["warning"]
    assert ckpt.load_checkpoint(tmp_path / "d.pt")["epoch"] == 2
    writes.clear()
    failing.add(1)  # one epoch: its first write is the finished model's
    result, _ = run(base_config(epochs=1, checkpoint=tmp_path / "e.pt"))
    assert result["warning"].endswith("; no checkpoint of this run was written")
    writes.clear()
    failing.clear()
    failing.add(1)  # a finished checkpoint resumed to be evaluated: its rewrite fails
    result, _ = run({"dataset": DATA, "resume": tmp_path / "d.pt"})
    # not "the trained model was not saved": the file holds it, and the test accuracy is added
    assert result["test_acc"] is not None and result["checkpoint"] == str(tmp_path / "d.pt")
    assert "warning" not in result and len(writes) == 2
    assert ckpt.load_checkpoint(tmp_path / "d.pt")["history"][-1]["test_acc"] == result["test_acc"]


def test_a_resume_whose_file_cannot_be_written_says_how_to_write_elsewhere(tmp_path,
                                                                         monkeypatch):
    path = tmp_path / "c.pt"
    run(base_config(epochs=1, checkpoint=path))

    def read_only(target, data=None):
        raise JobError(f"cannot write the checkpoint '{target}': Read-only file system")

    monkeypatch.setattr(ckpt, "check_writable", read_only)
    with pytest.raises(JobError, match=r"Read-only file system \(a resumed run writes to the "
                                       r"checkpoint it resumes; .*--checkpoint FILE\)$"):
        run({"dataset": DATA, "resume": path, "epochs": 2})
    with pytest.raises(JobError, match="Read-only file system$"):  # a file the user chose
        run({"dataset": DATA, "resume": path, "epochs": 2, "checkpoint": tmp_path / "new.pt"})


def test_a_schedule_changed_on_resume_drives_the_very_first_step(tmp_path, monkeypatch):
    path = tmp_path / "c.pt"
    run(base_config(epochs=2, schedule="warmup_linear", warmup=0.5, batch_size=96,
                    checkpoint=path))  # one step per epoch: the last one's rate decayed to 0
    rates = []
    real_step = torch.optim.SGD.step

    def recording_step(self, *args, **kwargs):
        rates.append(self.param_groups[0]["lr"])
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", recording_step)
    _, events = run({"dataset": DATA, "resume": path, "epochs": 3, "schedule": "constant"})
    assert rates == [0.05]  # the constant rate, not the checkpoint's decayed one
    assert "from here on: schedule warmup_linear -> constant" in [
        e.get("message") for e in events]


def test_a_finite_runaway_loss_is_divergence_not_a_completed_run(tmp_path):
    path = tmp_path / "run.pt"
    with pytest.raises(JobError, match=r"diverged in epoch \d \(the loss became [\d.e+]+, "
                                       r"against 1\.1 for a uniform guess\): lower the "
                                       r"learning rate or the momentum"):
        run(base_config(lr=10, epochs=3, checkpoint=path))


def test_a_healthy_run_is_far_below_the_runaway_loss():
    from engine.cifar.trainer import RUNAWAY_LOSS_FACTOR

    result, _ = run(base_config())
    threshold = RUNAWAY_LOSS_FACTOR * math.log(3)  # three classes
    assert max(row["train_loss"] for row in result["history"]) < threshold / 3
