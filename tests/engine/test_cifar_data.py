"""CIFAR data sources, the uint8 cache, class subsets, statistics and clear errors."""

from __future__ import annotations

import hashlib
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.cifar import data as cd
from engine.jobs import JobError, JobStopped
from tests.engine.cifar_helpers import (
    tar_gz_bytes_of,
    write_image_archive,
    write_image_folder,
    write_torchvision_folder,
)


def load(path, tmp_path, **kwargs):
    return cd.load_dataset(path, cache_dir=tmp_path / "cache", **kwargs)


def test_image_folder_decodes_into_uint8_tensors(tmp_path):
    root = write_image_folder(tmp_path / "imgs", n_train=5, n_test=2)
    events = []
    data = load(root, tmp_path, report=events.append)
    assert data.class_names == ["cat", "dog", "ship"]
    assert data.train_images.shape == (15, 3, 32, 32) and data.train_images.dtype == torch.uint8
    assert data.test_images.shape == (6, 3, 32, 32)
    assert data.counts() == {"train": {"cat": 5, "dog": 5, "ship": 5},
                             "test": {"cat": 2, "dog": 2, "ship": 2}}
    # PNG is lossless: the red class really is red
    red = data.train_images[data.train_labels == 0].float().mean(dim=(0, 2, 3))
    assert red[0] > 150 and red[1] < 90 and red[2] < 90
    assert events[-1] == {"phase": "decode", "done": 21, "total": 21}


def test_second_load_comes_from_the_cache(tmp_path):
    root = write_image_folder(tmp_path / "imgs", n_train=2, n_test=1)
    first = load(root, tmp_path)
    events = []
    second = load(root, tmp_path, report=events.append)
    assert [e["phase"] for e in events] == ["cache"]
    assert torch.equal(first.train_images, second.train_images)
    assert list((tmp_path / "cache" / "cifar").glob("*.pt"))


def test_cache_is_rebuilt_when_the_files_change(tmp_path):
    root = write_image_folder(tmp_path / "imgs", n_train=2, n_test=1)
    load(root, tmp_path)
    extra = root / "train" / "cat" / "extra.png"
    (root / "train" / "cat" / "0000.png").rename(extra)
    events = []
    load(root, tmp_path, report=events.append)
    assert events[0]["phase"] == "decode"


def test_cache_ignores_other_files_and_replaces_its_stale_copy(tmp_path):
    root = write_image_folder(tmp_path / "imgs", n_train=2, n_test=1)
    load(root, tmp_path)
    # a checkpoint or notes saved in the data folder change nothing the load reads
    (root / "run.pt").write_bytes(b"checkpoint")
    (root / "train" / "notes.txt").write_text("x")
    events = []
    load(root, tmp_path, report=events.append)
    assert [e["phase"] for e in events] == ["cache"]
    caches = list((tmp_path / "cache" / "cifar").glob("*.pt"))
    legacy = tmp_path / "cache" / "cifar" / f"folder-{'ab' * 12}.pt"  # an older release's name
    legacy.write_bytes(b"old cache")
    (root / "train" / "cat" / "0000.png").unlink()
    load(root, tmp_path)
    assert not legacy.exists()
    # the new contents' cache replaced the old one (each is as large as the dataset)
    now = list((tmp_path / "cache" / "cifar").glob("*.pt"))
    assert len(caches) == len(now) == 1 and caches != now


def test_a_stale_cache_that_cannot_be_deleted_is_left(tmp_path, monkeypatch):
    root = write_image_folder(tmp_path / "imgs", n_train=2, n_test=1)
    load(root, tmp_path)
    (root / "train" / "cat" / "0000.png").unlink()
    real_unlink = cd.Path.unlink

    def refuse(path, missing_ok=False):  # another user's file in a shared cache folder
        if path.suffix == ".pt" and "tmp-" not in path.name:
            raise PermissionError(1, "Operation not permitted")
        real_unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(cd.Path, "unlink", refuse)
    assert load(root, tmp_path).counts()["train"]["cat"] == 1
    assert len(list((tmp_path / "cache" / "cifar").glob("*.pt"))) == 2


