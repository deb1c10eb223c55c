"""Classify tab: synthetic drops, the results view with Grad-CAM, the folder table and CSV export,
cancelling a download from a local server, switching model and device."""

from __future__ import annotations

import csv
import http.server
import os
import shutil
import threading
import time

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest  # noqa: E402
import torch  # noqa: E402
from PySide6.QtCore import QMimeData, QPoint, QPointF, Qt, QUrl  # noqa: E402
from PySide6.QtGui import QDragEnterEvent, QDropEvent, QGuiApplication, QImage  # noqa: E402

from tests.conftest import BOOK_IMAGES, needs_book_photos  # noqa: E402

WAIT_MS = 240_000  # generous: a shared 2-core machine
# a test may chain a few such waits (model loads); the suite's 300 s default would cut it short
pytestmark = pytest.mark.timeout(900)


@pytest.fixture
def tab(qtbot, open_tab):
    from gui.tabs.classify import ClassifyTab

    widget = open_tab(ClassifyTab, size=(1200, 800))
    qtbot.waitUntil(lambda: not widget.is_busy(), timeout=WAIT_MS)  # the default model loads
    return widget


def _drop(widget, paths):
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    enter = QDragEnterEvent(QPoint(20, 20), Qt.DropAction.CopyAction, mime,
                            Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    widget.dragEnterEvent(enter)
    assert enter.isAccepted()
    drop = QDropEvent(QPointF(20, 20), Qt.DropAction.CopyAction, mime,
                      Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    widget.dropEvent(drop)
    assert drop.isAccepted()


def test_model_picker_lists_torchvision_models_with_metadata(tab):
    models = tab.available_models()
    assert models[0] == "efficientnet_lite0" and "resnet50" in models and "vit_b_16" in models
    index = tab.model_combo.findData("resnet50")
    assert "80.9%" in tab.model_combo.itemText(index)
    tooltip = tab.model_combo.itemData(index, Qt.ItemDataRole.ToolTipRole)
    assert "25.6 M params" in tooltip and "GFLOPS" in tooltip and "MB" in tooltip
    assert "not downloaded yet" in tooltip
    assert "on disk" in tab.model_info_label.text()


@needs_book_photos
def test_dropped_photo_shows_top5_views_and_gradcam(tab, qtbot):
    _drop(tab, [BOOK_IMAGES / "bobby.jpg"])
    qtbot.waitUntil(lambda: tab.current_cam is not None and not tab.is_busy(), timeout=WAIT_MS)
    assert tab.bars.labels()[0] == "golden retriever"
    assert len(tab.bars.labels()) == 5
    assert "golden retriever" in tab.result_label.text() and " ms " in tab.result_label.text()
    assert not tab.net_view_pane.pixmap().isNull() and not tab.original_pane.pixmap().isNull()
    assert tab.net_view_pane.has_overlay() and tab.original_pane.has_overlay()
    assert tab.current["net_view"].shape == (224, 224, 3)
    assert tab.current_cam["class_index"] == 207
    assert tab.table.rowCount() == 1 and tab.table.item(0, 1).text() == "golden retriever"

    second = tab.bars.buttons[1]
    qtbot.mouseClick(second, Qt.MouseButton.LeftButton)  # Grad-CAM for another class
    wanted = tab.current["top"][1]["index"]
    qtbot.waitUntil(lambda: tab.current_cam["class_index"] == wanted and not tab.is_busy(),
                    timeout=WAIT_MS)
    assert second.isChecked() and not tab.bars.buttons[0].isChecked()
    tab.cam_check.setChecked(False)
    assert not tab.net_view_pane.has_overlay()


@needs_book_photos
def test_folder_fills_a_sortable_table_and_exports_csv(tab, qtbot, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("bobby.jpg", "horse.jpg", "cat1.png", "cat2.png", "cat3.png"):
        shutil.copy(BOOK_IMAGES / name, folder / name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    tab.add_paths([str(folder)])
    qtbot.waitUntil(lambda: not tab.is_busy() and tab.table.rowCount() == 6, timeout=WAIT_MS)
    assert tab.progress_bar.value() == tab.progress_bar.maximum() == 6
    labels = {tab.table.item(r, 0).text(): tab.table.item(r, 1).text() for r in range(6)}
    assert labels["bobby.jpg"] == "golden retriever" and labels["horse.jpg"] == "sorrel"
    assert labels["broken.jpg"] == "—"
    icons = {tab.table.item(r, 0).text(): tab.table.item(r, 0).icon().isNull() for r in range(6)}
    assert not icons["bobby.jpg"] and icons["broken.jpg"]  # thumbnails for photos that opened
    broken_row = next(r for r in range(6) if tab.table.item(r, 0).text() == "broken.jpg")
    assert "error:" in tab.table.item(broken_row, 3).text()

    tab.table.sortItems(2, Qt.SortOrder.DescendingOrder)
    probs = [tab.results[tab.table.item(r, 0).data(Qt.ItemDataRole.UserRole)]["top"]
             for r in range(6)]
    values = [t[0]["prob"] for t in probs if t]
    assert values == sorted(values, reverse=True) and len(values) == 5

    out = tmp_path / "results.csv"
    assert tab.export_csv(str(out)) == 6
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["top1_prob"] for r in rows[:5]] == [f"{v:.6f}" for v in values]
    by_file = {os.path.basename(r["path"]): r for r in rows}
    assert by_file["bobby.jpg"]["top1_label"] == "golden retriever"
    assert by_file["bobby.jpg"]["top5"].count(";") == 4
    assert by_file["broken.jpg"]["error"] and by_file["broken.jpg"]["top1_label"] == ""
    assert by_file["bobby.jpg"]["model"].startswith("EfficientNet-Lite0")

    empty = tmp_path / "empty"
    empty.mkdir()
    tab.add_paths([str(empty), str(empty)])  # nothing in it: the bar claims no work done
    qtbot.waitUntil(lambda: not tab.is_busy(), timeout=WAIT_MS)
    assert tab.progress_bar.text() == "" and tab.table.rowCount() == 6


@needs_book_photos
def test_stop_keeps_results_so_far(tab, qtbot, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(64):
        os.symlink(BOOK_IMAGES / "cat1.png", folder / f"cat_{i:02d}.png")
    tab.add_paths([str(folder)])
    qtbot.waitUntil(lambda: tab.table.rowCount() > 0, timeout=WAIT_MS)
    assert tab.stop_button.isEnabled()
    qtbot.mouseClick(tab.stop_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not tab.is_busy(), timeout=WAIT_MS)
    assert 0 < tab.table.rowCount() < 64


class _SlowWeights(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        size = 8 * 1024 * 1024
        self.send_response(200)
        self.send_header("Content-Length", str(size))
        self.end_headers()
        chunk = b"\0" * 32768
        for _ in range(size // len(chunk)):
            try:
                self.wfile.write(chunk)
                self.wfile.flush()
            except OSError:
                return
            time.sleep(0.02)


def test_cancel_download_leaves_no_file(tab, qtbot, monkeypatch):
    from engine.classify.weights import MIRROR_ENV, checkpoint_dir

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowWeights)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv(MIRROR_ENV, f"http://127.0.0.1:{server.server_address[1]}/")
    try:
        tab.set_model("squeezenet1_1")
        qtbot.waitUntil(lambda: tab.download_panel.isVisible()
                        and "Downloading squeezenet1_1" in tab.download_label.text()
                        and tab.download_bar.value() > 0, timeout=WAIT_MS)
        assert "MB/s" in tab.download_label.text() and "s left" in tab.download_label.text()
        qtbot.mouseClick(tab.download_cancel, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: not tab.is_busy(), timeout=30_000)
    finally:
        server.shutdown()
        server.server_close()
    assert not tab.download_panel.isVisible()
    assert "cancelled" in tab.model_info_label.text()
    folder = checkpoint_dir()
    assert not folder.exists() or list(folder.iterdir()) == []


@needs_book_photos
def test_switch_model_weights_file_and_device(tab, qtbot, tmp_path, app_state):
    from torchvision.models import resnet18

    tab.add_paths([str(BOOK_IMAGES / "horse.jpg")])
    qtbot.waitUntil(lambda: not tab.is_busy() and tab.current is not None, timeout=WAIT_MS)
    assert "EfficientNet-Lite0" in tab.result_label.text()
    # torchvision's file name says the architecture, whatever the picker shows (offline, a
    # failed download leaves the picker on the model still loaded)
    weights = tmp_path / "resnet18-f37072fd.pth"
    torch.manual_seed(0)
    torch.save(resnet18().state_dict(), weights)
    assert tab.model_combo.currentData() == "efficientnet_lite0"
    tab.load_weights_file(str(weights))
    qtbot.waitUntil(lambda: not tab.is_busy(), timeout=WAIT_MS)
    assert tab.loaded_model["source"] == "file"
    assert "resnet18-f37072fd" in tab.loaded_model["title"]
    # the photo on show was classified again with the new model
    assert "resnet18-f37072fd.pth" in tab.result_label.text()
    renamed = tmp_path / "my-weights.pth"
    weights.rename(renamed)
    tab.load_weights_file(str(renamed), "resnet18")
    qtbot.waitUntil(lambda: not tab.is_busy(), timeout=WAIT_MS)
    assert "my-weights.pth" in tab.result_label.text()

    tab.load_weights_file(str(tmp_path / "missing.pth"))  # a bad file: a message, no crash
    qtbot.waitUntil(lambda: not tab.is_busy(), timeout=WAIT_MS)
    assert app_state.last_error and "weights file not found" in app_state.last_error[1]
    info = tab.model_info_label.text()  # describes the model still in use
    assert "my-weights.pth" in info and "missing.pth not loaded; still using" in info
    assert "my-weights.pth" in tab.result_label.text()

    app_state.set_device("cuda:0" if not torch.cuda.is_available() else "meta")
    qtbot.waitUntil(lambda: not tab.is_busy(), timeout=WAIT_MS)
    assert "cannot put the model on" in app_state.last_error[1]
    app_state.set_device("cpu")
    tab.set_model("efficientnet_lite0")
    qtbot.waitUntil(lambda: not tab.is_busy(), timeout=WAIT_MS)
    assert tab.loaded_model["id"] == "efficientnet_lite0"
    assert "loaded on cpu" in tab.model_info_label.text()
    tab.add_paths([str(BOOK_IMAGES / "bobby.jpg")])
    qtbot.waitUntil(lambda: not tab.is_busy() and tab.current_cam is not None, timeout=WAIT_MS)
    assert tab.bars.labels()[0] == "golden retriever"


@needs_book_photos
def test_image_dragged_from_a_browser_and_clear(tab, qtbot, app_state):
    mime = QMimeData()
    mime.setImageData(QImage(str(BOOK_IMAGES / "bobby.jpg")))
    mime.setUrls([QUrl("https://example.com/bobby.jpg")])
    drop = QDropEvent(QPointF(20, 20), Qt.DropAction.CopyAction, mime,
                      Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    tab.dropEvent(drop)
    assert drop.isAccepted()
    qtbot.waitUntil(lambda: not tab.is_busy() and tab.current is not None, timeout=WAIT_MS)
    assert tab.bars.labels()[0] == "golden retriever"
    assert tab.export_button.isEnabled()
    tab.clear_results()
    assert tab.current is None and tab.bars.labels() == [] and not tab.export_button.isEnabled()
    only_url = QMimeData()
    only_url.setUrls([QUrl("https://example.com/cat.jpg")])
    tab.dropEvent(QDropEvent(QPointF(20, 20), Qt.DropAction.CopyAction, only_url,
                             Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier))
    assert not tab.is_busy()


@needs_book_photos
def test_paste_an_image_from_the_clipboard(tab, qtbot):
    image = QImage(str(BOOK_IMAGES / "bobby.jpg"))
    QGuiApplication.clipboard().setImage(image)
    tab.paste()
    qtbot.waitUntil(lambda: not tab.is_busy() and tab.current is not None, timeout=WAIT_MS)
    assert tab.current["path"].endswith(".png") and "pasted" in tab.current["path"]
    assert tab.bars.labels()[0] == "golden retriever"


@needs_book_photos
def test_model_handed_over_from_the_cifar_tab(tab, qtbot, tmp_path, app_state):
    from tests.engine.test_classify import _tiny_torchscript

    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("bobby.jpg", "horse.jpg"):
        shutil.copy(BOOK_IMAGES / name, folder / name)
    tab.add_paths([str(folder)])
    qtbot.waitUntil(lambda: not tab.is_busy() and tab.table.rowCount() == 2, timeout=WAIT_MS)
    path = tmp_path / "net.torchscript.pt"
    _tiny_torchscript(path)
    names = [f"thing {i}" for i in range(10)]
    tab.use_trained_model({"format": "torchscript", "path": str(path), "model": "net",
                           "class_names": names, "input_size": 32})
    qtbot.waitUntil(lambda: not tab.is_busy(), timeout=WAIT_MS)
    assert tab.loaded_model["title"] == "net trained in TorchDesk (10 classes)"
    # the listed photos were classified again: no row keeps the ImageNet model's answer
    assert tab.table.rowCount() == 2
    assert {tab.table.item(r, 1).text() for r in range(2)} <= set(names)
    out = tmp_path / "results.csv"
    assert tab.export_csv(str(out)) == 2
    with open(out, newline="", encoding="utf-8") as f:
        assert {r["model"] for r in csv.DictReader(f)} == {tab.loaded_model["title"]}
    tab.clear_results()
    tab.add_paths([str(BOOK_IMAGES / "cat1.png")])
    qtbot.waitUntil(lambda: not tab.is_busy() and tab.current is not None, timeout=WAIT_MS)
    assert set(tab.bars.labels()) <= set(names) and len(tab.bars.labels()) == 5
    assert tab.current["net_view"].shape == (32, 32, 3) and tab.current_cam is None
    tab.use_trained_model({"format": "onnx", "path": "x.onnx"})
    assert "Only TorchScript" in app_state.last_error[1]


def test_weights_file_names_say_their_architecture():
    from gui.tabs.classify import guess_architecture

    ids = ["resnet18", "resnet101", "efficientnet_b0", "alexnet", "wide_resnet50_2", "resnet50"]
    assert guess_architecture("/w/resnet101-cd907fc2.pth", ids) == "resnet101"
    assert guess_architecture("efficientnet_b0_rwightman-7f5810bc.pth", ids) == "efficientnet_b0"
    assert guess_architecture("alexnet-owt-7be5be79.pth", ids) == "alexnet"
    assert guess_architecture("wide_resnet50_2-95faca4d.pth", ids) == "wide_resnet50_2"
    assert guess_architecture("my-weights.pth", ids) is None
    assert guess_architecture("resnet1000.pth", ids) is None


def _row_labels(tab):
    return {tab.table.item(r, 1).text() for r in range(tab.table.rowCount())}


@needs_book_photos
def test_quick_model_changes_leave_no_row_of_another_model(tab, qtbot, tmp_path, monkeypatch):
    import engine.classify.jobs as jobs
    from tests.engine.test_classify import _tiny_torchscript

    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(24):
        os.symlink(BOOK_IMAGES / "cat1.png", folder / f"cat_{i:02d}.png")
    real_load = jobs.load_model_job
    release_load = threading.Event()

    def held_load(config, ctx):  # the first load waits until a second change has come in
        release_load.wait(timeout=120)
        return real_load(config, ctx)

    monkeypatch.setattr(jobs, "load_model_job", held_load)
    tab.add_paths([str(folder)])
    qtbot.waitUntil(lambda: tab.table.rowCount() > 0, timeout=WAIT_MS)
    path = tmp_path / "net.torchscript.pt"
    _tiny_torchscript(path)
    names = [f"thing {i}" for i in range(10)]
    net = {"format": "torchscript", "path": str(path), "model": "net", "class_names": names,
           "input_size": 32}
    tab.use_trained_model(net)  # interrupts the folder run
    qtbot.waitUntil(lambda: tab._job_kind == "load", timeout=WAIT_MS)
    assert tab.table.rowCount() < 24
    tab.use_trained_model({**net, "model": "net2"})  # again, while the first one loads
    release_load.set()
    qtbot.waitUntil(lambda: not tab.is_busy(), timeout=WAIT_MS)
    # the interrupted folder went on, and every row is the loaded model's
    assert tab.table.rowCount() == 24 and _row_labels(tab) <= set(names)

    # a change that fails right after one that works: the rows follow the one that loaded
    tab.clear_results()
    tab.set_model("efficientnet_lite0")
    qtbot.waitUntil(lambda: not tab.is_busy(), timeout=WAIT_MS)
    tab.add_paths([str(BOOK_IMAGES / "bobby.jpg"), str(BOOK_IMAGES / "horse.jpg")])
    qtbot.waitUntil(lambda: not tab.is_busy() and tab.table.rowCount() == 2, timeout=WAIT_MS)
    tab.use_trained_model(net)
    tab.use_trained_model({**net, "path": str(tmp_path / "missing.pt")})
    qtbot.waitUntil(lambda: not tab.is_busy(), timeout=WAIT_MS)
    assert tab.loaded_model["title"] == "net trained in TorchDesk (10 classes)"
    assert _row_labels(tab) <= set(names)
