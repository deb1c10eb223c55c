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
    probs = [tab.results[tab._row_path(r)]["top"]
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


@pytest.fixture
def hold_folder_run(monkeypatch):
    """An event: a folder run waits after its first result until it is set, so a stop or a
    model change surely comes in mid-run (a folder of one batch could otherwise be done first)."""
    import engine.classify.jobs as jobs

    real_get_classifier = jobs.get_classifier
    release = threading.Event()

    class FirstResultThenWait:
        def __init__(self, classifier):
            self._classifier = classifier

        def __getattr__(self, name):
            return getattr(self._classifier, name)

        def classify_files(self, *args, **kwargs):
            stream = self._classifier.classify_files(*args, **kwargs)
            yield next(stream)
            release.wait(timeout=120)
            yield from stream

    def held_get_classifier(config, ctx):
        classifier = real_get_classifier(config, ctx)
        return classifier if release.is_set() else FirstResultThenWait(classifier)

    monkeypatch.setattr(jobs, "get_classifier", held_get_classifier)
    return release


@needs_book_photos
def test_stop_keeps_results_so_far(tab, qtbot, tmp_path, hold_folder_run):
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(64):
        os.symlink(BOOK_IMAGES / "cat1.png", folder / f"cat_{i:02d}.png")
    tab.add_paths([str(folder)])
    qtbot.waitUntil(lambda: tab.table.rowCount() > 0, timeout=WAIT_MS)
    assert tab.stop_button.isEnabled()
    qtbot.mouseClick(tab.stop_button, Qt.MouseButton.LeftButton)
    hold_folder_run.set()
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


def test_checking_weights_on_disk_shows_progress_and_escape_stops_it(tab, qtbot, monkeypatch,
                                                                    app_state):
    """Weights copied into the cache are checked (SHA-256) before their first use: the download
    panel shows the check, Esc stops it with a message, nothing is remembered as checked, and
    the next load checks the file again (here: finds it is not the published one)."""
    import json

    from PySide6.QtTest import QTest

    import engine.classify.jobs as jobs
    from engine.cache import cache_root
    from engine.classify import weights

    monkeypatch.setattr(weights, "HASH_CHUNK_BYTES", 64 * 1024)
    monkeypatch.setattr(weights, "CHECK_REPORT_INTERVAL_S", 0.0)
    real_load = jobs.load_model_job

    def load_that_waits_halfway_through_the_check(config, ctx):
        report = ctx.report

        def paused_midway(update):  # until Esc: the stop surely comes during the check
            report(update)
            if update["event"] == "verify" and 0 < update["bytes"] < update["total"]:
                ctx.stop_event.wait(timeout=WAIT_MS / 1000)

        ctx.report = paused_midway
        return real_load(config, ctx)

    monkeypatch.setattr(jobs, "load_model_job", load_that_waits_halfway_through_the_check)
    statuses = []
    app_state.status_message.connect(lambda text, _ms: statuses.append(text))
    copy = weights.checkpoint_dir() / "squeezenet1_1-b8a52dc0.pth"
    copy.parent.mkdir(parents=True, exist_ok=True)
    copy.write_bytes(b"\1" * 2 * 1024 * 1024)
    try:
        tab.set_model("squeezenet1_1")
        qtbot.waitUntil(lambda: tab.download_panel.isVisible()
                        and tab.download_bar.value() > 0, timeout=WAIT_MS)
        assert tab.download_label.text().startswith(
            f"Checking the weights on disk ({copy.name}): 0.1 MB of 2.0 MB")
        tab.activateWindow()
        qtbot.waitActive(tab)
        QTest.keyClick(tab.table, Qt.Key.Key_Escape)
        qtbot.waitUntil(lambda: not tab.is_busy(), timeout=30_000)
        assert not tab.download_panel.isVisible()
        assert "cancelled" in tab.model_info_label.text()
        assert tab.loaded_model["id"] == "efficientnet_lite0"
        assert any(text.startswith(f"Stopped checking {copy.name}: it is not marked as checked")
                   for text in statuses)
        notes = cache_root() / weights.VERIFIED_FILE
        assert not notes.exists() or str(copy) not in json.loads(notes.read_text())

        monkeypatch.setattr(jobs, "load_model_job", real_load)
        tab.set_model("squeezenet1_1")  # checked again, to the end this time
        qtbot.waitUntil(lambda: not tab.is_busy(), timeout=WAIT_MS)
        assert app_state.last_error and "is not the file published" in app_state.last_error[1]
    finally:
        copy.unlink()


def test_folder_rows_come_in_natural_order_and_sort_so(tab, qtbot, tmp_path):
    """A folder's photos are listed as file managers list them (p2 before p10, case aside),
    and sorting the table by File keeps that order (reversed: descending)."""
    from PIL import Image

    natural = ["p0.png", "p1.png", "P2.png", "p3.png", "p10.png", "p11.png", "p100.png"]
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in reversed(natural):
        Image.new("RGB", (8, 8), "orange").save(folder / name)
    tab.add_paths([str(folder)])
    qtbot.waitUntil(lambda: not tab.is_busy() and tab.table.rowCount() == len(natural),
                    timeout=WAIT_MS)

    def names() -> list[str]:
        return [tab.table.item(row, 0).text() for row in range(tab.table.rowCount())]

    assert names() == natural
    tab.table.sortItems(0, Qt.SortOrder.DescendingOrder)
    assert names() == natural[::-1]
    tab.table.sortItems(0, Qt.SortOrder.AscendingOrder)
    assert names() == natural


def test_an_empty_image_pane_is_named_once(tab, qtbot, tmp_path):
    """'Original' and 'What the net sees' each show once, in the caption under their pane,
    while the pane is empty: at the start, after a file that is no photo, after Clear."""
    def names_shown() -> list[str]:
        return [tab.original_pane.text(), tab.original_caption.text(),
                tab.net_view_pane.text(), tab.net_view_caption.text()]

    def each_named_once() -> None:
        shown = " | ".join(names_shown())
        assert shown.count("Original") == 1 and shown.count("What the net sees") == 1, shown
        assert tab.original_pane.pixmap().isNull() and tab.net_view_pane.pixmap().isNull()
        assert tab.original_caption.text() == "Original"

    each_named_once()
    not_a_photo = tmp_path / "notes.jpg"
    not_a_photo.write_text("not a photo")
    tab.add_paths([str(not_a_photo)])
    qtbot.waitUntil(lambda: not tab.is_busy() and "could not be classified"
                    in tab.result_label.text(), timeout=WAIT_MS)
    each_named_once()
    tab.clear_results()
    each_named_once()


def test_download_bar_keeps_its_width_whatever_the_length_of_its_label(tab, qapp):
    """The download panel's text grows and shrinks as it goes ('· 3 s left', a long file
    name, the check after the download): its progress bar stays put, and a long text does
    not make the window wider either."""
    def show(name: str, eta: float | None) -> tuple[int, int]:
        tab._on_progress([{"event": "download", "file": name, "bytes": 3 << 20,
                           "total": 10 << 20, "speed": 5 << 20, "eta": eta}])
        qapp.processEvents()  # the layout settles
        return tab.download_bar.width(), tab.minimumSizeHint().width()

    short_bar, short_least = show("a.pth", None)
    long_bar, long_least = show("vit_h_14_swag-80465313-" + "long-name-" * 12 + ".pth", 12.0)
    assert tab.download_panel.isVisible()
    assert "long-name-long-name" in tab.download_label.text()
    assert short_bar == long_bar > 0
    assert long_least == short_least
    assert tab.download_label.toolTip() == tab.download_label.text()  # whole, if it is cut
    tab.download_panel.hide()


def test_loading_a_model_shows_its_stage_and_escape_stops_it(tab, qtbot, monkeypatch, app_state,
                                                            tmp_path):
    """Past its download and check, a model's load shows its stage in the download panel
    (importing torchvision, reading the weights, building the network, …); Esc during a stage
    stops the load when that stage ends, says so, and the model in use stays."""
    from PySide6.QtTest import QTest
    from torchvision.models import squeezenet1_1

    import engine.classify.jobs as jobs

    weights_file = tmp_path / "my-squeezenet.pth"
    torch.save(squeezenet1_1().state_dict(), weights_file)
    real_load = jobs.load_model_job

    def load_that_waits_while_building(config, ctx):
        report = ctx.report

        def paused_in_the_build(update):  # until Esc: the stop surely comes during the stage
            report(update)
            if update["event"] == "loading" and update["stage"] == "build":
                ctx.stop_event.wait(timeout=WAIT_MS / 1000)

        ctx.report = paused_in_the_build
        return real_load(config, ctx)

    monkeypatch.setattr(jobs, "load_model_job", load_that_waits_while_building)
    statuses = []
    app_state.status_message.connect(lambda text, _ms: statuses.append(text))
    tab.load_weights_file(str(weights_file), "squeezenet1_1")
    building = "Loading SqueezeNet 1.1 ← my-squeezenet.pth: building the network…"
    qtbot.waitUntil(lambda: tab.download_panel.isVisible()
                    and tab.download_label.text() == building, timeout=WAIT_MS)
    assert tab.download_cancel.isVisible()
    tab.activateWindow()
    qtbot.waitActive(tab)
    QTest.keyClick(tab.table, Qt.Key.Key_Escape)
    qtbot.waitUntil(lambda: not tab.is_busy(), timeout=30_000)
    assert not tab.download_panel.isVisible()
    assert "my-squeezenet.pth not loaded (cancelled)" in tab.model_info_label.text()
    assert tab.loaded_model["id"] == "efficientnet_lite0"
    assert ("Stopped loading SqueezeNet 1.1 ← my-squeezenet.pth (building the network); "
            "nothing of it was kept.") in statuses


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
    assert tab.model_combo.currentData() == "resnet18"  # the picker says what is in use
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


def test_pasted_images_of_a_user_who_cannot_use_the_shared_folder(qtbot, monkeypatch,
                                                                    tmp_path):
    """Another user's shared folder: this user's own beside it, its leftovers removed alike.
    A removed session holds nothing until exit."""
    import gc
    import tempfile
    import weakref

    from gui.tabs.classify import PastedImages

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    (tmp_path / PastedImages.ROOT).write_text("not a folder we can use")
    crashed = PastedImages()
    assert crashed.save(_green_image())
    crashed._lock.close()  # as when its process ends
    pasted = PastedImages()
    saved = pasted.save(_green_image())
    assert saved.parent.parent == crashed._folder.parent != tmp_path / PastedImages.ROOT
    assert [p.name for p in saved.parent.parent.iterdir()] == [saved.parent.name]
    crashed.remove()
    pasted.remove()
    assert not saved.parent.exists()
    removed = weakref.ref(pasted)
    del pasted
    gc.collect()
    assert removed() is None  # no longer kept for atexit


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
def test_quick_model_changes_leave_no_row_of_another_model(tab, qtbot, tmp_path, monkeypatch,
                                                           hold_folder_run):
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
    hold_folder_run.set()
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


# ---- without a real model: the fake load below reports the default model at once -----------------
def _fake_load(config, ctx):
    from engine.classify.zoo import default_model_info
    from engine.jobs import JobError

    if config.get("weights_file") and not os.path.exists(config["weights_file"]):
        raise JobError(f"weights file not found: {config['weights_file']}")
    info = default_model_info().to_dict()
    ctx.report({"event": "model", "model": info, "load_seconds": 0.0})
    return {"status": "done", "model": info}


@pytest.fixture
def quick_tab(qtbot, open_tab, monkeypatch):
    """A Classify tab whose model loads are instant (for what needs no real answers)."""
    import engine.classify.jobs as jobs
    from gui.tabs.classify import ClassifyTab

    loads = []
    monkeypatch.setattr(jobs, "load_model_job",
                        lambda config, ctx: loads.append(config) or _fake_load(config, ctx))
    widget = open_tab(ClassifyTab, size=(1200, 800))
    qtbot.waitUntil(lambda: not widget.is_busy(), timeout=WAIT_MS)
    widget.loads = loads
    return widget


def _fake_result(path, prob=None, error=None):
    import numpy as np

    if error:
        return {"path": path, "top": [], "error": error, "seconds": 0.0, "thumbnail": None}
    return {"path": path, "error": None, "seconds": 0.01,
            "top": [{"label": "tabby", "index": 281, "prob": prob},
                    {"label": "tiger cat", "index": 282, "prob": prob / 2}],
            "thumbnail": np.zeros((36, 64, 3), np.uint8), "original_size": (1280, 720),
            "crop_box": (280.0, 0.0, 1000.0, 720.0), "net_view": np.zeros((224, 224, 3), np.uint8)}


def _table_rows(tab):
    return [(tab._row_path(r), tab.table.item(r, 2).text())
            for r in range(tab.table.rowCount())]


def test_rows_keep_their_place_in_a_sorted_table_and_a_photo_again_replaces_its_row(quick_tab):
    from gui.tabs.classify import PROB_COLUMN

    tab = quick_tab
    for i, prob in enumerate([0.2, 0.9, 0.5, 0.7]):
        tab._add_row(_fake_result(f"/p/{i}.jpg", prob))
    assert [path for path, _ in _table_rows(tab)] == [f"/p/{i}.jpg" for i in range(4)]
    tab.table.sortItems(PROB_COLUMN, Qt.SortOrder.DescendingOrder)
    tab._add_row(_fake_result("/p/4.jpg", 0.6))  # a new row goes to its place
    tab._add_row(_fake_result("/p/1.jpg", 0.1))  # classified again: replaced, and moved
    tab._add_row(_fake_result("/p/2.jpg", error="not an image"))  # errors sort last
    assert _table_rows(tab) == [("/p/3.jpg", "70.0%"), ("/p/4.jpg", "60.0%"),
                                ("/p/0.jpg", "20.0%"), ("/p/1.jpg", "10.0%"), ("/p/2.jpg", "")]
    for row, (path, _) in enumerate(_table_rows(tab)):
        assert tab._row_of(path) == row
    tab.table.sortItems(0, Qt.SortOrder.AscendingOrder)  # by name: each row found again
    tab._add_row(_fake_result("/p/3.jpg", 0.3))
    assert _table_rows(tab)[3] == ("/p/3.jpg", "30.0%") and tab.table.rowCount() == 5
    tab.clear_results()
    tab._add_row(_fake_result("/p/3.jpg", 0.3))
    assert tab._row_of("/p/3.jpg") == 0 and tab.table.rowCount() == 1


def test_adding_a_row_to_a_big_sorted_table_neither_scans_nor_sorts_it(quick_tab, monkeypatch):
    """The cost of a row must not grow with the table (4000 rows once took 13 s): count the
    cell comparisons and the cells looked at, not the time."""
    from gui.tabs import classify
    from gui.tabs.classify import PROB_COLUMN

    comparisons = []
    real_less = classify._NumberItem.__lt__
    # patched before any cell exists: PySide keeps using the __lt__ a cell was first compared by
    monkeypatch.setattr(classify._NumberItem, "__lt__",
                        lambda a, b: comparisons.append(1) or real_less(a, b))
    tab = quick_tab
    tab.table.sortItems(PROB_COLUMN, Qt.SortOrder.DescendingOrder)
    rows = 1000
    for i in range(rows):
        tab._add_row(_fake_result(f"/p/{i}.jpg", (i * 7919 % 1000) / 1000))
    cells_read = []
    real_item = tab.table.item
    monkeypatch.setattr(tab.table, "item", lambda *a: cells_read.append(1) or real_item(*a))
    comparisons.clear()
    tab._add_row(_fake_result("/p/new.jpg", 0.4321))
    tab._add_row(_fake_result("/p/10.jpg", 0.9999))  # a photo again
    assert len(comparisons) < 100 and len(cells_read) < 10
    monkeypatch.undo()
    probs = [float(text.rstrip("%")) for _, text in _table_rows(tab)]
    assert probs == sorted(probs, reverse=True) and len(probs) == rows + 1
    assert _table_rows(tab)[0] == ("/p/10.jpg", "100.0%")


def test_stopping_a_folder_before_its_first_result_keeps_the_model_loaded(quick_tab, qtbot,
                                                                           monkeypatch, tmp_path):
    import engine.classify.jobs as jobs

    def stopped_before_first_result(config, ctx):
        ctx.stop_event.wait(timeout=WAIT_MS / 1000)
        return {"status": "stopped", "results": [], "classified": 0, "failed": 0, "seconds": 0}

    tab = quick_tab
    assert "loaded on cpu" in tab.model_info_label.text()
    monkeypatch.setattr(jobs, "classify_job", stopped_before_first_result)
    tab.add_paths([str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")])
    qtbot.waitUntil(lambda: tab._job_kind == "folder", timeout=WAIT_MS)
    tab.stop()
    qtbot.waitUntil(lambda: not tab.is_busy(), timeout=WAIT_MS)
    info = tab.model_info_label.text()
    assert "loaded on cpu" in info and "not loaded" not in info


def test_escape_stops_a_folder_run(quick_tab, qtbot, monkeypatch, tmp_path):
    from PySide6.QtTest import QTest

    import engine.classify.jobs as jobs

    contexts = []

    def runs_until_stopped(config, ctx):
        contexts.append(ctx)
        ctx.report({"event": "result", "index": 0, "total": 2,
                    "result": _fake_result(config["paths"][0], prob=0.5)})
        ctx.stop_event.wait(timeout=WAIT_MS / 1000)
        return {"status": "stopped"}

    tab = quick_tab
    monkeypatch.setattr(jobs, "classify_job", runs_until_stopped)
    tab.add_paths([str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")])
    qtbot.waitUntil(lambda: tab.table.rowCount() == 1, timeout=WAIT_MS)
    tab.activateWindow()
    qtbot.waitActive(tab)
    QTest.keyClick(tab.table, Qt.Key.Key_Escape)
    assert contexts[0].stopped()
    qtbot.waitUntil(lambda: not tab.is_busy(), timeout=WAIT_MS)
    assert tab.table.rowCount() == 1  # the result so far stays


def test_an_empty_grad_cam_says_why_nothing_is_shown(quick_tab, app_state, monkeypatch):
    import numpy as np

    tab = quick_tab
    messages = []
    monkeypatch.setattr(app_state, "show_status", lambda text, timeout=0: messages.append(text))
    tab._show_detail(_fake_result("/photos/cat.jpg", prob=0.5))
    heat = {"event": "gradcam", "path": "/photos/cat.jpg", "class_index": 282,
            "label": "tiger cat", "cam": np.eye(224, dtype=np.float32)}
    tab._on_progress([heat])
    assert messages == [] and tab.net_view_pane.has_overlay()
    tab._on_progress([{**heat, "cam": np.zeros((224, 224), np.float32)}])
    assert len(messages) == 1 and "tiger cat" in messages[0] and "empty" in messages[0]


def test_detail_captions_are_reset_by_an_error_row_and_by_clear(quick_tab):
    from gui.tabs.classify import NET_VIEW_CAPTION, ORIGINAL_CAPTION

    tab = quick_tab
    tab._show_detail(_fake_result("/p/a.jpg", 0.8))
    assert "1280×720" in tab.original_caption.text()
    assert tab.net_view_caption.text() == "What the net sees: 224×224"
    tab._show_detail(_fake_result("/p/b.jpg", error="not an image"))
    assert tab.original_caption.text() == ORIGINAL_CAPTION
    assert tab.net_view_caption.text() == NET_VIEW_CAPTION
    tab._show_detail(_fake_result("/p/a.jpg", 0.8))
    tab.clear_results()
    assert tab.original_caption.text() == ORIGINAL_CAPTION
    assert tab.net_view_caption.text() == NET_VIEW_CAPTION


def test_the_picker_shows_the_architecture_of_imported_weights(quick_tab, qtbot, tmp_path):
    tab = quick_tab
    weights = tmp_path / "squeezenet1_1-abcdef.pth"
    weights.write_bytes(b"fake: the load is faked")
    loads_before = len(tab.loads)
    tab.load_weights_file(str(weights))
    qtbot.waitUntil(lambda: not tab.is_busy(), timeout=WAIT_MS)
    assert tab.model_combo.currentData() == "squeezenet1_1"
    assert len(tab.loads) == loads_before + 1  # choosing it in the picker did not load again
    tab.load_weights_file(str(tmp_path / "missing.pth"), "resnet18")  # fails: back to the one used
    qtbot.waitUntil(lambda: not tab.is_busy(), timeout=WAIT_MS)
    assert tab.model_combo.currentData() == "squeezenet1_1"


def test_pasted_file_urls_are_decoded_one_per_line(quick_tab, tmp_path, monkeypatch):
    tab = quick_tab
    unicode_name = tmp_path / "ünïcødé 犬.jpg"
    plain = tmp_path / "plain.jpg"
    for path in (unicode_name, plain):
        path.write_bytes(b"")
    encoded = QUrl.fromLocalFile(str(unicode_name)).toString(
        QUrl.ComponentFormattingOption.FullyEncoded)
    assert "%C3%BC" in encoded
    added = []
    monkeypatch.setattr(tab, "add_paths", added.append)
    mime = QMimeData()
    mime.setText(f"{encoded}\n  {plain}  \nfile:///not/here.jpg\n")
    clipboard = QGuiApplication.clipboard()
    clipboard.setMimeData(mime)
    try:
        tab.paste()
    finally:
        clipboard.clear()  # it owns ``mime``: freed at exit instead, it crashes the interpreter
    assert added == [[str(unicode_name), str(plain)]]


def test_download_and_check_say_the_size_the_model_list_gives(quick_tab):
    """torchvision's file sizes, which the picker shows, are 1024 × 1024-byte MB: the download
    and the check count the same way (ViT-H/14 read 2416.6 MB above and 2534.0 MB below)."""
    from gui.tabs.classify import _model_summary

    info = quick_tab._catalog["vit_h_14"]
    size = round(info["file_mb"] * 1024 * 1024)
    listed = f"{info['file_mb']:.1f} MB"
    assert listed in _model_summary(info)
    for event in ("download", "verify"):
        quick_tab._on_progress([{"event": event, "file": "vit_h_14_swag-80465313.pth",
                                 "bytes": size // 2, "total": size, "speed": 1e7, "eta": 12.0}])
        assert f" of {listed}" in quick_tab.download_label.text()


def test_small_models_show_their_exact_parameter_count():
    from gui.tabs.classify import _model_summary

    assert "18,123 params" in _model_summary({"title": "net", "params": 18_123})
    assert "25.6 M params" in _model_summary({"title": "ResNet-50", "params": 25_557_032})


NO_GPU = "cannot put the model on cuda:0: no GPU here"


def _jobs_that_work_on_the_cpu_only(monkeypatch, app_state):
    """Loads fail on any other device; a folder runs until a stop; the dialogs are listed."""
    import engine.classify.jobs as jobs
    from engine.jobs import JobError

    def load_on_the_cpu_only(config, ctx):
        if ctx.device != "cpu":
            raise JobError(NO_GPU)
        return _fake_load(config, ctx)

    def classify_on_the_cpu_only(config, ctx):
        load_on_the_cpu_only(config, ctx)
        for index, path in enumerate(config["paths"]):
            ctx.report({"event": "result", "index": index, "total": len(config["paths"]),
                        "result": _fake_result(path, prob=0.5)})
            if len(config["paths"]) > 1:  # a folder: runs until the device change stops it
                ctx.stop_event.wait(timeout=WAIT_MS / 1000)
                return {"status": "stopped"}
        return {"status": "done", "classified": 1, "failed": 0}

    monkeypatch.setattr(jobs, "load_model_job", load_on_the_cpu_only)
    monkeypatch.setattr(jobs, "classify_job", classify_on_the_cpu_only)
    errors = []
    monkeypatch.setattr(app_state, "show_error", lambda title, text: errors.append(text))
    return errors


def _photo_and_folder_on_show(tab, qtbot, tmp_path):
    tab.add_paths([str(tmp_path / "shown.jpg")])
    qtbot.waitUntil(lambda: not tab.is_busy() and tab.current is not None, timeout=WAIT_MS)
    tab.add_paths([str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")])
    qtbot.waitUntil(lambda: tab.table.rowCount() == 2, timeout=WAIT_MS)  # the folder runs


def test_a_device_that_cannot_take_the_model_says_so_once(quick_tab, qtbot, monkeypatch,
                                                          app_state, tmp_path):
    """The jobs queued behind a load that fails on the new device would fail the same way:
    one message, which says the interrupted folder was not redone."""
    tab = quick_tab
    errors = _jobs_that_work_on_the_cpu_only(monkeypatch, app_state)
    _photo_and_folder_on_show(tab, qtbot, tmp_path)
    app_state.set_device("cuda:0")
    qtbot.waitUntil(lambda: not tab.is_busy(), timeout=WAIT_MS)
    assert len(errors) == 1, errors
    assert errors[0].startswith(NO_GPU) and "folder was not classified" in errors[0]


def test_another_model_on_a_device_that_takes_none_says_so_once(quick_tab, qtbot, monkeypatch,
                                                                app_state, tmp_path):
    """Choosing another model while the device cannot take any: the fallback to the model in
    use would fail there too, for the photo on show and again for the folder: one message."""
    tab = quick_tab
    errors = _jobs_that_work_on_the_cpu_only(monkeypatch, app_state)
    _photo_and_folder_on_show(tab, qtbot, tmp_path)
    app_state.set_device("cuda:0")
    qtbot.waitUntil(lambda: not tab.is_busy(), timeout=WAIT_MS)
    errors.clear()
    tab.set_model("resnet18")
    qtbot.waitUntil(lambda: not tab.is_busy(), timeout=WAIT_MS)
    assert len(errors) == 1, errors
    assert errors[0].startswith(NO_GPU)
    assert tab.model_config == {"model": "efficientnet_lite0"}  # the picker goes back
    app_state.set_device("cpu")  # a device that works: the tab works again
    qtbot.waitUntil(lambda: not tab.is_busy(), timeout=WAIT_MS)
    assert "loaded on cpu" in tab.model_info_label.text() and len(errors) == 1


def test_at_1024_pixels_the_file_column_keeps_a_readable_width(qtbot, open_tab, monkeypatch):
    """The number columns are as wide as their numbers, so a small screen leaves the file name
    room beside its thumbnail (it once had about 50 px: the thumbnail alone)."""
    import engine.classify.jobs as jobs
    from gui.tabs.classify import PROB_COLUMN, ROW_THUMBNAIL, TIME_COLUMN, ClassifyTab

    monkeypatch.setattr(jobs, "load_model_job", _fake_load)
    tab = open_tab(ClassifyTab, size=(1024, 700))
    qtbot.waitUntil(lambda: not tab.is_busy(), timeout=WAIT_MS)
    tab._add_row(_fake_result("/photos/IMG_20240101_0001.jpg", prob=0.999))
    metrics = tab.table.fontMetrics()
    name_width = tab.table.columnWidth(0) - ROW_THUMBNAIL
    assert name_width >= metrics.horizontalAdvance("IMG_0001.jpg"), name_width
    for column, widest in ((PROB_COLUMN, "100.0%"), (TIME_COLUMN, "99999")):
        assert tab.table.columnWidth(column) >= metrics.horizontalAdvance(widest)


@needs_book_photos
def test_a_folders_status_line_counts_the_files_that_are_not_images(tab, qtbot, monkeypatch,
                                                                    app_state, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(BOOK_IMAGES / "cat1.png", folder / "cat1.png")
    (folder / "notes.txt").write_text("not a photo")
    (folder / "list.csv").write_text("neither")
    messages = []
    monkeypatch.setattr(app_state, "show_status", lambda text, timeout=0: messages.append(text))
    tab.add_paths([str(folder)])
    qtbot.waitUntil(lambda: not tab.is_busy() and tab.table.rowCount() == 1, timeout=WAIT_MS)
    summary = next(m for m in messages if " classified" in m)
    assert summary.startswith("1 image classified, 0 could not be read, "
                              "2 files skipped (not images), in ")


def _green_image():
    image = QImage(8, 8, QImage.Format.Format_RGB32)
    image.fill(Qt.GlobalColor.darkGreen)
    return image


def _week_old(*paths):
    week_ago = time.time() - 8 * 24 * 3600
    for path in paths:
        os.utime(path, (week_ago, week_ago))


def test_pasted_images_are_kept_while_the_tab_lives_and_removed_after(quick_tab, qtbot,
                                                                      monkeypatch, tmp_path):
    """Pasted images no longer pile up in the temporary folder: a tab's own go when it shuts
    down, a crashed session's when the next tab pastes; another window's stay however long
    ago it pasted, and other programs' files stay."""
    import tempfile

    import engine.classify.jobs as jobs
    from gui.tabs.classify import PastedImages

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(jobs, "classify_job", lambda config, ctx: {"status": "done"})
    other_window = PastedImages()
    assert other_window.save(_green_image())
    root = tmp_path / PastedImages.ROOT
    (root / "pasted-old-version.png").write_bytes(b"png")
    for name in ("session-crashed", "session-first-version", "session-being-made", "theirs"):
        (root / name).mkdir()
    (root / "session-crashed" / PastedImages.LOCK_NAME).write_text("12345\n")
    (root / "session-being-made" / PastedImages.LOCK_NAME).write_bytes(b"")  # not locked yet
    _week_old(root / "pasted-old-version.png", root / "session-first-version", root / "theirs",
              other_window._folder, other_window._folder / PastedImages.LOCK_NAME)
    tab = quick_tab
    for _ in range(2):
        assert tab._add_image_data(_green_image())
        qtbot.waitUntil(lambda: not tab.is_busy(), timeout=WAIT_MS)
    first, second = sorted(p for p in tab.pasted._folder.iterdir() if p.suffix == ".png")
    assert first.is_file() and second.is_file()  # the first row can still show its image
    assert sorted(p.name for p in root.iterdir()) == sorted(
        ["session-being-made", "theirs", other_window._folder.name, tab.pasted._folder.name])
    folder = tab.pasted._folder
    tab.shutdown()
    assert not folder.exists() and other_window._folder.is_dir()
    other_window.remove()


def test_messages_name_the_device_the_job_ran_on_after_a_device_change(quick_tab, qtbot,
                                                                        monkeypatch, app_state,
                                                                        tmp_path):
    """The Device menu changed while a photo was being classified on the CPU: its model's
    'loaded on' and its result's '… ms on' say the CPU, not the device chosen meanwhile."""
    import engine.classify.jobs as jobs

    tab = quick_tab
    device_changed = threading.Event()

    def classify_once_the_device_changed(config, ctx):
        if ctx.device == "cpu":
            device_changed.wait(timeout=WAIT_MS / 1000)
        _fake_load(config, ctx)
        path = config["paths"][0]
        ctx.report({"event": "result", "index": 0, "total": 1,
                    "result": _fake_result(path, prob=0.5)})
        return {"status": "done", "classified": 1, "failed": 0}

    monkeypatch.setattr(jobs, "classify_job", classify_once_the_device_changed)
    shown: list[str] = []
    real_set_text = tab.result_label.setText
    monkeypatch.setattr(tab.result_label, "setText",
                        lambda text: shown.append(text) or real_set_text(text))
    model_notes: list[str] = []
    real_show_model_info = tab._show_model_info
    monkeypatch.setattr(tab, "_show_model_info", lambda info, note="": model_notes.append(note)
                        or real_show_model_info(info, note))
    tab.add_paths([str(tmp_path / "shown.jpg")])
    qtbot.waitUntil(lambda: tab.runner.is_running(), timeout=WAIT_MS)
    app_state.set_device("cuda:0")  # the model is then loaded there
    device_changed.set()
    qtbot.waitUntil(lambda: not tab.is_busy(), timeout=10_000)
    assert [text for text in shown if "shown.jpg" in text][0].endswith(
        " ms on cpu with EfficientNet-Lite0 (offline default)")
    assert model_notes[-2:] == ["loaded on cpu", "loaded on cuda:0"], model_notes


class _HeldImage(QImage):
    """An image whose save waits for ``release`` (a large screenshot being encoded)."""

    def __init__(self, written=True):
        super().__init__(8, 8, QImage.Format.Format_RGB32)
        self.fill(Qt.GlobalColor.darkGreen)
        self.release = threading.Event()
        self.saved_on: threading.Thread | None = None
        self.written = written

    def save(self, path, *args):
        self.saved_on = threading.current_thread()
        if not self.release.wait(timeout=WAIT_MS / 1000):
            return False
        return super().save(path, *args) and self.written


def test_a_pasted_image_is_written_off_the_gui_thread_then_classified(quick_tab, qtbot,
                                                                      monkeypatch, app_state):
    import engine.classify.jobs as jobs

    classified: list[str] = []

    def fake_classify(config, ctx):
        classified.extend(config["paths"])
        ctx.report({"event": "result", "index": 0, "total": 1,
                    "result": _fake_result(config["paths"][0], prob=0.5)})
        return {"status": "done", "classified": 1, "failed": 0}

    monkeypatch.setattr(jobs, "classify_job", fake_classify)
    errors: list[str] = []
    monkeypatch.setattr(app_state, "show_error", lambda title, text: errors.append(text))
    tab = quick_tab
    image = _HeldImage()
    assert tab._add_image_data(image)  # returns while the image is still being written
    qtbot.waitUntil(lambda: image.saved_on is not None, timeout=WAIT_MS)
    assert image.saved_on is not threading.main_thread()
    assert tab.is_busy() and classified == []
    image.release.set()
    qtbot.waitUntil(lambda: not tab.is_busy() and tab.current is not None, timeout=WAIT_MS)
    assert classified == [tab.current["path"]] and os.path.isfile(classified[0])
    assert errors == []

    unwritable = _HeldImage(written=False)
    unwritable.release.set()
    assert tab._add_image_data(unwritable)
    qtbot.waitUntil(lambda: not tab.is_busy(), timeout=WAIT_MS)
    assert len(errors) == 1 and "Cannot save the image" in errors[0]
    assert len(classified) == 1


def test_closing_the_tab_waits_for_a_pasted_image_being_written(quick_tab):
    tab = quick_tab
    image = _HeldImage()
    assert tab._add_image_data(image)
    folder = tab.pasted._folder
    threading.Timer(0.2, image.release.set).start()
    tab.shutdown()  # joins the writer first: its folder is then removed, nothing is left
    assert image.release.is_set() and not any(saver.is_alive() for saver in tab._savers)
    assert not folder.exists()


def test_a_file_name_that_is_not_utf8_keeps_its_answer(quick_tab, qtbot, monkeypatch, tmp_path):
    """Qt's strings drop the undecodable byte of 'caf\\xe9.png': the row still finds its
    answer when clicked (no 'file not found', no second row) and the CSV names the file."""
    import engine.classify.jobs as jobs

    folder = tmp_path / "photos"
    folder.mkdir()
    weird = os.fsdecode(os.fsencode(str(folder)) + b"/caf\xe9.png")
    plain = str(folder / "plain.png")
    for path in (weird, plain):
        with open(path, "wb") as f:
            f.write(b"not read by the fake job")
    classified: list[str] = []

    def fake_classify(config, ctx):
        paths = sorted(os.path.join(p, n) for p in config["paths"] for n in os.listdir(p)) \
            if os.path.isdir(config["paths"][0]) else config["paths"]
        classified.extend(paths)
        for index, path in enumerate(paths):
            ctx.report({"event": "result", "index": index, "total": len(paths),
                        "result": _fake_result(path, prob=0.5)})
        return {"status": "done", "classified": len(paths), "failed": 0, "seconds": 0.1}

    monkeypatch.setattr(jobs, "classify_job", fake_classify)
    tab = quick_tab
    tab.add_paths([str(folder)])
    qtbot.waitUntil(lambda: not tab.is_busy() and tab.table.rowCount() == 2, timeout=WAIT_MS)
    row = next(r for r in range(2) if tab._row_path(r) == weird)
    assert tab.table.item(row, 0).text() == "caf\\xe9.png"
    tab.table.selectRow(row)
    qtbot.waitUntil(lambda: tab.current is not None and tab.current["path"] == weird,
                    timeout=WAIT_MS)
    qtbot.waitUntil(lambda: not tab.is_busy(), timeout=WAIT_MS)
    assert "could not be classified" not in tab.result_label.text()
    # (the row's photo is classified again, for the detail view's images)
    assert tab.table.rowCount() == 2 and set(classified) == {weird, plain}
    csv_path = tmp_path / "results.csv"
    assert tab.export_csv(str(csv_path)) == 2
    text = csv_path.read_text(encoding="utf-8")
    assert "caf\\xe9.png,tabby" in text and "error" not in text.splitlines()[1]
