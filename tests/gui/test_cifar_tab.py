"""The CIFAR-10 tab driven like a user: load data, train with live curves, stop, resume,
click the confusion matrix, hand the model to Classify."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from PySide6.QtCore import QPointF, Qt

from tests.engine.cifar_helpers import write_image_folder
from tests.gui.conftest import plot_points, text_cut_off

pytest.importorskip("pyqtgraph")


@pytest.fixture
def tiny_data(tmp_path):
    root = write_image_folder(tmp_path / "imgs", n_train=12, n_test=4)
    # two green "cats" in the test set: some test images are surely misclassified
    for i, src in enumerate(sorted((root / "test" / "dog").iterdir())[:2]):
        shutil.copy(src, root / "test" / "cat" / f"green-{i}.png")
    return root


@pytest.fixture
def tab(open_tab, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHDESK_CACHE_DIR", str(tmp_path / "cache"))
    from gui.tabs.cifar import CifarTab

    return open_tab(CifarTab)


curve_points = plot_points


def load(qtbot, tab, path):
    tab.path_edit.setText(str(path))
    tab.load_data()
    qtbot.waitUntil(lambda: tab.data_info is not None, timeout=60_000)


def click_cell(qtbot, tab, true_index, predicted_index):
    view_box = tab.confusion_plot.getViewBox()
    scene = view_box.mapViewToScene(QPointF(predicted_index + 0.5, true_index + 0.5))
    pos = tab.confusion_plot.mapFromScene(scene)
    qtbot.mouseClick(tab.confusion_plot.viewport(), Qt.MouseButton.LeftButton, pos=pos)


def test_load_train_stop_resume_and_inspect(qtbot, tab, tiny_data, tmp_path, app_state):
    tab.path_edit.setText(str(tiny_data))
    qtbot.mouseClick(tab.load_button, Qt.MouseButton.LeftButton)
    assert not tab.train_button.isEnabled() and not tab.browse_folder_button.isEnabled()
    qtbot.waitUntil(lambda: tab.data_info is not None, timeout=60_000)
    assert tab.class_list.count() == 3
    assert "3 classes, 36 train / 14 test" in tab.stats_label.text()
    assert tab.sample_grid.grid_layout.count() == 3 * (1 + 8)  # name + up to 8 samples (of 12)

    tab.set_classes(["cat", "dog"])
    assert tab.selected_classes() == ["cat", "dog"]
    tab.set_classes(None)
    tab.model_combo.setCurrentIndex(tab.model_combo.findData("net"))
    assert tab.params_label.text() == "18,123"  # the book's Net with 3 outputs
    tab.epochs_spin.setValue(500)
    tab.batch_spin.setValue(4)
    tab.lr_spin.setValue(0.02)
    tab.precision_combo.setCurrentIndex(tab.precision_combo.findData("fp32"))
    checkpoint = tmp_path / "run" / "cifar.pt"
    tab.checkpoint_edit.setText(str(checkpoint))

    qtbot.mouseClick(tab.train_button, Qt.MouseButton.LeftButton)
    assert tab.is_training() and tab.stop_button.isEnabled()
    # what the run trains on and with cannot change under it
    for widget in (tab.path_edit, tab.browse_folder_button, tab.browse_archive_button,
                   tab.load_button, tab.class_list, tab.model_group, tab.checkpoint_edit,
                   tab.train_button, tab.resume_button):
        assert not widget.isEnabled()
    qtbot.waitUntil(lambda: curve_points(tab.curves.loss_curve) >= 3, timeout=60_000)
    first = curve_points(tab.curves.loss_curve)
    # the loss curve keeps growing (one batch may bring both the new loss and the epoch's end)
    qtbot.waitUntil(lambda: curve_points(tab.curves.train_acc_curve) >= 2
                    and curve_points(tab.curves.loss_curve) > first, timeout=60_000)
    assert curve_points(tab.curves.test_acc_curve) >= 1
    # the label shows the training's speed (or the test after an epoch, until training goes on)
    qtbot.waitUntil(lambda: "images/s" in tab.speed_label.text(), timeout=30_000)

    qtbot.mouseClick(tab.stop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not tab.is_training(), timeout=30_000)
    assert tab.stopped_result["status"] == "stopped" and tab.last_result is None
    assert checkpoint.is_file()
    assert "checkpoint kept" in tab.result_label.text()

    # resume the kept checkpoint for one more epoch
    from engine.cifar.checkpoint import describe, load_checkpoint

    saved = describe(load_checkpoint(checkpoint))
    tab.epochs_spin.setValue(7)
    tab.lr_spin.setValue(0.5)
    tab.batch_spin.setValue(16)
    tab.precision_combo.setCurrentIndex(tab.precision_combo.findData("auto"))
    tab.resume_from(str(checkpoint))  # by default: on to the 500 epochs it was planned for
    assert tab.epochs_spin.value() == 500 and tab.is_training()
    # the controls show what the resumed run trains with: the checkpoint's recipe
    assert tab.lr_spin.value() == pytest.approx(0.02) and tab.batch_spin.value() == 4
    assert tab.precision_combo.currentData() == "auto"  # a run setting: the user's
    # the changes remembered for Net's recipe stay the user's, not the checkpoint's
    remembered = json.loads(app_state.settings.value("cifar/recipe/net"))
    assert remembered == {"epochs": 7, "lr": 0.5, "batch_size": 16}
    # once it has started, the epochs it trained before are on the curves (the stopped run's
    # curves stay until then)
    qtbot.waitUntil(lambda: not tab._results_pending_clear, timeout=30_000)
    assert curve_points(tab.curves.train_acc_curve) >= saved["epoch"]
    assert tab.curves.loss_curve.xData[0] == 1.0
    tab.stop_training()
    qtbot.waitUntil(lambda: not tab.is_training(), timeout=30_000)
    saved = describe(load_checkpoint(checkpoint))
    tab.checkpoint_edit.setText(str(tmp_path / "another-run.pt"))
    tab.resume_from(str(checkpoint), epochs=saved["epoch"] + 1)
    assert tab.checkpoint_edit.text() == str(checkpoint)  # it goes on in its own file
    qtbot.waitUntil(lambda: not tab.is_training(), timeout=60_000)
    assert app_state.last_error is None
    assert not (tmp_path / "another-run.pt").exists()
    assert describe(load_checkpoint(checkpoint))["epoch"] == saved["epoch"] + 1
    assert f"after {saved['epoch'] + 1} epochs" in tab.result_label.text()
    assert tab.last_result["status"] == "completed"
    assert tab.last_result["epochs"] == saved["epoch"] + 1

    # clicking a heatmap cell lists exactly that cell's misclassified test images
    result = tab.last_result
    click_cell(qtbot, tab, 1, 1)
    assert tab.selected_cell == (1, 1)
    assert tab.mistakes_list.count() == 0
    errors = {cell: idx for cell, idx in result["misclassified"].items() if idx}
    assert errors, "the green cats should be misclassified"
    cell, indices = next(iter(errors.items()))
    true_index, predicted_index = map(int, cell.split(","))
    click_cell(qtbot, tab, true_index, predicted_index)
    assert tab.selected_cell == (true_index, predicted_index)
    assert tab.mistakes_list.count() == len(indices)

    with qtbot.waitSignal(app_state.use_in_classify, timeout=30_000) as handed_over:
        qtbot.mouseClick(tab.classify_button, Qt.MouseButton.LeftButton)
    description = handed_over.args[0]
    assert description["class_names"] == ["cat", "dog", "ship"]
    assert description["format"] == "torchscript" and Path(description["path"]).is_file()
    assert len(description["mean"]) == 3

    # other data loaded: the old results go, nothing stale stays clickable
    other = write_image_folder(tmp_path / "other", n_train=6, n_test=2)
    tab.path_edit.setText(str(other))
    tab.load_data()
    qtbot.waitUntil(lambda: not tab.data_runner.is_running() and tab.last_result is None,
                    timeout=60_000)
    assert tab.mistakes_list.count() == 0 and "New data loaded" in tab.result_label.text()
    tab.show_misclassified(true_index, predicted_index)
    assert tab.mistakes_list.count() == 0


def test_controls_guard_against_slips(qtbot, tab, tiny_data, tmp_path, app_state):
    load(qtbot, tab, tiny_data)
    # no class checked: said at once, and Train refuses instead of training on all classes
    tab.set_classes([])
    assert "check at least two" in tab.stats_label.text()
    tab.start_training()
    assert not tab.is_training() and "at least two classes" in app_state.last_error[1]
    tab.set_classes(None)
    # the book's nets keep the user's settings when the device changes
    tab.model_combo.setCurrentIndex(tab.model_combo.findData("net"))
    tab.lr_spin.setValue(0.0333)
    tab.epochs_spin.setValue(2)
    app_state.device_changed.emit("cpu")
    assert tab.lr_spin.value() == pytest.approx(0.0333) and tab.epochs_spin.value() == 2
    # weight decay and learning rate typed as papers write them
    from tests.gui.test_widgets import type_into

    type_into(qtbot, tab.weight_decay_spin, "5e-4")
    type_into(qtbot, tab.lr_spin, "3e-3")
    assert tab.training_config()["weight_decay"] == 5e-4
    assert tab.training_config()["lr"] == 3e-3
    # a constant schedule takes no warm-up (the trainer would refuse one)
    tab.schedule_combo.setCurrentIndex(tab.schedule_combo.findData("constant"))
    assert tab.training_config()["warmup"] is None
    tab.schedule_combo.setCurrentIndex(tab.schedule_combo.findData("warmup_linear"))
    assert tab.training_config()["warmup"] > 0
    # Export and Use in Classify follow the checkpoint field as it is edited
    tab.checkpoint_edit.setText(str(tmp_path / "none.pt"))
    assert not tab.export_button.isEnabled()
    existing = tmp_path / "existing.pt"
    existing.write_bytes(b"x")
    tab.checkpoint_edit.setText(str(existing))
    assert tab.export_button.isEnabled() and tab.classify_button.isEnabled()


def test_bad_data_path_shows_a_message(qtbot, tab, tmp_path, app_state):
    tab.path_edit.setText(str(tmp_path / "missing"))
    tab.load_data()
    qtbot.waitUntil(lambda: app_state.last_error is not None, timeout=30_000)
    title, text = app_state.last_error
    assert "does not exist" in text
    assert tab.load_button.isEnabled()
    assert tab.data_progress.format() == "not loaded" and tab.speed_label.text() != "error"
    tab.set_classes(["airplane", "bird"])  # CIFAR-2 with nothing loaded
    assert "Load a dataset first" in app_state.last_error[1]


def test_cancel_applies_nothing_even_when_the_load_ends_first(qtbot, tab, tiny_data):
    load(qtbot, tab, tiny_data)
    tab.data_info = None
    tab.load_data()  # from the cache now: it may well be done before Cancel is seen
    tab.data_runner._thread.wait()  # the job has ended; its result waits in the event queue
    qtbot.mouseClick(tab.cancel_load_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not tab.data_runner.is_running(), timeout=30_000)
    assert tab.data_info is None and tab.data_progress.format() == "cancelled"
    assert tab.load_button.isEnabled() and not tab.cancel_load_button.isEnabled()


def test_a_device_change_during_a_run_waits_for_its_end(qtbot, tab, tiny_data, tmp_path,
                                                        app_state):
    from engine.cifar.trainer import model_defaults

    load(qtbot, tab, tiny_data)
    tab.model_combo.setCurrentIndex(tab.model_combo.findData("fast"))
    tab.epochs_spin.setValue(500)
    tab.batch_spin.setValue(8)
    tab.checkpoint_edit.setText("")
    tab.start_training()
    assert tab.is_training()
    app_state.set_device("cuda:0")  # picked in the Device menu; this run goes on on the CPU
    assert tab.epochs_spin.value() == 500 and tab.batch_spin.value() == 8  # left alone
    tab.stop_training()
    qtbot.waitUntil(lambda: not tab.is_training(), timeout=60_000)
    assert "nothing was kept" in tab.result_label.text()
    # then the GPU's Fast recipe is shown, and going back brings the user's CPU changes back
    gpu = model_defaults("fast", "cuda")
    assert (tab.epochs_spin.value(), tab.batch_spin.value()) == (gpu["epochs"], gpu["batch_size"])
    assert not tab.defaults_button.isEnabled()
    app_state.set_device("cpu")
    assert (tab.epochs_spin.value(), tab.batch_spin.value()) == (500, 8)
    assert tab.recipe_label.text() == "Changed: batch size, epochs"


def test_the_recipe_changes_a_user_made_are_remembered(qtbot, open_tab, app_state):
    from engine.cifar.trainer import model_defaults
    from gui.tabs.cifar import CifarTab

    tab = open_tab(CifarTab)
    tab.model_combo.setCurrentIndex(tab.model_combo.findData("net"))
    assert tab.recipe_label.text() == "The recipe's defaults"
    tab.lr_spin.setValue(0.0333)
    tab.epochs_spin.setValue(7)
    tab.flip_check.setChecked(not tab.flip_check.isChecked())
    tab.flip_check.setChecked(not tab.flip_check.isChecked())  # back to the default: not a change
    tab.seed_spin.setValue(5)
    tab.compile_check.setChecked(True)
    tab.max_train_spin.setValue(3000)
    # another model shows its own defaults; coming back shows the changes again
    tab.model_combo.setCurrentIndex(tab.model_combo.findData("netres"))
    assert tab.lr_spin.value() == pytest.approx(model_defaults("netres")["lr"])
    tab.model_combo.setCurrentIndex(tab.model_combo.findData("net"))
    assert tab.lr_spin.value() == pytest.approx(0.0333) and tab.epochs_spin.value() == 7
    assert tab.recipe_label.text() == "Changed: learning rate, epochs"
    tab.shutdown()

    reopened = open_tab(CifarTab)  # the next start of the app: same settings
    assert reopened.model_combo.currentData() == "net"
    assert reopened.lr_spin.value() == pytest.approx(0.0333) and reopened.epochs_spin.value() == 7
    assert reopened.training_config()["seed"] == 5 and reopened.compile_check.isChecked()
    assert reopened.training_config()["max_train"] == 3000
    # what the user left alone follows the defaults, even when they are not the old ones
    assert reopened.momentum_spin.value() == pytest.approx(model_defaults("net")["momentum"])
    assert set(json.loads(app_state.settings.value("cifar/recipe/net"))) == {"lr", "epochs"}
    qtbot.mouseClick(reopened.defaults_button, Qt.MouseButton.LeftButton)
    assert reopened.lr_spin.value() == pytest.approx(model_defaults("net")["lr"])
    assert reopened.epochs_spin.value() == model_defaults("net")["epochs"]
    assert app_state.settings.value("cifar/recipe/net") is None
    assert not reopened.defaults_button.isEnabled()
    # a hand-edited settings file: its bad values are ignored, the good ones kept
    app_state.settings.setValue("cifar/recipe/netres", '{"lr": "fast", "epochs": 4, "x": 1}')
    app_state.settings.setValue("cifar/recipe/netdepth", "not json")
    reopened.model_combo.setCurrentIndex(reopened.model_combo.findData("netres"))
    assert reopened.lr_spin.value() == pytest.approx(model_defaults("netres")["lr"])
    assert reopened.epochs_spin.value() == 4
    reopened.model_combo.setCurrentIndex(reopened.model_combo.findData("netdepth"))
    assert reopened.epochs_spin.value() == model_defaults("netdepth")["epochs"]


def test_a_resumed_recipe_is_shown_but_only_the_users_own_edits_are_remembered(
        qtbot, tab, tiny_data, tmp_path, app_state):
    load(qtbot, tab, tiny_data)
    tab.model_combo.setCurrentIndex(tab.model_combo.findData("net"))
    tab.lr_spin.setValue(0.02)
    tab.batch_spin.setValue(4)
    tab.epochs_spin.setValue(1)
    tab.seed_spin.setValue(7)
    tab.max_train_spin.setValue(20)
    checkpoint = tmp_path / "run.pt"
    tab.checkpoint_edit.setText(str(checkpoint))
    tab.start_training()
    qtbot.waitUntil(lambda: not tab.is_training(), timeout=60_000)
    qtbot.mouseClick(tab.defaults_button, Qt.MouseButton.LeftButton)
    assert app_state.settings.value("cifar/recipe/net") is None
    tab.seed_spin.setValue(1)
    tab.max_train_spin.setValue(0)  # all

    # a refused resume leaves the controls alone
    tab.model_combo.setCurrentIndex(tab.model_combo.findData("fast"))
    shown = tab.training_config()
    tab.path_edit.setText(str(tmp_path))
    tab.resume_from(str(checkpoint))
    assert not tab.is_training() and "Press Load" in app_state.last_error[1]
    assert tab.training_config() == {**shown, "data": str(tiny_data)}
    assert tab.model_combo.currentData() == "fast"

    tab.path_edit.setText(str(tiny_data))
    tab.resume_from(str(checkpoint), epochs=2)
    qtbot.waitUntil(lambda: not tab.is_training(), timeout=60_000)
    assert tab.lr_spin.value() == 0.02
    assert tab.recipe_label.text() == "The resumed checkpoint's recipe"
    # the run's seed and image count are shown; the user's stay the remembered ones
    assert (tab.seed_spin.value(), tab.max_train_spin.value()) == (7, 20)
    tab._save_settings()
    assert int(app_state.settings.value("cifar/seed")) == 1
    assert int(app_state.settings.value("cifar/max_train")) == 0
    resumed_state = tab.training_config()
    tab.epochs_spin.setValue(3)  # the one thing the user changes
    assert json.loads(app_state.settings.value("cifar/recipe/net")) == {"epochs": 3}
    # Defaults: first the model's recipe with the user's changes, then without them
    qtbot.mouseClick(tab.defaults_button, Qt.MouseButton.LeftButton)
    assert tab.recipe_label.text() == "Changed: epochs" and tab.lr_spin.value() == 0.01
    # with it the user's seed and image count come back: what is shown is what trains
    assert resumed_state["seed"] == 7
    assert (tab.training_config()["seed"], tab.training_config()["max_train"]) == (1, None)
    qtbot.mouseClick(tab.defaults_button, Qt.MouseButton.LeftButton)
    assert tab.recipe_label.text() == "The recipe's defaults"
    assert app_state.settings.value("cifar/recipe/net") is None


def test_export_takes_the_suffix_of_the_chosen_file_type():
    from gui.tabs.cifar import CifarTab

    assert CifarTab.export_path("/m/model", "ONNX (*.onnx)") == "/m/model.onnx"
    assert CifarTab.export_path("/m/model", "TorchScript (*.pt)") == "/m/model.pt"
    assert CifarTab.export_path("/m/model.onnx", "TorchScript (*.pt)") == "/m/model.onnx"
    assert CifarTab.export_path("/m/model.pth", "ONNX (*.onnx)") == "/m/model.pth"  # as the CLI


def test_torchrun_command_mirrors_the_cli(tmp_path):
    from gui.torchrun import TorchrunProcess

    args = TorchrunProcess.command({"data": "/d", "model": "fast", "epochs": 3,
                                    "classes": ["cat", "dog"], "flip": True, "lr": None,
                                    "device": "cuda"}, nproc=4)
    assert args[:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4", "-m"]
    joined = " ".join(args)
    assert "--data /d" in joined and "--classes cat,dog" in joined and "--flip" in args
    assert "--lr" not in args and "--progress-json" in args


def test_torchrun_gets_every_setting_the_tab_trains_with(tab):
    from engine.cli import build_parser
    from gui.torchrun import TorchrunProcess

    config = {**tab.training_config(), "data": "/d", "max_test": 2000}
    args = TorchrunProcess.command(config, nproc=2)
    parsed = build_parser().parse_args(args[args.index("engine") + 1:])
    for key, value in config.items():
        if value is not None:
            assert getattr(parsed, key) == (",".join(value) if key == "classes" else value), key


def test_all_gpus_hides_the_gpus_it_does_not_use(monkeypatch):
    from gui.torchrun import TorchrunProcess

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert TorchrunProcess.visible_devices([0, 2, 3]) == "0,2,3"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,5,6,7")  # the app itself sees 4 of 8
    assert TorchrunProcess.visible_devices([0, 2, 3]) == "4,6,7"


def test_torchrun_process_feeds_the_same_live_view(qtbot, tmp_path, monkeypatch):
    """The "All GPUs" launcher, exercised with two CPU ranks (gloo) instead of GPUs."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    from gui.torchrun import TorchrunProcess

    root = write_image_folder(tmp_path / "imgs", n_train=8, n_test=2)
    process = TorchrunProcess()
    batches = []
    process.progress.connect(batches.append)
    config = {"data": str(root), "model": "net", "epochs": 2, "batch_size": 4, "device": "cpu",
              "precision": "fp32", "cache_dir": str(tmp_path / "cache")}
    with qtbot.waitSignal(process.finished, timeout=180_000):
        with qtbot.waitSignal(process.returned, timeout=180_000) as returned:
            process.start(config, gpus=[0, 1])  # two ranks (on the CPU here)
    result = returned.args[0]
    assert result["world_size"] == 2 and result["status"] == "completed"
    phases = [u["phase"] for batch in batches for u in batch]
    assert "train" in phases and phases.count("epoch") == 2  # rank 0 only
    evaluations = [u for batch in batches for u in batch if u["phase"] == "evaluate"]
    # the test after epoch 1, then the final evaluation, each up to every test image
    assert [(u["epoch"], u["done"]) for u in evaluations if u["done"] == u["total"]] == \
        [(1, result["test_images"]), (2, result["test_images"])]
    assert not process.is_running()