def test_a_cache_that_cannot_be_written_still_loads(tmp_path, monkeypatch):
    root = write_image_folder(tmp_path / "imgs", n_train=2, n_test=1)

    def disk_full(obj, f):  # what torch.save raises on a full or read-only disk
        Path(f).write_bytes(b"part")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64")

    monkeypatch.setattr(cd.torch, "save", disk_full)
    updates = []
    assert load(root, tmp_path, report=updates.append).counts()["train"]["cat"] == 2
    assert list((tmp_path / "cache" / "cifar").iterdir()) == []
    notes = [u["message"] for u in updates if u["phase"] == "note"]  # why the next load is slow
    assert len(notes) == 1 and str(tmp_path / "cache" / "cifar") in notes[0]
    assert "TORCHDESK_CACHE_DIR" in notes[0]


def test_load_progress_is_throttled_but_keeps_notes_and_each_steps_end():
    from engine.jobs import JobContext

    updates = []
    relay = cd.load_reporter(JobContext(progress=updates.append, min_interval=3600))
    relay({"phase": "cache", "done": 1, "total": 1})  # a step's end: always shown
    relay({"phase": "decode", "done": 3, "total": 10})  # within the interval: dropped
    relay({"phase": "note", "message": "the cache cannot be written"})
    relay({"phase": "download", "done": 5, "total": 0})  # a size unknown is not an end
    relay({"phase": "decode", "done": 10, "total": 10})
    assert [(u["phase"], u["step_name"], u.get("done")) for u in updates] == [
        ("load", "cache", 1), ("load", "note", None), ("load", "decode", 10)]


def test_a_cache_folder_that_cannot_be_made_is_named_with_the_reason(tmp_path):
    root = write_image_folder(tmp_path / "imgs", n_train=2, n_test=1)
    (tmp_path / "file").write_text("a file where the cache folder would go")
    updates = []
    cd.load_dataset(root, cache_dir=tmp_path / "file", report=updates.append)
    assert [u["phase"] for u in updates].count("note") == 1
    assert "Not a directory" in next(u["message"] for u in updates if u["phase"] == "note")


