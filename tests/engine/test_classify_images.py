"""Opening every kind of image the Classify tab accepts, and the plain reasons for bad files."""

from __future__ import annotations

import gc
import json
import struct
import threading
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image, features

from engine.classify.images import (
    ImageProblem,
    Preprocess,
    collect_image_paths,
    find_images,
    natural_sort_key,
    open_image,
    prepare_image,
    preprocess_image,
    skipped_note,
)
from tests.conftest import BOOK_IMAGES, needs_book_photos


def _save(img: Image.Image, path, **kwargs):
    img.save(path, **kwargs)
    return path


def test_rgba_transparency_goes_over_white(tmp_path):
    img = Image.new("RGBA", (40, 30), (255, 0, 0, 0))  # fully transparent red
    img.paste((0, 0, 255, 255), (0, 0, 20, 30))  # opaque blue left half
    rgb = open_image(_save(img, tmp_path / "a.png"))
    assert rgb.mode == "RGB"
    assert rgb.getpixel((5, 5)) == (0, 0, 255)
    assert rgb.getpixel((35, 5)) == (255, 255, 255)


def test_grayscale_palette_and_cmyk_convert_to_rgb(tmp_path):
    gray = open_image(_save(Image.new("L", (8, 8), 77), tmp_path / "g.png"))
    assert gray.getpixel((0, 0)) == (77, 77, 77)
    palette = Image.new("RGB", (8, 8), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE)
    assert open_image(_save(palette, tmp_path / "p.png")).getpixel((1, 1)) == (10, 200, 30)
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red in CMYK
    r, g, b = open_image(_save(cmyk, tmp_path / "c.jpg", quality=95)).getpixel((4, 4))
    assert r > 240 and g < 15 and b < 15


def test_sixteen_bit_grayscale_is_scaled_not_clipped(tmp_path):
    values = np.full((6, 6), 32768, dtype=np.uint16)  # half of the 16-bit range
    img = Image.fromarray(values)
    path = _save(img, tmp_path / "deep.png")
    assert Image.open(path).mode.startswith("I")
    r, g, b = open_image(path).getpixel((0, 0))
    assert r == g == b and abs(r - 128) <= 1


def test_gif_first_frame_webp_bmp_tiff(tmp_path):
    red = Image.new("RGB", (16, 16), (255, 0, 0))
    blue = Image.new("RGB", (16, 16), (0, 0, 255))
    gif = tmp_path / "anim.gif"
    red.save(gif, save_all=True, append_images=[blue], duration=100)
    r, g, b = open_image(gif).getpixel((8, 8))
    assert r > 200 and b < 50
    for suffix in ("webp", "bmp", "tiff"):
        path = _save(blue, tmp_path / f"x.{suffix}", **({"lossless": True} if suffix == "webp"
                                                         else {}))
        assert open_image(path).getpixel((8, 8)) == (0, 0, 255)


def test_opening_leaves_no_file_open(tmp_path):
    """Animated images keep their file open after load, and so do failures: a folder of
    thousands of photos must not wait for the garbage collector to close them."""
    gif = tmp_path / "anim.gif"
    Image.new("RGB", (16, 16), "red").save(
        gif, save_all=True, append_images=[Image.new("RGB", (16, 16), "blue")])
    cut = tmp_path / "cut.png"
    _save(Image.new("RGB", (64, 64), "green"), tmp_path / "whole.png")
    cut.write_bytes((tmp_path / "whole.png").read_bytes()[:60])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        opened = open_image(gif)
        assert opened.getpixel((8, 8))[0] > 200  # the frame is kept when its file is closed
        del opened
        with pytest.raises(ImageProblem):
            open_image(cut)
        gc.collect()
    assert [str(w.message) for w in caught if w.category is ResourceWarning] == []


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (60, 20), (0, 255, 0))
    img.paste((255, 0, 0), (0, 0, 10, 20))  # red strip on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    path = _save(img, tmp_path / "rotated.jpg", exif=exif, quality=95)
    upright = open_image(path)
    assert upright.size == (20, 60)
    r, g, _ = upright.getpixel((10, 3))  # the red strip is now on top
    assert r > 200 and g < 60
    prepared = prepare_image(path, Preprocess(), thumbnail_size=32)
    assert prepared.original_size == (20, 60)