def test_torchrun_process_says_the_clis_error_not_torchruns_report(qtbot, tmp_path,
                                                                    monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    from gui.torchrun import TorchrunProcess

    process = TorchrunProcess()
    with qtbot.waitSignal(process.errored, timeout=180_000) as errored:  # said by rank 0 alone
        process.start({"data": str(tmp_path), "model": "bogus", "device": "cpu"}, gpus=[0, 1])
    # torchrun's own failure report (some 40 lines) follows the CLI's error line
    assert errored.args[0].startswith("unknown model 'bogus'; choose one of: ")


def test_results_survive_a_refused_start_and_a_reload_and_train_uses_the_shown_data(
        qtbot, tab, tiny_data, tmp_path, app_state):
    load(qtbot, tab, tiny_data)
    tab.model_combo.setCurrentIndex(tab.model_combo.findData("net"))
    tab.epochs_spin.setValue(1)
    tab.batch_spin.setValue(8)
    tab.precision_combo.setCurrentIndex(tab.precision_combo.findData("fp32"))
    tab.start_training()
    qtbot.waitUntil(lambda: not tab.is_training() and tab.last_result is not None,
                    timeout=60_000)
    shown = tab.result_label.text()
    cell = next(c for c, idx in tab.last_result["misclassified"].items() if idx)
    tab.show_misclassified(*map(int, cell.split(",")))
    mistakes = tab.mistakes_list.count()
    assert mistakes > 0

    # a run the trainer refuses leaves the last results on screen
    tab.optimizer_combo.setCurrentIndex(tab.optimizer_combo.findData("nesterov"))
    tab.momentum_spin.setValue(0.0)
    tab.start_training()
    qtbot.waitUntil(lambda: not tab.is_training(), timeout=60_000)
    assert "momentum" in app_state.last_error[1]
    assert tab.last_result is not None and tab.result_label.text() == shown

    # loading the same data again keeps the results and the chosen cell's images
    tab.load_data()
    qtbot.waitUntil(lambda: not tab.data_runner.is_running(), timeout=60_000)
    assert tab.last_result is not None and tab.mistakes_list.count() == mistakes

    # a path typed but not loaded is not trained on in place of the data shown
    other = write_image_folder(tmp_path / "other", n_train=4, n_test=2, classes=("cat", "dog"))
    tab.path_edit.setText(str(other))
    app_state.last_error = None
    tab.start_training()
    assert not tab.is_training()
    assert "Press Load to use the new one" in app_state.last_error[1]


def test_a_nan_loss_from_torchrun_reaches_the_live_view_as_nan(tab):
    import math

    from gui.torchrun import _with_nans

    update = _with_nans({"phase": "train", "loss": None, "message": None, "history": [
        {"epoch": 1, "train_loss": None, "train_acc": 0.5}]})
    assert math.isnan(update["loss"]) and update["message"] is None
    assert math.isnan(update["history"][0]["train_loss"])
    step = {"phase": "train", "epoch": 1, "epochs": 2, "step": 1, "steps_per_epoch": 4,
            "global_step": 1, "total_steps": 8, "images_per_s": 100.0, "eta_s": 1.0,
            "epoch_progress": 0.25, "lr": 0.1}
    tab._on_train_progress([{**step, "loss": 2.0}, _with_nans({**step, "loss": None})])
    assert "loss nan" in tab.speed_label.text()


def train_net(qtbot, tab, checkpoint, epochs=1):
    """A small run of the book's Net on the loaded data, waited for."""
    tab.model_combo.setCurrentIndex(tab.model_combo.findData("net"))
    tab.epochs_spin.setValue(epochs)
    tab.batch_spin.setValue(8)
    tab.precision_combo.setCurrentIndex(tab.precision_combo.findData("fp32"))
    tab.checkpoint_edit.setText(str(checkpoint))
    tab.start_training()
    qtbot.waitUntil(lambda: not tab.is_training(), timeout=60_000)


def test_resuming_a_run_stopped_in_its_final_evaluation_evaluates_it(
        qtbot, tab, tiny_data, tmp_path, monkeypatch, app_state):
    import engine.cifar.trainer as trainer
    from engine.cifar.checkpoint import describe, load_checkpoint

    load(qtbot, tab, tiny_data)
    evaluate = trainer._final_evaluation
    # what the final evaluation returns when Stop comes during it
    monkeypatch.setattr(trainer, "_final_evaluation", lambda *args, **kwargs: None)
    checkpoint = tmp_path / "run.pt"
    train_net(qtbot, tab, checkpoint, epochs=2)
    assert "Stopped during the final evaluation" in tab.result_label.text()
    assert tab.last_result is None

    monkeypatch.setattr(trainer, "_final_evaluation", evaluate)
    tab.resume_from(str(checkpoint))  # as the message says: to evaluate it, not to train on
    assert tab.epochs_spin.value() == 2
    qtbot.waitUntil(lambda: not tab.is_training(), timeout=60_000)
    assert app_state.last_error is None
    assert tab.last_result["status"] == "completed" and tab.last_result["epochs"] == 2
    assert describe(load_checkpoint(checkpoint))["epoch"] == 2
    assert len(tab.confusion_plot.count_labels) == 3 * 3  # the matrix is on screen

    # with Epochs raised, a finished run trains on
    tab.epochs_spin.setValue(3)
    tab.resume_from(str(checkpoint))
    qtbot.waitUntil(lambda: not tab.is_training(), timeout=60_000)
    assert tab.last_result["epochs"] == 3


def synthetic_result(class_names, per_class=1000):
    """A completed run's result as the trainer returns it, with made-up counts."""
    k = len(class_names)
    confusion = [[(7 * i + 3 * j) % 60 if i != j else 0 for j in range(k)] for i in range(k)]
    for i, row in enumerate(confusion):
        row[i] = per_class - sum(row)
    return {"status": "completed", "class_names": list(class_names), "confusion": confusion,
            "misclassified": {f"{i},{j}": list(range(confusion[i][j]))
                              for i in range(k) for j in range(k) if i != j},
            "per_class_acc": {name: confusion[i][i] / per_class
                              for i, name in enumerate(class_names)},
            "test_acc": sum(confusion[i][i] for i in range(k)) / (k * per_class),
            "epochs": 1, "train_time_s": 1.0, "config": {"data": "/elsewhere", "epochs": 1},
            "history": [{"epoch": 1, "train_loss": 1.0, "train_acc": 0.5, "test_acc": 0.5}],
            "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")


def test_the_curves_titles_and_labels_are_whole_at_the_smallest_size(qtbot, tab):
    tab.resize(1, 1)  # as small as the tab's layout allows
    qtbot.waitUntil(lambda: tab.width() < 800, timeout=5000)
    qtbot.wait(50)  # the plots' own layouts
    cut = {name: text_cut_off(view) for name, view in
           (("loss", tab.curves.loss_plot), ("accuracy", tab.curves.acc_plot))}
    assert cut == {"loss": [], "accuracy": []}


def test_the_confusion_matrix_fits_a_small_window(qtbot, open_tab):
    from PySide6.QtGui import QFontMetricsF

    from gui.tabs.cifar import CifarTab

    tab = open_tab(CifarTab, size=(900, 620))  # a small window
    tab._on_train_returned(synthetic_result(CIFAR10_CLASSES))
    view_box = tab.confusion_plot.getViewBox()
    heatmap = view_box.mapRectToScene(view_box.boundingRect())
    assert heatmap.right() <= tab.confusion_plot.viewport().width()  # the last column shows
    cell = tab.confusion_cell_pixels()
    for label in tab.confusion_plot.count_labels:  # counts of up to four digits, inside their cells
        if label.isVisible():
            assert QFontMetricsF(label.font()).horizontalAdvance(
                label.toPlainText()) < cell
    metrics = QFontMetricsF(tab.confusion_plot.font())
    (columns,) = tab.confusion_plot.getAxis("bottom")._tickLevels
    assert all(metrics.horizontalAdvance(name) < cell for _, name in columns)
    assert [name for _, name in columns] == [n[:len(columns[0][1])] for n in CIFAR10_CLASSES]


def test_the_confusion_counts_are_shown_where_cells_have_room(qtbot, open_tab):
    from PySide6.QtGui import QFontMetricsF

    from gui.tabs.cifar import CifarTab

    tab = open_tab(CifarTab, size=(1016, 650))  # the tab of a 1024×700 window
    tab._on_train_returned(synthetic_result(CIFAR10_CLASSES))
    # a long line, wrapped: it does not widen its column, squeezing the heatmap's
    assert "load the dataset" in tab.mistakes_label.text()
    assert tab.mistakes_label.minimumSizeHint().width() < tab.confusion_plot.width()
    cell = tab.confusion_cell_pixels()
    for label in tab.confusion_plot.count_labels:  # smaller type, in their cells
        assert label.isVisible()
        assert QFontMetricsF(label.font()).horizontalAdvance(label.toPlainText()) < cell

    tab.resize(1300, 850)
    tab._on_train_returned(synthetic_result(("airplane", "bird")))
    assert all(label.isVisible() for label in tab.confusion_plot.count_labels)
    assert [name for _, name in tab.confusion_plot.getAxis("bottom")._tickLevels[0]] == [
        "airplane", "bird"]


def test_the_data_browser_packs_its_rows_at_the_top(qtbot, tab, tiny_data):
    load(qtbot, tab, tiny_data)
    tab.pages.setCurrentIndex(1)
    grid = tab.sample_grid.grid_layout
    rows = sorted({grid.cellRect(row, 1).top() for row in range(len(tab.data_info["class_names"]))})
    thumbnail = grid.itemAtPosition(0, 1).widget().pixmap().height()
    # one thumbnail and the spacing apart, not spread over the page's height
    pitch = [below - above for above, below in zip(rows, rows[1:], strict=False)]
    assert pitch and max(pitch) <= thumbnail + 2 * grid.spacing()


def test_the_data_box_and_a_run_show_the_mean_and_std_it_normalizes_with(
        qtbot, tab, tiny_data, tmp_path):
    from gui.tabs.cifar import CifarTab

    load(qtbot, tab, tiny_data)
    shown_for_all = CifarTab._fmt(tab.data_info["mean"])
    assert shown_for_all in tab.stats_label.text()
    tab.set_classes(["cat", "dog"])  # the data box follows the classes chosen
    box = tab.stats_label.text()
    train_net(qtbot, tab, tmp_path / "run.pt")
    used = tab.last_result["mean"]  # of the cats' and dogs' training images
    assert CifarTab._fmt(used) != shown_for_all
    normalized = f"{CifarTab._fmt(used)}  std {CifarTab._fmt(tab.last_result['std'])}"
    assert f"Mean {normalized} of their training images" in box
    assert tab.chosen_mean_std() == (used, tab.last_result["std"])
    assert (f"mean {CifarTab._fmt(used)} std {CifarTab._fmt(tab.last_result['std'])}"
            in tab.result_label.text())
    tab.set_classes(None)
    assert shown_for_all in tab.stats_label.text()


def test_what_the_trainer_says_about_a_resume_stays_in_view(qtbot, tab, tiny_data, tmp_path):
    load(qtbot, tab, tiny_data)
    tab.model_combo.setCurrentIndex(tab.model_combo.findData("net"))
    tab.schedule_combo.setCurrentIndex(tab.schedule_combo.findData("warmup_linear"))
    checkpoint = tmp_path / "run.pt"
    train_net(qtbot, tab, checkpoint)
    tab.resume_from(str(checkpoint), epochs=500)  # longer: the schedule is stretched
    qtbot.waitUntil(lambda: not tab._results_pending_clear, timeout=60_000)  # it has started
    assert "Resume: the learning-rate schedule was planned for 1" in tab.result_label.text()
    tab.stop_training()
    qtbot.waitUntil(lambda: not tab.is_training(), timeout=60_000)


def test_enter_in_the_data_field_loads_it(qtbot, tab, tiny_data):
    qtbot.keyClicks(tab.path_edit, str(tiny_data))
    qtbot.keyClick(tab.path_edit, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: not tab.data_runner.is_running(), timeout=60_000)
    assert tab.data_info is not None and tab.class_list.count() == 3


def test_a_dropped_dataset_loads_and_a_dropped_checkpoint_goes_to_its_field(
        qtbot, tab, tiny_data, trained_checkpoint, tmp_path, app_state):
    from engine.cifar.checkpoint import export_model
    from tests.engine.cifar_helpers import write_image_archive

    statuses = []
    app_state.status_message.connect(lambda text, _ms: statuses.append(text))
    archive = write_image_archive(tiny_data, tmp_path / "tiny.tgz")
    assert tab.take_dropped_paths([str(archive)])
    assert tab.path_edit.text() == str(archive) and tab.data_runner.is_running()
    # while it loads, a drop of the tab's own is refused and said; others go to Classify
    assert tab.take_dropped_paths([str(tiny_data)])
    assert statuses[-1] == "Not now: data is loading. Drop it again when that has ended."
    assert tab.path_edit.text() == str(archive)
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"x")
    assert not tab.take_dropped_paths([str(photo)])
    qtbot.waitUntil(lambda: not tab.data_runner.is_running(), timeout=60_000)
    assert tab.data_info is not None and tab.class_list.count() == 3

    assert tab.take_dropped_paths([str(trained_checkpoint)])
    assert tab.checkpoint_edit.text() == str(trained_checkpoint) and not tab.is_training()
    assert tab.export_button.isEnabled()
    assert statuses[-1].startswith(f"Checkpoint {trained_checkpoint}: Export… and Use in ")
    exported = tmp_path / "model.pt"  # an exported model is Classify's, not a checkpoint
    export_model(trained_checkpoint, exported)
    assert not tab.take_dropped_paths([str(exported)])
    assert not tab.take_dropped_paths([str(tiny_data), str(photo)])
    assert tab.take_dropped_paths([str(tiny_data), str(archive)])  # taken, neither loaded
    assert statuses[-1].startswith("Drop one dataset") and not tab.data_runner.is_running()
    assert tab.checkpoint_edit.text() == str(trained_checkpoint)