def test_a_second_ctrl_c_while_the_cache_is_written_leaves_no_partial_file(tmp_path, monkeypatch):
    root = write_image_folder(tmp_path / "imgs", n_train=2, n_test=1)

    def interrupted(obj, f):  # half of a file as large as the dataset, then Ctrl-C
        Path(f).write_bytes(b"part")
        raise KeyboardInterrupt

    monkeypatch.setattr(cd.torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load(root, tmp_path)
    assert list((tmp_path / "cache" / "cifar").iterdir()) == []


def test_cache_dir_with_a_tilde_is_the_home_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    root = write_image_folder(tmp_path / "imgs", n_train=2, n_test=1)
    cd.load_dataset(root, cache_dir="~/tdcache")
    assert list((tmp_path / "home" / "tdcache" / "cifar").glob("*.pt"))
    assert not (tmp_path / "~").exists()


def test_several_datasets_in_one_folder_or_archive_are_refused(tmp_path):
    a = write_image_folder(tmp_path / "holder" / "cifar", n_train=2, n_test=1)
    write_image_folder(tmp_path / "holder" / "cifar-backup", n_train=2, n_test=1)
    with pytest.raises(JobError, match=r"more than one dataset \(cifar, cifar-backup\)"):
        load(tmp_path / "holder", tmp_path)
    assert load(a, tmp_path).class_names == ["cat", "dog", "ship"]
    archive = tmp_path / "two.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for wrap in ("cifar", "cifar-backup"):
            tar.add(tmp_path / "holder" / wrap, arcname=wrap)
    with pytest.raises(JobError, match="more than one dataset .*unpack it"):
        load(archive, tmp_path)


def test_tar_gz_archive_with_a_wrapping_folder(tmp_path):
    root = write_image_folder(tmp_path / "imgs", n_train=3, n_test=2, fmt="jpg")
    archive = write_image_archive(root, tmp_path / "tiny.tar.gz", wrap="cifar10")
    data = load(archive, tmp_path)
    assert data.class_names == ["cat", "dog", "ship"]
    assert len(data.train_labels) == 9 and len(data.test_labels) == 6
    from_folder = load(root, tmp_path)
    # the same JPEG bytes decode to the same pixels either way
    assert torch.equal(data.train_images, from_folder.train_images)


def test_torchvision_folder_with_the_md5_check_off(tmp_path):
    write_torchvision_folder(tmp_path / "tv", per_batch=4)
    data = load(tmp_path / "tv", tmp_path, check_md5=False)
    assert data.class_names == ["cat", "dog", "ship"]
    assert data.train_images.shape == (20, 3, 32, 32)
    assert data.test_images.shape == (4, 3, 32, 32)
    assert data.train_labels.tolist()[:4] == [0, 1, 2, 0]


def test_torchvision_folder_fails_torchvisions_md5_check(tmp_path):
    write_torchvision_folder(tmp_path / "tv")
    with pytest.raises(JobError, match="MD5"):
        load(tmp_path / "tv", tmp_path)


def test_torchvision_archive_is_read_without_unpacking(tmp_path):
    folder = write_torchvision_folder(tmp_path / "tv", per_batch=2)
    archive = tmp_path / "dl" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    archive.write_bytes(tar_gz_bytes_of(folder, "cifar-10-batches-py"))
    data = load(archive, tmp_path)
    assert data.train_images.shape == (10, 3, 32, 32)
    # a browser's "cifar-10-python (1).tar.gz" is recognised by what it holds
    renamed = archive.rename(tmp_path / "dl" / "cifar-10-python (1).tar.gz")
    assert torch.equal(load(renamed, tmp_path).train_images, data.train_images)


def test_download_checks_md5_unpacks_and_reports_progress(tmp_path):
    folder = write_torchvision_folder(tmp_path / "src", per_batch=2)
    payload = tar_gz_bytes_of(folder, "cifar-10-batches-py")
    served = tmp_path / "served.tar.gz"
    served.write_bytes(payload)
    events = []
    target = cd.download_cifar10(tmp_path / "dl", report=events.append, url=served.as_uri(),
                                 md5=hashlib.md5(payload).hexdigest())
    assert target == tmp_path / "dl" / "cifar-10-batches-py"
    assert (target / "test_batch").is_file()
    downloads = [e for e in events if e["phase"] == "download"]
    assert downloads[-1]["done"] == len(payload)
    data = load(tmp_path / "dl", tmp_path, check_md5=False)
    assert data.train_images.shape[0] == 10


def test_download_rejects_a_bad_md5_and_can_be_cancelled(tmp_path):
    served = tmp_path / "served.tar.gz"
    served.write_bytes(b"x" * 200_000)
    with pytest.raises(JobError, match="MD5"):
        cd.download_cifar10(tmp_path / "dl", url=served.as_uri(), md5="0" * 32)
    assert not list((tmp_path / "dl").glob("*.tar.gz"))
    with pytest.raises(JobStopped):
        cd.download_cifar10(tmp_path / "dl2", url=served.as_uri(), md5="0" * 32,
                            stopped=lambda: True)
    assert not list((tmp_path / "dl2").iterdir())


def test_download_failure_is_a_clear_message(tmp_path):
    with pytest.raises(JobError, match="download of CIFAR-10 failed"):
        cd.download_cifar10(tmp_path / "dl", url=(tmp_path / "nothing.tgz").as_uri(), md5="0")


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing", "does not exist"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "no CIFAR data found"),
        (lambda p: (p / "notes.txt").write_text("hi") and p / "notes.txt", "not a folder or"),
    ],
)
def test_missing_or_unknown_paths(tmp_path, make, message):
    with pytest.raises(JobError, match=message):
        load(make(tmp_path), tmp_path)


def test_empty_splits_and_mismatched_classes(tmp_path):
    root = tmp_path / "d"
    (root / "train" / "cat").mkdir(parents=True)
    (root / "test" / "cat").mkdir(parents=True)
    with pytest.raises(JobError, match="no training images"):
        load(root, tmp_path)
    write_image_folder(tmp_path / "m", n_train=1, n_test=1)
    for f in (tmp_path / "m" / "test" / "ship").iterdir():
        f.unlink()
    (tmp_path / "m" / "test" / "ship").rmdir()
    with pytest.raises(JobError, match="different classes"):
        load(tmp_path / "m", tmp_path)