def _png_header_only(path, width, height):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda d: (d / "notes.jpg").write_text("hello, not a photo") and d / "notes.jpg",
         "not an image"),
        (lambda d: (d / "empty.png").write_bytes(b"") or d / "empty.png", "empty"),
        (lambda d: d / "missing.jpg", "not found"),
        (lambda d: _png_header_only(d / "bomb.png", 60000, 60000), "decompression bomb"),
        (lambda d: (d / "folder.jpg").mkdir() or d / "folder.jpg", "folder"),
    ],
)
def test_bad_files_get_plain_reasons(tmp_path, make, reason):
    path = make(tmp_path)
    with pytest.raises(ImageProblem, match=reason):
        open_image(path)


@needs_book_photos
def test_truncated_jpeg_is_reported(tmp_path):
    data = (BOOK_IMAGES / "bobby.jpg").read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageProblem, match="truncated"):
        open_image(path)


def test_pillow_pixel_limit_is_respected(tmp_path, monkeypatch):
    path = _save(Image.new("RGB", (100, 100)), tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 4000)  # Pillow refuses above 8000 pixels
    with pytest.raises(ImageProblem, match="safety limit of 0 megapixels"):
        open_image(path)
    # Between the limit and twice it Pillow only warns: such photos (108 MP cameras) open.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 6000)
    assert open_image(path).size == (100, 100)


@needs_book_photos
def test_preprocess_matches_torchvision_preset_exactly():
    from torchvision.models import ResNet50_Weights

    preset = ResNet50_Weights.IMAGENET1K_V2.transforms()  # resize 232, crop 224, bilinear
    spec = Preprocess(232, 224, tuple(preset.mean), tuple(preset.std), "bilinear")
    for name in ("bobby.jpg", "horse.jpg", "cat1.png"):
        img = open_image(BOOK_IMAGES / name)
        crop, box = preprocess_image(img, spec)
        expected = preset(img)  # float, normalized
        ours = (np.asarray(crop, np.float32).transpose(2, 0, 1) / 255 - np.array(
            preset.mean, np.float32)[:, None, None]) / np.array(preset.std, np.float32)[:, None,
                                                                                        None]
        assert np.abs(ours - expected.numpy()).max() < 1e-5
        left, top, right, bottom = box
        assert 0 <= left < right <= img.size[0] and 0 <= top < bottom <= img.size[1]


def test_a_sliver_is_cut_to_its_middle_before_resizing():
    from torchvision.transforms import v2

    gradient = np.linspace(0, 255, 1500, dtype=np.float32).astype(np.uint8)
    img = Image.fromarray(np.stack([gradient] * 3, axis=-1)[:, None, :].repeat(3, axis=1))
    spec = Preprocess(256, 224)  # a 3×1500 image would be resized to 256×128000 whole
    crop, box = preprocess_image(img, spec)
    preset = v2.Compose([v2.Resize(256), v2.CenterCrop(224)])
    expected = np.asarray(preset(img))
    assert crop.shape == expected.shape and np.abs(crop.astype(int) - expected).max() <= 1
    assert box[1] == pytest.approx(750 - 224 / 2 * 3 / 256, abs=0.2)
    wide = Image.new("RGB", (200000, 1), (9, 9, 9))  # resized whole: 51 million × 256 pixels
    assert preprocess_image(wide, spec)[0].shape == (224, 224, 3)


def test_small_images_are_padded_like_torchvision():
    img = Image.new("RGB", (50, 100), (200, 10, 10))
    crop, _ = preprocess_image(img, Preprocess(20, 24))  # crop larger than the resized image
    assert crop.shape == (24, 24, 3)
    assert tuple(crop[12, 0]) == (0, 0, 0) and tuple(crop[12, 12]) == (200, 10, 10)