def test_a_failed_load_says_the_data_shown_is_still_the_last(qtbot, tab, tiny_data, tmp_path,
                                                             app_state):
    load(qtbot, tab, tiny_data)
    empty = tmp_path / "empty"
    empty.mkdir()
    tab.path_edit.setText(str(empty))
    tab.load_data()
    qtbot.waitUntil(lambda: not tab.data_runner.is_running(), timeout=30_000)
    assert "no CIFAR data found" in app_state.last_error[1]
    assert tab.data_progress.format() == f"not loaded; {tiny_data.name} is still shown"
    assert tab.class_list.count() == 3


def test_all_gpus_with_none_left_says_so_instead_of_starting_torchrun(
        qtbot, tab, tiny_data, app_state, monkeypatch):
    import engine.devices
    from gui.app_state import ALL_GPUS

    load(qtbot, tab, tiny_data)
    app_state.set_device(ALL_GPUS)  # chosen while there were GPUs; now none is usable
    monkeypatch.setattr(engine.devices, "list_devices", lambda: [])
    tab.start_training()
    assert not tab.is_training()
    assert "No usable GPU" in app_state.last_error[1]


# a step in the middle of epoch 3, as the trainer reports it
MID_EPOCH_STEP = {"phase": "train", "epoch": 3, "epochs": 6, "step": 18, "steps_per_epoch": 37,
                  "global_step": 92, "total_steps": 222, "images_per_s": 100.0, "eta_s": 1.0,
                  "epoch_progress": 18 / 37, "lr": 0.1, "loss": 1.0}