def test_undecodable_image_names_the_file_and_what_to_do(tmp_path):
    root = write_image_folder(tmp_path / "d", n_train=1, n_test=1)
    (root / "train" / "dog" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(JobError, match="broken.jpg.*replace that file .* or remove it"):
        load(root, tmp_path)
    good = next((root / "train" / "cat").iterdir()).read_bytes()
    (root / "train" / "dog" / "broken.jpg").write_bytes(good[: len(good) // 2])  # cut short
    with pytest.raises(JobError, match="broken.jpg.*truncated.*replace that file"):
        load(root, tmp_path)


def test_corrupt_archive_and_corrupt_batch(tmp_path):
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(JobError, match="cannot read the archive 'bad.tar.gz': it is not a"):
        load(bad, tmp_path)
    text = tmp_path / "notes.tar.gz"
    text.write_text("not an archive\n")
    with pytest.raises(JobError) as caught:
        load(text, tmp_path)
    assert str(caught.value) == ("cannot read the archive 'notes.tar.gz': it is not a .tar.gz, "
                                 ".tgz or .tar archive, or it is damaged")
    whole = write_image_archive(write_image_folder(tmp_path / "imgs"), tmp_path / "whole.tar.gz")
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(JobError, match="'cut.tar.gz': the archive ends too early"):
        load(cut, tmp_path)
    folder = write_torchvision_folder(tmp_path / "tv")
    (folder / "data_batch_3").write_bytes(pickle.dumps({"data": np.zeros((2, 5))}))
    with pytest.raises(JobError, match="data_batch_3"):
        load(tmp_path / "tv", tmp_path, check_md5=False)


def test_larger_images_are_resized_to_32(tmp_path):
    from PIL import Image

    root = write_image_folder(tmp_path / "d", n_train=1, n_test=1)
    Image.new("RGB", (64, 48), (10, 20, 30)).save(root / "train" / "cat" / "big.png")
    data = load(root, tmp_path)
    assert data.train_images.shape[1:] == (3, 32, 32)
    assert len(data.train_labels) == 4


def test_photos_decode_as_in_classify_upright_16_bit_and_tiff(tmp_path):
    from PIL import Image

    root = write_image_folder(tmp_path / "d", n_train=1, n_test=1)
    cats = root / "train" / "cat"
    top_white = np.zeros((32, 32, 3), np.uint8)
    top_white[:16] = 255
    # stored sideways (white on the left) with EXIF "rotate 90° clockwise to view"
    sideways = Image.fromarray(np.rot90(top_white).copy())
    exif = Image.Exif()
    exif[0x0112] = 6
    sideways.save(cats / "rotated.jpg", exif=exif, quality=95)
    Image.fromarray(np.full((32, 32), 32768, np.uint16)).save(cats / "deep.png")  # 16-bit grey
    Image.fromarray(np.full((32, 32, 3), 60, np.uint8)).save(cats / "scan.tif")
    (cats / "._0000.png").write_bytes(b"\x00\x05\x16\x07 macOS resource fork")
    data = load(root, tmp_path)
    names = [p.name for p in sorted(cats.iterdir()) if not p.name.startswith(".")]
    images = dict(zip(names, data.train_images[:len(names)].numpy().transpose(0, 2, 3, 1),
                      strict=True))
    upright = images["rotated.jpg"].mean(axis=(1, 2))
    assert upright[:14].min() > 200 and upright[18:].max() < 50  # white on top, as viewed
    assert 126 <= images["deep.png"].min() <= images["deep.png"].max() <= 129  # not clipped
    assert (images["scan.tif"] == 60).all()
    assert len(data.train_labels) == 3 + len(names) - 1


def test_links_in_an_archive_are_images_like_in_the_folder(tmp_path):
    import os

    root = write_image_folder(tmp_path / "d", n_train=2, n_test=1)
    cats = root / "train" / "cat"
    os.link(cats / "0000.png", cats / "hard.png")
    (cats / "soft.png").symlink_to("0001.png")
    (cats / "dangling.png").symlink_to("missing.png")
    archive = write_image_archive(root, tmp_path / "d.tar.gz")
    with tarfile.open(archive) as tar:
        assert {m.name for m in tar.getmembers() if m.islnk() or m.issym()} >= {
            "train/cat/hard.png", "train/cat/soft.png"}
    in_folder, in_archive = load(root, tmp_path), load(archive, tmp_path)
    assert in_folder.counts() == in_archive.counts()
    assert in_archive.counts()["train"]["cat"] == 4
    assert torch.equal(in_folder.train_images, in_archive.train_images)


def test_class_subsets_relabel_in_the_given_order(tmp_path):
    data = load(write_image_folder(tmp_path / "d", n_train=2, n_test=1), tmp_path)
    two = cd.select_classes(data, ["ship", "CAT"])
    assert two.class_names == ["ship", "cat"]
    assert two.train_labels.tolist() == [1, 1, 0, 0]
    assert torch.equal(two.train_images[2], data.train_images[4])  # first ship image
    assert two.test_index.tolist() == [0, 2]
    with pytest.raises(JobError, match="unknown class 'horse'"):
        cd.select_classes(data, ["cat", "horse"])
    with pytest.raises(JobError, match="at least two"):
        cd.select_classes(data, ["cat"])
    with pytest.raises(JobError, match="no classes chosen"):
        cd.select_classes(data, [])  # nothing checked is not "everything"
    with pytest.raises(JobError, match="only once"):
        cd.select_classes(data, ["cat", "CAT"])
    assert cd.parse_classes("cifar2") == ["airplane", "bird"]
    assert cd.parse_classes(" cat , dog ") == ["cat", "dog"]
    assert cd.parse_classes("") is None


def test_channel_stats_match_a_direct_computation():
    images = torch.randint(0, 256, (10, 3, 8, 8), dtype=torch.uint8)
    mean, std = cd.channel_stats(images)
    x = images.double() / 255
    expected_mean = x.mean(dim=(0, 2, 3))
    expected_std = x.permute(1, 0, 2, 3).reshape(3, -1).std(dim=1, unbiased=False)
    assert mean == pytest.approx(expected_mean.tolist(), abs=1e-4)
    assert std == pytest.approx(expected_std.tolist(), abs=1e-4)


def test_channel_stats_of_classes_come_from_their_sums_exactly():
    images = torch.randint(0, 256, (30, 3, 8, 8), dtype=torch.uint8)
    labels = torch.arange(30) % 3
    data = cd.CifarData(images, labels, images[:3], labels[:3], ["cat", "dog", "ship"], "t")
    sums = cd.class_channel_sums(data)
    for chosen in (["cat", "dog"], ["ship", "cat"], ["cat", "dog", "ship"]):
        grouped = cd.stats_from_sums(cd.added_sums([sums[name] for name in chosen]))
        assert grouped == cd.channel_stats(cd.select_classes(data, chosen).train_images)
    # a constant channel's std is floored: normalizing by 0 would make every input NaN
    one_colour = torch.full((2, 3, 4, 4), 7, dtype=torch.uint8)
    assert cd.channel_stats(one_colour)[1] == [cd.MIN_STD] * 3
    assert cd.all_one_colour(cd.channel_sums(one_colour))
    one_colour[0, 1, 0, 0] = 8  # a single other pixel
    assert not cd.all_one_colour(cd.channel_sums(one_colour))
    with pytest.raises(JobError, match="no training images"):
        cd.stats_from_sums(cd.added_sums([]))


def test_sample_grid_gives_hwc_images_per_class(tmp_path):
    data = load(write_image_folder(tmp_path / "d", n_train=4, n_test=1), tmp_path)
    grid = cd.sample_grid(data, per_class=3)
    assert grid["class_names"] == ["cat", "dog", "ship"]
    assert [s.shape for s in grid["samples"]] == [(3, 32, 32, 3)] * 3
    assert grid["counts"]["train"]["dog"] == 4
    assert grid["samples"][1][..., 1].mean() > 150  # dog samples are green


def test_limit_split_keeps_source_indices(tmp_path):
    data = load(write_image_folder(tmp_path / "d", n_train=4, n_test=3), tmp_path)
    small = cd.limit_split(data, 5, 2, seed=1)
    assert len(small.train_labels) == 5 and len(small.test_labels) == 2
    for row, source in enumerate(small.test_index.tolist()):
        assert torch.equal(small.test_images[row], data.test_images[source])


def test_an_archive_in_any_order_is_read_front_to_back(tmp_path, monkeypatch):
    root = write_image_folder(tmp_path / "d", n_train=3, n_test=2)
    archive = tmp_path / "shuffled.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:  # as `tar czf` stores a folder: not by name
        for file in sorted(root.rglob("*.png"), reverse=True):
            tar.add(file, arcname=str(file.relative_to(root)))
    offsets = []
    real_extract = tarfile.TarFile.extractfile

    def extract(self, member):
        offsets.append(member.offset_data)
        return real_extract(self, member)

    monkeypatch.setattr(tarfile.TarFile, "extractfile", extract)
    in_archive = load(archive, tmp_path)
    assert offsets == sorted(offsets) and len(offsets) == 15  # never a step back in the gzip
    in_folder = load(root, tmp_path)
    assert torch.equal(in_folder.train_images, in_archive.train_images)
    assert torch.equal(in_folder.test_labels, in_archive.test_labels)


def test_a_hard_link_stored_before_its_file_is_read(tmp_path):
    root = write_image_folder(tmp_path / "d", n_train=2, n_test=1)
    archive = tmp_path / "early-link.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        link = tarfile.TarInfo("train/cat/0000-again.png")
        link.type, link.linkname = tarfile.LNKTYPE, "train/cat/0000.png"
        tar.addfile(link)
        for file in sorted(root.rglob("*.png")):
            tar.add(file, arcname=str(file.relative_to(root)))
    data = load(archive, tmp_path)
    assert data.counts()["train"]["cat"] == 3
    assert torch.equal(data.train_images[0], data.train_images[1])  # 0000.png, its second name


def test_cancel_ends_a_download_that_the_server_has_stalled(tmp_path, server):
    from tests.engine.conftest import PAYLOAD

    url = server("cifar-10-python.tar.gz", "stalls")
    sent = len(PAYLOAD) // 2
    events = []
    # Cancel once all that was sent has arrived: the read then waits on the silent server
    with pytest.raises(JobStopped):  # not the read's 30 s timeout (a JobError)
        cd.download_cifar10(tmp_path / "dl", report=events.append, md5="0" * 32, url=url,
                            stopped=lambda: bool(events) and events[-1]["done"] >= sent)
    assert not list((tmp_path / "dl").iterdir())  # no partial file left


def test_same_path_sees_through_links_and_dot_dots(tmp_path):
    from engine.cifar.paths import same_path

    (tmp_path / "data").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "data")
    assert same_path(tmp_path / "link", tmp_path / "data" / ".." / "data")
    assert not same_path(tmp_path / "data", tmp_path)


# -- batch files that are not CIFAR data: refused before they can run code


class _RunsCode:
    """What a crafted batch file holds: unpickling it runs a shell command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os
        import shlex

        return os.system, (f"echo PWNED > {shlex.quote(str(self.marker))}",)


REFUSED = ("holds Python objects other than CIFAR-10 data .*refusing to load it "
           r"\(it could run code\)")


@pytest.mark.parametrize("name", ["batches.meta", "data_batch_2", "test_batch"])
def test_a_batch_file_that_would_run_code_is_refused(tmp_path, name):
    marker = tmp_path / "pwned.txt"
    folder = write_torchvision_folder(tmp_path / "tv", per_batch=2)
    if name == "batches.meta":
        evil = _RunsCode(marker)
    else:  # hidden inside an otherwise well-formed batch
        evil = {"data": np.zeros((2, 3072), np.uint8), "labels": [0, 1], "x": _RunsCode(marker)}
    (folder / name).write_bytes(pickle.dumps(evil))
    archive = tmp_path / "evil.tar.gz"
    archive.write_bytes(tar_gz_bytes_of(folder, "cifar-10-batches-py"))
    with pytest.raises(JobError, match=f"'{name}' in 'evil.tar.gz' {REFUSED}"):
        load(archive, tmp_path)
    with pytest.raises(JobError, match=f"'{name}' in '.*tv.cifar-10-batches-py' {REFUSED}"):
        load(tmp_path / "tv", tmp_path, check_md5=False)
    assert not marker.exists()


def test_the_md5_check_covers_batches_meta(tmp_path):
    from torchvision.datasets import CIFAR10

    folder = write_torchvision_folder(tmp_path / "tv", per_batch=2)
    digests = {name: hashlib.md5((folder / name).read_bytes()).hexdigest()
               for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]}
    # batches as torchvision lists them, and a meta file that is not torchvision's
    lists = {"train_list": [[n, digests[n]] for n in digests if n != "test_batch"],
             "test_list": [["test_batch", digests["test_batch"]]]}
    with pytest.MonkeyPatch.context() as mp:
        for attr, value in lists.items():
            mp.setattr(CIFAR10, attr, value)
        with pytest.raises(JobError, match="batches.meta.*does not match torchvision's MD5"):
            load(tmp_path / "tv", tmp_path)


class _Python2Pickler(pickle._Pickler):
    """Writes as Python 2's cPickle wrote torchvision's files: text and bytes as py2 ``str``."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_str(self, obj):
        raw = obj.encode("latin1") if isinstance(obj, str) else bytes(obj)
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + len(raw).to_bytes(4, "little") + raw)

    dispatch[str] = save_py2_str
    dispatch[bytes] = save_py2_str


def _python2_pickle(obj) -> bytes:
    import io

    buffer = io.BytesIO()
    _Python2Pickler(buffer, protocol=2).dump(obj)
    # numpy 1, which made the files, named its module numpy.core
    return buffer.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def test_genuine_format_batches_still_load_as_before(tmp_path):
    import pickletools

    names = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"]
    made = write_torchvision_folder(tmp_path / "made" / "x", per_batch=3)
    expected = load(made.parent, tmp_path, check_md5=False)
    contents = {name: pickle.loads((made / name).read_bytes()) for name in names}
    py2 = tmp_path / "py2" / "cifar-10-batches-py"
    py2.mkdir(parents=True)
    for name, content in contents.items():
        (py2 / name).write_bytes(_python2_pickle(content))
    globals_named = {arg for op, arg, _ in pickletools.genops((py2 / "data_batch_1").read_bytes())
                     if op.name == "GLOBAL"}
    assert globals_named == {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}
    archive = tmp_path / "cifar-10-python.tar.gz"
    archive.write_bytes(tar_gz_bytes_of(py2, "cifar-10-batches-py"))
    sources = [(py2.parent, {"check_md5": False}), (archive, {})]
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):  # re-saved by Python 3, any protocol
        folder = tmp_path / f"p{protocol}" / "cifar-10-batches-py"
        folder.mkdir(parents=True)
        for name, content in contents.items():
            if name != "batches.meta":  # numpy integers as labels, as a re-saved file may have
                content = {**content, "labels": [np.int64(v) for v in content["labels"]]}
            (folder / name).write_bytes(pickle.dumps(content, protocol=protocol))
        sources.append((folder.parent, {"check_md5": False}))
    for source, kwargs in sources:
        data = load(source, tmp_path, **kwargs)
        assert data.class_names == expected.class_names == ["cat", "dog", "ship"]
        for part in ("train_images", "train_labels", "test_images", "test_labels"):
            assert torch.equal(getattr(data, part), getattr(expected, part)), (source, part)