def test_collect_image_paths_expands_folders_sorted(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    for name in ("b.jpg", "a.PNG", "sub/c.webp", "readme.txt", ".hidden.jpg"):
        (tmp_path / name).write_bytes(b"x")
    found = collect_image_paths([tmp_path, tmp_path / "readme.txt"])
    names = [p.replace(str(tmp_path) + "/", "") for p in found]
    assert names == ["a.PNG", "b.jpg", "sub/c.webp", "readme.txt"]

    # a photo reached twice (given, and in a folder given) is listed once, as first reached
    monkeypatch.chdir(tmp_path)
    assert collect_image_paths(["b.jpg", tmp_path, str(tmp_path / "b.jpg")])[:2] == [
        "b.jpg", str(tmp_path / "a.PNG")]
    assert len(collect_image_paths(["b.jpg", tmp_path])) == 3


NATURAL_ORDER = ["p0.png", "p1.png", "P2.png", "p3.png", "p10.png", "p11.png", "p100.png",
                 "photo 2 copy.png", "photo 10.png", "Photo 11.png"]


def _tiny_photos(folder, names) -> None:
    folder.mkdir(exist_ok=True)
    for name in names:
        Image.new("RGB", (8, 8), (len(name) * 20 % 256, 90, 30)).save(folder / name)


def test_folders_are_listed_in_natural_order(tmp_path):
    """As file managers list them: numbers compared as numbers (p2 before p10), without regard
    to case; folders too (shots 9 before shots 10)."""
    _tiny_photos(tmp_path, reversed(NATURAL_ORDER))
    _tiny_photos(tmp_path / "shots 10", ["x.png"])
    _tiny_photos(tmp_path / "shots 9", ["x.png"])
    names = [p.replace(str(tmp_path) + "/", "") for p in collect_image_paths([tmp_path])]
    assert names == [*NATURAL_ORDER, "shots 9/x.png", "shots 10/x.png"]
    assert find_images([tmp_path]).paths == [str(tmp_path / n) for n in names]


def test_natural_sort_key_orders_names_that_differ_only_in_case_or_zeros():
    names = ["p1.jpg", "P1.jpg", "p01.jpg", "p001.jpg", "p1.JPG", "p2.jpg", "a10b2", "a10b10"]
    ordered = sorted(names, key=natural_sort_key)
    assert ordered == ["a10b2", "a10b10", "P1.jpg", "p001.jpg", "p01.jpg", "p1.JPG", "p1.jpg",
                       "p2.jpg"]
    assert sorted(reversed(names), key=natural_sort_key) == ordered  # one order, however given


def test_cli_lists_a_folder_in_natural_order(tmp_path, capsys):
    from engine.cli import main

    _tiny_photos(tmp_path, reversed(NATURAL_ORDER))
    assert main(["classify", str(tmp_path), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [entry["path"] for entry in printed] == [str(tmp_path / n) for n in NATURAL_ORDER]


def test_files_in_a_folder_that_are_not_images_are_counted_as_skipped(tmp_path):
    """notes.txt in a folder is skipped and said so; hidden files are not worth a word, and a
    file given by name is tried, not skipped."""
    (tmp_path / "sub").mkdir()
    for name in ("a.jpg", "notes.txt", "sub/data.csv", ".DS_Store", "given.txt"):
        (tmp_path / name).write_bytes(b"x")
    found = find_images([tmp_path, tmp_path / "given.txt"])
    assert found.paths == [str(tmp_path / n) for n in ("a.jpg", "given.txt")]
    assert found.skipped == [str(tmp_path / n) for n in ("notes.txt", "sub/data.csv")]
    assert (skipped_note(1), skipped_note(2)) == ("1 file skipped (not an image)",
                                                  "2 files skipped (not images)")


PREFETCH_CHECK = r"""
import sys
import time
from engine.classify.images import (ForkedPrefetch, ImageProblem, Preprocess, prepare_image,
                                    start_prefetch)

paths = sys.argv[1:]
spec = Preprocess()
prefetch = start_prefetch(paths, spec)
assert isinstance(prefetch, ForkedPrefetch), type(prefetch)
assert "torch" not in sys.modules
deadline = time.monotonic() + 30
while prefetch._started.value < len(set(paths)) - 1 and time.monotonic() < deadline:
    time.sleep(0.01)  # let the child begin every path (a path it has not begun is ours)
first = prefetch.take(paths[0])  # waits for the child's result
assert first is not None and (first.crop == prepare_image(paths[0], spec).crop).all()
assert first.original_size == prepare_image(paths[0], spec).original_size
try:
    prefetch.take(paths[1])
    raise SystemExit("a bad file must raise its ImageProblem")
except ImageProblem as exc:
    print("problem:", exc)
assert prefetch.take("not/prefetched.jpg") is None
prefetch.close()
assert prefetch.take(paths[2]) is None  # after close: the caller decodes it

crashed = start_prefetch(paths, spec)  # a child that dies leaves its paths to the caller
crashed._process.kill()
crashed._process.join()
for path in paths:
    try:
        crashed.take(path)
    except ImageProblem:
        pass
crashed.close()
print("ok")
"""


@needs_book_photos
def test_forked_prefetch_hands_over_decoded_images_and_problems(tmp_path):
    """The CLI decodes the first photos in a forked process while torch imports; what it hands
    over equals a direct decode, bad files raise their reason, and after close() nothing hangs."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    paths = [str(BOOK_IMAGES / "bobby.jpg"), str(bad)] + [str(BOOK_IMAGES / "horse.jpg")] * 3
    out = subprocess.run([sys.executable, "-c", PREFETCH_CHECK, *paths], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "problem: not an image" in out.stdout and out.stdout.strip().endswith("ok")


def test_prefetch_leaves_unstarted_paths_to_the_caller(tmp_path, monkeypatch):
    """A path the worker has not begun is the caller's: take() gives None and the worker skips
    it, so no photo is decoded twice; a thread is used where forking is not safe (here: torch
    is imported)."""
    import torch  # noqa: F401  (with torch loaded a thread is used, whatever tests ran before)

    import engine.classify.images as images

    paths = [str(_save(Image.new("RGB", (300, 200), (i, 0, 0)), tmp_path / f"{i}.png"))
             for i in range(40)]
    first_may_finish = threading.Event()
    decode = images.prepare_image

    def held_on_the_first(path, *args):
        if path == paths[0]:  # keep the worker on the first photo until the caller has asked
            first_may_finish.wait(30)
        return decode(path, *args)

    monkeypatch.setattr(images, "prepare_image", held_on_the_first)
    prefetch = images.start_prefetch(paths, Preprocess())
    try:
        assert type(prefetch) is images.Prefetch
        late = prefetch.take(paths[-1])
        first_may_finish.set()
        early = prefetch.take(paths[0])
    finally:
        first_may_finish.set()
        prefetch.close()
    assert late is None
    assert early is not None and early.crop[0, 0, 0] == 0


def test_image_suffixes_are_formats_this_pillow_opens():
    from engine.classify.images import IMAGE_SUFFIXES

    opened = {ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}
    assert IMAGE_SUFFIXES <= opened


@pytest.mark.skipif(not features.check_module("avif"), reason="this Pillow has no AVIF support")
def test_avif_photos_in_a_folder_are_classified_not_skipped(tmp_path):
    folder = tmp_path / "phone"
    folder.mkdir()
    Image.new("RGB", (32, 24), (0, 0, 255)).save(folder / "IMG_0001.avif", quality=90)
    Image.new("RGB", (32, 24), (0, 0, 255)).save(folder / "IMG_0002.AVIF", quality=90)
    found = collect_image_paths([folder])
    assert [p.rsplit("/", 1)[-1] for p in found] == ["IMG_0001.avif", "IMG_0002.AVIF"]
    r, g, b = open_image(found[0]).getpixel((16, 12))
    assert b > 200 and r < 50


def test_a_pillow_that_does_not_know_avif_still_lists_the_other_suffixes(monkeypatch):
    """Pillow before 11.2 raises ValueError for a feature it does not know, not False."""
    from PIL import features

    from engine.classify import images

    def unknown(feature):
        raise ValueError(f"Unknown module {feature}")

    monkeypatch.setattr(features, "check_module", unknown)
    suffixes = images._readable_suffixes()
    assert ".jpg" in suffixes and ".avif" not in suffixes


def test_a_model_file_given_as_a_photo_says_what_it_is_and_where_it_goes(tmp_path):
    import torch

    weights, scripted, text = tmp_path / "w.pth", tmp_path / "model.pt", tmp_path / "notes.jpg"
    torch.save({"fc.weight": torch.zeros(2, 2)}, weights)
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), scripted)
    text.write_text("not a photo")
    with pytest.raises(ImageProblem, match="PyTorch file .*Import weights"):
        open_image(weights)
    with pytest.raises(ImageProblem, match="TorchScript model .*Use in Classify"):
        open_image(scripted)
    with pytest.raises(ImageProblem, match="^not an image Pillow can read$"):
        open_image(text)
    from engine.cifar.checkpoint import CHECKPOINT_FORMAT

    checkpoint = tmp_path / "run.ckpt"  # what the CIFAR-10 tab saves: not weights to import
    torch.save({"format": CHECKPOINT_FORMAT, "model_state": {}}, checkpoint)
    with pytest.raises(ImageProblem, match="TorchDesk CIFAR-10 checkpoint .*CIFAR-10 tab, then "
                                           "\"Use in Classify\""):
        open_image(checkpoint)


def test_a_file_that_breaks_the_model_file_check_is_still_just_not_an_image(tmp_path,
                                                                            monkeypatch):
    import zipfile

    def unsupported(*_args, **_kwargs):
        raise NotImplementedError("zip file version 9.9")  # what zipfile says of some zips

    monkeypatch.setattr(zipfile, "ZipFile", unsupported)
    odd = tmp_path / "odd.jpg"
    odd.write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(ImageProblem, match="^not an image Pillow can read$"):
        open_image(odd)


# -- float images with NaN or infinite pixels


def _float_tiff(path, values: np.ndarray):
    img = Image.fromarray(values.astype(np.float32), mode="F")
    img.save(path)
    assert Image.open(path).mode == "F"
    return path


def _gradient() -> np.ndarray:
    return np.tile(np.linspace(-3.0, 5.0, 40, dtype=np.float32), (30, 1))


def _gray(path) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning from the scaling reaches the user
        rgb = np.array(open_image(path))
    assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 0] == rgb[..., 2]).all()
    return rgb[..., 0]


def test_an_ordinary_float_image_is_scaled_over_its_range(tmp_path):
    values = _gradient()
    gray = _gray(_float_tiff(tmp_path / "f.tif", values))
    expected = np.rint((values.astype(np.float64) + 3.0) / 8.0 * 255).astype(np.uint8)
    assert (gray == expected).all()


@pytest.mark.parametrize("bad, shown", [(np.inf, 255), (-np.inf, 0), (np.nan, 0)])
def test_one_non_finite_pixel_leaves_the_rest_of_a_float_image_as_it_was(tmp_path, bad, shown):
    """One inf pixel used to make the whole picture black: the image is scaled over its finite
    pixels, and the bad pixel shows as the nearest end of that range (NaN as black)."""
    values = _gradient()
    clean = _gray(_float_tiff(tmp_path / "clean.tif", values))
    values[7, 11] = bad
    gray = _gray(_float_tiff(tmp_path / "bad.tif", values))
    assert gray[7, 11] == shown
    gray[7, 11] = clean[7, 11]
    assert (gray == clean).all()
    assert clean.min() == 0 and clean.max() == 255


@pytest.mark.parametrize("fill", [np.nan, np.inf, "mixed"])
def test_a_float_image_without_one_finite_pixel_is_a_clear_problem(tmp_path, fill):
    values = np.full((12, 10), np.nan if fill == "mixed" else fill, dtype=np.float32)
    if fill == "mixed":
        values[0, :5], values[1, :5] = np.inf, -np.inf
    path = _float_tiff(tmp_path / "none.tif", values)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageProblem, match="the image holds no finite pixel values"):
            prepare_image(path, Preprocess())
        with pytest.raises(ValueError, match="no finite pixel"):  # what the CIFAR loader catches
            open_image(path)


def test_the_cli_reports_an_all_nan_image_on_its_row_and_classifies_the_rest(tmp_path, capsys):
    from engine.cli import main

    values = _gradient()
    values[2, 3] = np.inf
    good = _float_tiff(tmp_path / "a.tif", values)
    bad = _float_tiff(tmp_path / "b.tif", np.full((8, 8), np.nan))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        main(["classify", str(good), str(bad), "--json"])
    printed = {entry["path"]: entry for entry in json.loads(capsys.readouterr().out)}
    assert "no finite pixel values" in json.dumps(printed[str(bad)])
    assert "no finite" not in json.dumps(printed[str(good)])