def test_a_stop_within_an_epoch_says_its_steps_are_kept(tab):
    # the trainer says where its checkpoint stands: no step of this run need have been shown
    # (a resumed mid-epoch run stopped before its first report)
    tab._on_train_returned({"status": "stopped", "epochs": 2, "checkpoint": "/runs/a.pt",
                            "saved_at": [2, 18], "config": {"epochs": 6}})
    assert tab.result_label.text() == ("Stopped during epoch 3 (after 2 full epochs); checkpoint "
                                       "kept in /runs/a.pt: Resume… goes on from there.")
    # a step shown (epoch 5, step 18) is not what the file holds (the end of epoch 3)
    tab._on_train_progress([{**MID_EPOCH_STEP, "epoch": 5, "global_step": 166}])
    tab._on_train_returned({"status": "stopped", "epochs": 3, "checkpoint": "/runs/a.pt",
                            "saved_at": [3, 0], "config": {"epochs": 6}})
    assert tab.result_label.text().startswith("Stopped after 3 full epochs; checkpoint kept")


def test_a_finished_run_whose_checkpoint_was_not_written_shows_its_result_and_warns(tab):
    warning = ("the trained model was not saved (cannot write the checkpoint 'c.pt': No space "
               "left on device); no checkpoint of this run was written")
    tab._on_train_returned({**synthetic_result(("cat", "dog")), "warning": warning})
    assert tab.result_label.text().startswith("Test accuracy")
    assert tab.result_label.text().endswith(f"\nWarning: {warning}.")
    tab._on_train_returned({"status": "stopped", "epochs": 1, "checkpoint": None,
                            "warning": warning, "config": {"epochs": 1}})
    assert tab.result_label.text() == f"Stopped during the final evaluation; {warning}."