# -- downloading into a folder that cannot be written


def _read_only(monkeypatch, folder: Path, only_suffix: str = ""):
    """Writes and deletes in ``folder`` fail as on a read-only file system (as root, chmod
    stops neither)."""
    real_open, real_unlink = open, cd.Path.unlink

    def refused(path):
        path = Path(path)
        return path.parent == folder and path.name.endswith(only_suffix)

    def open_(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and refused(file):
            raise OSError(30, "Read-only file system", str(file))
        return real_open(file, mode, *args, **kwargs)

    def unlink(path, missing_ok=False):
        if refused(path):
            raise OSError(30, "Read-only file system", str(path))
        real_unlink(path, missing_ok=missing_ok)

    monkeypatch.setattr(cd, "open", open_, raising=False)
    monkeypatch.setattr(cd.Path, "unlink", unlink)


def test_download_into_a_read_only_folder_says_so(tmp_path, monkeypatch, server):
    folder = tmp_path / "ro"
    folder.mkdir()
    _read_only(monkeypatch, folder)
    url = server("cifar-10-python.tar.gz", "good")
    with pytest.raises(JobError) as caught:
        cd.download_cifar10(folder, url=url, md5="0" * 32)
    assert str(caught.value) == (f"cannot write to {folder} (Read-only file system): "
                                 "choose a folder you can write to")
    assert not list(folder.iterdir())


def test_a_partial_download_that_cannot_be_removed_keeps_the_real_error(tmp_path, monkeypatch,
                                                                       server):
    folder = tmp_path / "dl"
    _read_only(monkeypatch, folder, only_suffix=".part")  # the check passes, the download not
    url = server("cifar-10-python.tar.gz", "good")
    with pytest.raises(JobError, match="download of CIFAR-10 failed: .*Read-only file system"):
        cd.download_cifar10(folder, url=url, md5="0" * 32)