def test_export_is_off_for_a_checkpoint_that_missed_its_runs_last_write(tab, tmp_path):
    older = tmp_path / "run.pt"
    older.write_bytes(b"the epoch before")  # what the file still holds
    tab.checkpoint_edit.setText(str(older))
    tab._on_train_returned({**synthetic_result(("cat", "dog")), "checkpoint": None,
                            "warning": "the trained model was not saved (disk full)"})
    tab._update_buttons()
    assert not tab.export_button.isEnabled() and not tab.classify_button.isEnabled()
    assert "holds an older one" in tab.export_button.toolTip()
    other = tmp_path / "other.pt"
    other.write_bytes(b"x")
    tab.checkpoint_edit.setText(str(other))  # another file: its own model
    tab._update_buttons()
    assert tab.export_button.isEnabled() and tab.export_button.toolTip() == ""
    # the trained model was written; only the test accuracy could not be added
    tab._on_train_returned({**synthetic_result(("cat", "dog")), "checkpoint": str(other),
                            "warning": "the test accuracy was not added to the checkpoint"})
    tab._update_buttons()
    assert tab.export_button.isEnabled()


def test_a_new_run_does_not_show_the_last_runs_epoch(tab):
    tab._on_train_progress([MID_EPOCH_STEP])  # the last run's last step
    assert tab.epoch_progress.format() == "epoch 3/6 — step 18/37"
    tab._on_train_progress([{"phase": "start", "model": "net", "params": {"trainable": 10},
                             "device": "cpu", "world_size": 1, "precision": "float32",
                             "epochs": 500, "start_epoch": 0, "steps_per_epoch": 9,
                             "batch_size": 4, "history": []}])
    assert tab.epoch_progress.format() == "epoch 1/500" and tab.epoch_progress.value() == 0


def test_a_cache_folder_that_cannot_be_written_is_said_in_the_data_box(
        qtbot, tab, tiny_data, tmp_path, monkeypatch):
    not_a_folder = tmp_path / "cache-file"
    not_a_folder.write_text("")
    monkeypatch.setenv("TORCHDESK_CACHE_DIR", str(not_a_folder))
    load(qtbot, tab, tiny_data)
    assert tab.data_note_label.isVisible()  # stays after the load, beside the data it is about
    note = tab.data_note_label.text()
    assert note.startswith("Cannot keep the decoded images") and str(not_a_folder) in note
    assert "TORCHDESK_CACHE_DIR" in note and tab.data_progress.format() == "loaded"

    monkeypatch.setenv("TORCHDESK_CACHE_DIR", str(tmp_path / "cache"))  # writable again
    tab.load_data()
    qtbot.waitUntil(lambda: not tab.data_runner.is_running(), timeout=60_000)
    assert tab.data_progress.format() == "loaded"
    assert not tab.data_note_label.isVisible() and tab.data_note_label.text() == ""


@pytest.fixture
def trained_checkpoint(tmp_path):
    """A checkpoint of one epoch of the book's Net on a few synthetic images."""
    from engine.cifar.trainer import train_job
    from engine.jobs import JobContext
    from tests.engine.cifar_helpers import synthetic_dataset

    checkpoint = tmp_path / "trained.pt"
    train_job({"dataset": synthetic_dataset(n_train=24, n_test=12), "model": "net", "epochs": 1,
               "batch_size": 12, "precision": "fp32", "checkpoint": checkpoint},
              JobContext("cpu"))
    return checkpoint


class SaveDialog:
    """Stands in for QFileDialog.getSaveFileName: answers with a name and a file type."""

    def __init__(self, monkeypatch, path, file_type="TorchScript (*.pt)"):
        from gui.tabs import cifar

        self.answer, self.options = (str(path), file_type), []
        monkeypatch.setattr(cifar.QFileDialog, "getSaveFileName", self)

    def __call__(self, parent, caption, directory, filters, selected="", options=None):
        self.options.append(options)
        return self.answer


class ReplaceQuestion:
    """Stands in for QMessageBox.question: records what is asked, answers ``yes``."""

    def __init__(self, monkeypatch, yes):
        from gui.tabs import cifar

        self.yes, self.asked = yes, []
        monkeypatch.setattr(cifar.QMessageBox, "question", self)

    def __call__(self, parent, title, text, buttons, default):
        from PySide6.QtWidgets import QMessageBox

        self.asked.append(text)
        return QMessageBox.StandardButton.Yes if self.yes else QMessageBox.StandardButton.No


def export_and_wait(qtbot, tab):
    """Click Export…; the export runs on the worker with the controls busy until it ends."""
    with qtbot.waitSignal(tab.export_runner.finished, timeout=60_000):
        qtbot.mouseClick(tab.export_button, Qt.MouseButton.LeftButton)
        assert tab.is_exporting() and tab.export_button.text() == "Exporting…"
        for widget in (tab.export_button, tab.classify_button, tab.train_button,
                       tab.resume_button, tab.checkpoint_edit):
            assert not widget.isEnabled()
    assert tab.export_button.text() == "Export…"
    for widget in (tab.export_button, tab.classify_button, tab.train_button, tab.resume_button,
                   tab.checkpoint_edit):
        assert widget.isEnabled()


def test_export_runs_on_the_worker_and_gives_the_controls_back(
        qtbot, tab, trained_checkpoint, tmp_path, monkeypatch, app_state):
    statuses = []
    app_state.status_message.connect(lambda text, _ms: statuses.append(text))
    tab.checkpoint_edit.setText(str(trained_checkpoint))
    dialog = SaveDialog(monkeypatch, tmp_path / "model")
    export_and_wait(qtbot, tab)
    assert (tmp_path / "model.pt").is_file() and app_state.last_error is None
    assert statuses[-1] == f"Exported torchscript model to {tmp_path / 'model.pt'}"

    notes = tmp_path / "notes.pt"  # not an export: refused, and said so
    notes.write_text("my notes")
    dialog.answer = (str(notes), "TorchScript (*.pt)")
    ReplaceQuestion(monkeypatch, yes=True)
    export_and_wait(qtbot, tab)
    assert app_state.last_error[0] == "Export" and "is not a TorchDesk export" in \
        app_state.last_error[1]
    assert notes.read_text() == "my notes"


def test_export_asks_before_replacing_the_files_it_writes_under_their_suffixed_names(
        qtbot, tab, trained_checkpoint, tmp_path, monkeypatch, app_state):
    from PySide6.QtWidgets import QFileDialog

    from engine.cifar.checkpoint import export_model

    tab.checkpoint_edit.setText(str(trained_checkpoint))
    earlier = tmp_path / "model.pt"
    export_model(trained_checkpoint, earlier)
    earlier_file = earlier.stat().st_ino  # a new export is a new file put in its place
    dialog = SaveDialog(monkeypatch, tmp_path / "model")  # typed without its suffix
    question = ReplaceQuestion(monkeypatch, yes=False)
    qtbot.mouseClick(tab.export_button, Qt.MouseButton.LeftButton)
    # the dialog does not ask about 'model'; the tab asks about 'model.pt'
    assert dialog.options == [QFileDialog.Option.DontConfirmOverwrite]
    assert question.asked == [f"'model.pt' already exists in {tmp_path}. Replace it?"]
    assert not tab.is_exporting() and earlier.stat().st_ino == earlier_file

    # ONNX writes model.json beside model.onnx: that is asked about too
    (tmp_path / "model.json").write_text("{}")
    dialog.answer = (str(tmp_path / "model"), "ONNX (*.onnx)")
    qtbot.mouseClick(tab.export_button, Qt.MouseButton.LeftButton)
    assert question.asked[-1] == f"'model.json' already exists in {tmp_path}. Replace it?"
    (tmp_path / "model.onnx").write_bytes(b"\x08")
    qtbot.mouseClick(tab.export_button, Qt.MouseButton.LeftButton)
    assert question.asked[-1] == (f"'model.onnx' and 'model.json' already exist in {tmp_path}. "
                                  "Replace them?")
    assert not tab.is_exporting()

    question.yes = True  # replacing the earlier export, once asked
    dialog.answer = (str(tmp_path / "model"), "TorchScript (*.pt)")
    export_and_wait(qtbot, tab)
    assert app_state.last_error is None and earlier.stat().st_ino != earlier_file


def test_export_through_a_link_asks_about_the_files_it_writes_there(
        qtbot, tab, tmp_path, monkeypatch):
    checkpoint = tmp_path / "run.pt"  # not read: the export is not started
    checkpoint.write_bytes(b"x")
    tab.checkpoint_edit.setText(str(checkpoint))
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "real.json").write_text("{}")
    (tmp_path / "linked.onnx").symlink_to(tmp_path / "elsewhere" / "real.onnx")
    SaveDialog(monkeypatch, tmp_path / "linked.onnx", "ONNX (*.onnx)")
    question = ReplaceQuestion(monkeypatch, yes=False)
    qtbot.mouseClick(tab.export_button, Qt.MouseButton.LeftButton)
    # the export writes through the link: real.onnx and real.json (linked.json is untouched)
    assert question.asked == [f"'real.json' already exists in {tmp_path / 'elsewhere'}. "
                              "Replace it?"]
    assert not tab.is_exporting()


def test_use_in_classify_exports_on_the_worker_then_hands_the_model_over(
        qtbot, tab, trained_checkpoint, app_state):
    tab.checkpoint_edit.setText(str(trained_checkpoint))
    with qtbot.waitSignal(app_state.use_in_classify, timeout=60_000) as handed_over:
        qtbot.mouseClick(tab.classify_button, Qt.MouseButton.LeftButton)
        assert tab.is_exporting() and not tab.classify_button.isEnabled()
    assert handed_over.args[0]["path"] == str(trained_checkpoint.with_suffix(".torchscript.pt"))
    qtbot.waitUntil(lambda: tab.classify_button.isEnabled(), timeout=10_000)

    # the user's own files in the way (a folder, a file that is no export): kept, and the
    # model goes to the next free name, as the button asks no file name to choose another
    trained_checkpoint.with_suffix(".torchscript.pt").unlink()
    trained_checkpoint.with_suffix(".torchscript.pt").mkdir()
    trained_checkpoint.with_suffix(".torchscript-2.pt").write_text("my notes")
    with qtbot.waitSignal(app_state.use_in_classify, timeout=60_000) as handed_over:
        qtbot.mouseClick(tab.classify_button, Qt.MouseButton.LeftButton)
    assert handed_over.args[0]["path"] == str(trained_checkpoint.with_suffix(".torchscript-3.pt"))
    assert trained_checkpoint.with_suffix(".torchscript-2.pt").read_text() == "my notes"
    qtbot.waitUntil(lambda: tab.classify_button.isEnabled(), timeout=10_000)
    with qtbot.waitSignal(app_state.use_in_classify, timeout=60_000) as again:  # reused
        qtbot.mouseClick(tab.classify_button, Qt.MouseButton.LeftButton)
    assert again.args[0]["path"] == str(trained_checkpoint.with_suffix(".torchscript-3.pt"))


def test_a_bad_value_in_a_resumed_checkpoint_gets_advice_a_tab_user_can_follow(
        qtbot, tab, trained_checkpoint, app_state):
    from engine.cifar import checkpoint as ckpt

    blob = ckpt.load_checkpoint(trained_checkpoint)
    blob["config"]["lr"] = -1.0  # edited by hand: Resume passes no learning rate to replace it
    ckpt.save_checkpoint(trained_checkpoint, blob)
    tab.resume_from(str(trained_checkpoint))
    qtbot.waitUntil(lambda: not tab.is_training(), timeout=60_000)
    assert app_state.last_error == (
        "CIFAR-10 training", "learning rate must be a number above 0 and at most 100, not -1 "
        "(the checkpoint's value, which Resume keeps: start a new run with Train to choose "
        "another)")


def test_a_resume_under_all_gpus_names_a_refused_setting_as_the_tab_does(
        qtbot, tab, trained_checkpoint, app_state, monkeypatch):
    """torchrun's --progress-json says which setting it refused; the tab names it (two CPU
    ranks stand in for the GPUs)."""
    from engine.cifar import checkpoint as ckpt
    from gui.app_state import ALL_GPUS

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    blob = ckpt.load_checkpoint(trained_checkpoint)
    blob["config"]["lr"] = -1.0
    ckpt.save_checkpoint(trained_checkpoint, blob)
    app_state.set_device(ALL_GPUS)
    monkeypatch.setattr(tab, "_usable_gpus", lambda: [0, 1])
    start = tab.torchrun.start
    monkeypatch.setattr(tab.torchrun, "start",
                        lambda config, gpus: start({**config, "device": "cpu"}, gpus))
    with qtbot.waitSignal(tab.torchrun.finished, timeout=180_000):
        tab.resume_from(str(trained_checkpoint))
        assert tab.torchrun.is_running()
    assert app_state.last_error == (
        "CIFAR-10 training", "learning rate must be a number above 0 and at most 100, not -1 "
        "(the checkpoint's value, which Resume keeps: start a new run with Train to choose "
        "another)")


def test_settings_errors_name_the_tabs_fields(qtbot, tab, tiny_data, app_state, monkeypatch):
    from gui.app_state import ALL_GPUS

    tab.path_edit.setText(str(tiny_data))  # the settings are checked before the data loads
    tab.model_combo.setCurrentIndex(tab.model_combo.findData("net"))
    tab.optimizer_combo.setCurrentIndex(tab.optimizer_combo.findData("nesterov"))
    tab.momentum_spin.setValue(0.0)
    tab.start_training()
    qtbot.waitUntil(lambda: not tab.is_training(), timeout=60_000)
    assert app_state.last_error == ("CIFAR-10 training",
                                    "Nesterov SGD needs momentum above 0 (and at most 0.9999)")
    tab.momentum_spin.setValue(0.9)
    tab.start_training(overrides={"batch_size": 0})
    qtbot.waitUntil(lambda: not tab.is_training(), timeout=60_000)
    assert app_state.last_error[1] == "batch size must be a whole number of at least 1, not 0"

    # under torchrun they are checked before it starts (it would name them --batch-size)
    app_state.set_device(ALL_GPUS)
    monkeypatch.setattr(tab, "_usable_gpus", lambda: [0])
    started = []
    monkeypatch.setattr(tab.torchrun, "start", lambda *args: started.append(args))
    app_state.last_error = None
    tab.max_train_spin.setValue(100)
    tab.start_training(overrides={"max_train": -1})
    assert started == [] and not tab.is_training()
    assert app_state.last_error[1] == "train images must be a whole number of at least 1, not -1"


def test_all_gpus_refuses_a_setting_torchrun_cannot_carry_and_is_not_left_training(
        tab, tiny_data, app_state, monkeypatch):
    from gui.app_state import ALL_GPUS

    tab.path_edit.setText(str(tiny_data))
    app_state.set_device(ALL_GPUS)
    monkeypatch.setattr(tab, "_usable_gpus", lambda: [0])
    monkeypatch.setattr(tab, "selected_classes", lambda: ["cat,dog", "ship"])  # a folder's name
    tab.start_training()
    assert not tab.is_training() and tab.train_button.isEnabled()
    assert app_state.last_error[0] == "CIFAR-10 training"
    assert "class name with a comma" in app_state.last_error[1]


def evaluating(done, total=10_000, eta_s=6.2, **about):
    return {"phase": "evaluate", "done": done, "total": total, "eta_s": eta_s, "epoch": 6,
            "between_epochs": False, **about}


def test_the_evaluations_progress_shows_in_the_bar_and_the_label(tab):
    # the last step and the evaluation's start in one batch: the evaluation is what goes on
    tab._on_train_progress([MID_EPOCH_STEP, evaluating(0, eta_s=None)])
    assert tab.speed_label.text() == "0 / 10,000 test images"
    assert (tab.epoch_progress.value(), tab.epoch_progress.maximum()) == (0, 10_000)
    tab._on_train_progress([evaluating(4000)])
    assert tab.speed_label.text() == "4,000 / 10,000 test images, ~6 s left"
    assert tab.epoch_progress.value() == 4000
    assert tab.epoch_progress.text() == "final evaluation — 40%"
    tab._on_train_progress([evaluating(10_000, eta_s=0.0)])
    assert tab.speed_label.text() == "10,000 / 10,000 test images"
    assert tab.epoch_progress.value() == tab.epoch_progress.maximum() == 10_000
    # one between epochs says which epoch it tests; training then takes the bar back
    tab._on_train_progress([evaluating(2000, eta_s=75.0, epoch=3, between_epochs=True)])
    assert tab.speed_label.text() == "2,000 / 10,000 test images, ~1:15 left"
    assert tab.epoch_progress.text() == "epoch 3 — test set 20%"
    tab._on_train_progress([evaluating(10_000, eta_s=0.0, epoch=3, between_epochs=True),
                            MID_EPOCH_STEP])
    assert "images/s" in tab.speed_label.text() and tab.epoch_progress.maximum() == 1000
    assert tab.epoch_progress.format() == "epoch 3/6 — step 18/37"


def test_after_stop_the_label_says_stopping_whatever_reports_were_on_their_way(tab, monkeypatch):
    monkeypatch.setattr(tab, "is_training", lambda: True)
    tab.stop_training()
    tab._on_train_progress([evaluating(4000)])
    assert tab.speed_label.text() == "stopping…"
    assert tab.epoch_progress.value() == 4000


def test_a_runs_evaluations_fill_the_bar_over_the_test_images(qtbot, tab, tiny_data, tmp_path):
    load(qtbot, tab, tiny_data)
    # the label and bar after each batch whose last step or test report is a test one (a batch
    # that goes on into the next epoch's steps, as a fast machine delivers it, shows those)
    shown = []
    batches = []

    def ends_in_a_test(batch) -> bool:
        phases = [u.get("phase") for u in batch if u.get("phase") in ("train", "evaluate")]
        return bool(phases) and phases[-1] == "evaluate"

    tab.train_runner.progress.connect(batches.append)
    tab.train_runner.progress.connect(lambda batch: shown.append(
        (tab.speed_label.text(), tab.epoch_progress.text(), tab.epoch_progress.maximum()))
        if ends_in_a_test(batch) else None)
    train_net(qtbot, tab, tmp_path / "run.pt", epochs=2)  # tested after epoch 1, then at the end
    test_images = tab.last_result["test_images"]
    assert (tab.epoch_progress.value(), tab.epoch_progress.maximum()) == (test_images,) * 2
    assert (f"{test_images} / {test_images} test images", "final evaluation — 100%",
            test_images) in shown
    # the test after epoch 1 was reported (its bar text may be replaced within the same batch)
    assert any(u.get("between_epochs") and u.get("epoch") == 1
               for batch in batches for u in batch if u.get("phase") == "evaluate")
    assert all(maximum == test_images for _, _, maximum in shown)
    assert tab.speed_label.text().startswith("completed · test acc")


def test_torchruns_evaluation_reports_reach_the_tab_whole(qtbot, tab, monkeypatch):
    """The progress lines of "All GPUs" runs, parsed by TorchrunProcess (here from a child
    that prints what a rank 0 prints), show as a single-device run's do."""
    from engine.cifar.cli import PROGRESS_PREFIX
    from gui.torchrun import TorchrunProcess

    lines = [evaluating(0, total=12, eta_s=None), evaluating(8, total=12, eta_s=1.0),
             evaluating(12, total=12, eta_s=0.0)]
    script = ("import json, sys\n"
              f"for update in {lines!r}:\n"
              f"    sys.stderr.write({PROGRESS_PREFIX!r} + json.dumps(update) + '\\n')\n"
              "print(json.dumps({'status': 'stopped'}))\n")
    monkeypatch.setattr(TorchrunProcess, "command", staticmethod(lambda config, n: ["-c", script]))
    batches = []
    tab.torchrun.progress.connect(batches.append)
    shown = []
    tab.torchrun.progress.connect(lambda batch: shown.append(tab.speed_label.text()))
    with qtbot.waitSignal(tab.torchrun.finished, timeout=60_000):
        tab.torchrun.start({}, gpus=[0])
    updates = [u for batch in batches for u in batch]
    assert [(u["done"], u["total"]) for u in updates] == [(0, 12), (8, 12), (12, 12)]
    # no estimate yet: JSON's null comes back as NaN, and is said as no estimate
    assert not any("nan" in label for label in shown)
    tab._on_train_progress(updates[:1])
    assert tab.speed_label.text() == "0 / 12 test images"
    tab._on_train_progress(updates[1:])
    assert tab.epoch_progress.value() == tab.epoch_progress.maximum() == 12



def _resume_without_training(tab, monkeypatch, path) -> list[dict]:
    """Resume ``path``; the configs the tab would train with (nothing trains)."""
    started: list[dict] = []
    monkeypatch.setattr(tab, "start_training",
                        lambda resume=None, **_: started.append(
                            {**tab.training_config(), "resume": resume}))
    tab.resume_from(str(path))
    return started


def test_a_resumed_checkpoints_recipe_is_shown_as_it_is(qtbot, tab, trained_checkpoint,
                                                        monkeypatch):
    """A run planned for 2000 epochs, with values beyond the old boxes' ranges: shown and
    resumed as the checkpoint has them, never cut to the boxes' ends."""
    from engine.cifar import checkpoint as ckpt

    blob = ckpt.load_checkpoint(trained_checkpoint)
    blob["config"].update(epochs=2000, lr=20.0, weight_decay=2.0, label_smoothing=0.9,
                          momentum=0.9995, batch_size=10_000)
    ckpt.save_checkpoint(trained_checkpoint, blob)
    [config] = _resume_without_training(tab, monkeypatch, trained_checkpoint)
    assert {key: config[key] for key in ("epochs", "lr", "weight_decay", "label_smoothing",
                                         "momentum", "batch_size")} == pytest.approx(
        {"epochs": 2000, "lr": 20.0, "weight_decay": 2.0, "label_smoothing": 0.9,
         "momentum": 0.9995, "batch_size": 10_000})


def test_a_checkpoint_that_cannot_be_written_is_resumed_into_the_checkpoint_box_file(
        qtbot, tab, trained_checkpoint, monkeypatch, app_state, tmp_path):
    import os

    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, *a, **k: False if str(path).startswith(
        str(trained_checkpoint.parent)) and mode == os.W_OK else real_access(path, mode, *a, **k))
    # the box names the same file: nothing starts, and the message says what to do
    tab.checkpoint_edit.setText(str(trained_checkpoint))
    assert _resume_without_training(tab, monkeypatch, trained_checkpoint) == []
    assert app_state.last_error[0] == "Resume" and \
        "enter another file in the Checkpoint box" in app_state.last_error[1]
    # the box names another file: the run goes on there, the box is left as it is
    elsewhere = str(tmp_path / "writable" / "run.pt")
    tab.checkpoint_edit.setText(elsewhere)
    [config] = _resume_without_training(tab, monkeypatch, trained_checkpoint)
    assert config["checkpoint"] == elsewhere and config["resume"] == str(trained_checkpoint)
    assert tab.checkpoint_edit.text() == elsewhere


def test_a_checkpoint_box_with_a_tilde_finds_the_trained_file(qtbot, tab, trained_checkpoint,
                                                              monkeypatch):
    monkeypatch.setenv("HOME", str(trained_checkpoint.parent))
    tab.checkpoint_edit.setText(f"~/{trained_checkpoint.name}")
    tab._update_buttons()
    assert tab.export_button.isEnabled() and tab.classify_button.isEnabled()
    assert tab.training_config()["checkpoint"] == str(trained_checkpoint)


def test_a_folder_of_photos_dropped_here_goes_to_classify_and_a_checkpoint_by_any_name_stays(
        tab, trained_checkpoint, tmp_path):
    import shutil

    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (8, 8)).save(photos / "cat.jpg")
    dataset = tmp_path / "mydata"
    (dataset / "train" / "cat").mkdir(parents=True)
    (dataset / "test" / "cat").mkdir(parents=True)
    half = tmp_path / "half"  # a train/ without its test/: the loader says what is missing
    (half / "train").mkdir(parents=True)
    parent = tmp_path / "datasets"  # the dataset one level down, as the loader finds it
    shutil.copytree(dataset, parent / "cifar-jpeg")
    renamed = tmp_path / "run.ckpt"
    shutil.copy(trained_checkpoint, renamed)
    assert not tab.take_dropped_paths([str(photos)])  # not this tab's: the window's Classify
    assert not tab.take_dropped_paths([str(photos / "cat.jpg")])
    from gui.tabs.cifar import _dropped_kind

    assert [_dropped_kind(str(p)) for p in (dataset, half, parent, renamed)] == [
        "data", "data", "data", "checkpoint"]
    assert tab.take_dropped_paths([str(renamed)]) and tab.checkpoint_edit.text() == str(renamed)
