"""Finding image files, opening them safely, and the ImageNet-style preprocessing as plain numpy.

Everything here is torch-free so it is cheap to import and safe to run on a thread pool (Pillow
releases the GIL while decoding and resizing). Bad files raise :class:`ImageProblem` with a reason
meant for people; callers list it beside the file and carry on with the rest.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import re
import signal
import sys
import threading
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError, features


def _readable_suffixes() -> frozenset[str]:
    """The image file endings this install's Pillow can decode: AVIF and JPEG 2000 need
    libraries that some Pillow builds lack."""
    suffixes = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".webp", ".bmp", ".dib",
                ".gif", ".tif", ".tiff", ".ppm", ".pgm", ".pbm", ".pnm", ".tga", ".ico", ".qoi"}
    if _pillow_has(features.check_module, "avif"):
        suffixes |= {".avif", ".avifs"}
    if _pillow_has(features.check_codec, "jpg_2000"):
        suffixes |= {".jp2", ".j2k", ".jpf", ".jpx"}
    return frozenset(suffixes)


def _pillow_has(check, feature: str) -> bool:
    try:
        return bool(check(feature))
    except ValueError:  # a Pillow older than the feature (AVIF came with 11.2)
        return False


#: File name endings treated as images when a folder is expanded (files given directly are always
#: tried, whatever their name).
IMAGE_SUFFIXES = _readable_suffixes()


EXIF_ORIENTATION = 0x0112


class ImageProblem(Exception):
    """A file that cannot be classified; the message says why in plain words."""


class NoFinitePixels(ImageProblem, ValueError):
    """A float image whose pixels are all NaN or infinite: nothing to scale, no picture. Also a
    ValueError, which the CIFAR-10 folder loader reports as an undecodable image."""


@dataclass(frozen=True)
class Preprocess:
    """Resize the short side, center-crop, normalize: torchvision's ImageClassification preset."""

    resize_size: int = 256
    crop_size: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    interpolation: str = "bilinear"  # "nearest", "bilinear" or "bicubic"

    def to_dict(self) -> dict:
        return {"resize_size": self.resize_size, "crop_size": self.crop_size,
                "mean": list(self.mean), "std": list(self.std),
                "interpolation": self.interpolation}


_PIL_FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


@dataclass
class PreparedImage:
    """One image ready for the network, plus what the GUI shows beside the answer."""

    path: str
    crop: np.ndarray  # uint8 HxWx3: exactly the pixels the network sees, before normalization
    original_size: tuple[int, int]  # (width, height) after EXIF rotation
    crop_box: tuple[float, float, float, float]  # crop in original pixels: left, top, right, bottom
    thumbnail: np.ndarray | None = None  # uint8 HxWx3, long side <= thumbnail_size


@dataclass
class FoundImages:
    """What :func:`find_images` found: the image files, and the other files in the folders."""

    paths: list[str]
    skipped: list[str]  # files inside the folders given whose names are not images' (notes.txt)


_DIGITS = re.compile(r"([0-9]+)")


def natural_sort_key(name: str) -> tuple:
    """Sort key for file names as file managers order them: runs of digits compared as
    numbers, the rest without regard to case (p2 before p10, 'B' after 'a'); names that
    differ only there (p01, p1; A, a) keep one fixed order."""
    parts = _DIGITS.split(name)  # text, digits, text, …: the same kind at the same place
    return (tuple(int(part) if i % 2 else part.casefold() for i, part in enumerate(parts)),
            name)


def find_images(paths: list[str | os.PathLike]) -> FoundImages:
    """Expand folders (recursively, in natural order: p2 before p10, see
    :func:`natural_sort_key`; images by suffix only) and keep files as given; a file reached
    twice (given, and inside a folder given) is listed once. Hidden files and folders are left
    out without a word; other files that are not images are ``skipped``.

    Missing paths are kept, so they show up in the results with a reason instead of vanishing.
    """
    found: dict[str, str] = {}  # absolute path -> the path as given, in order
    skipped: dict[str, str] = {}
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted((d for d in dirs if not d.startswith(".")),
                                 key=natural_sort_key)
                for name in sorted(files, key=natural_sort_key):
                    if name.startswith("."):
                        continue
                    file = str(Path(root) / name)
                    is_image = Path(name).suffix.lower() in IMAGE_SUFFIXES
                    (found if is_image else skipped).setdefault(os.path.abspath(file), file)
        else:
            found.setdefault(os.path.abspath(path), str(path))
    return FoundImages(list(found.values()),
                       [file for key, file in skipped.items() if key not in found])


def collect_image_paths(paths: list[str | os.PathLike]) -> list[str]:
    """The image files among ``paths`` and in its folders (see :func:`find_images`)."""
    return find_images(paths).paths


def skipped_note(skipped: int) -> str:
    """'3 files skipped (not images)': for status lines and the CLI."""
    if skipped == 1:
        return "1 file skipped (not an image)"
    return f"{skipped} files skipped (not images)"


def _pixel_limit() -> int | None:
    """Pillow's own refusal threshold: twice ``MAX_IMAGE_PIXELS`` (179 MP by default). Between
    the two Pillow only warns, and real photos live there (108 MP phone cameras), so they open."""
    limit = Image.MAX_IMAGE_PIXELS
    return 2 * limit if limit else None


def _check_size(img: Image.Image) -> None:
    limit = _pixel_limit()
    w, h = img.size
    if limit and w * h > limit:
        raise ImageProblem(
            f"image is {w}×{h} ({w * h / 1e6:.0f} megapixels), above the safety limit of "
            f"{limit / 1e6:.0f} megapixels: possibly a decompression bomb"
        )
    if w == 0 or h == 0:
        raise ImageProblem("image has no pixels")


def _finite_only(values: np.ndarray) -> np.ndarray:
    """Float pixels with NaN and infinities replaced, so the image is scaled over its finite
    values alone (one inf pixel used to make the whole picture black); raises
    :class:`NoFinitePixels` when no pixel is finite. All-finite pixels come back untouched."""
    finite = np.isfinite(values)
    if finite.all():
        return values
    if not finite.any():
        raise NoFinitePixels("the image holds no finite pixel values (all NaN or infinite)")
    lo = float(values.min(where=finite, initial=np.inf))
    hi = float(values.max(where=finite, initial=-np.inf))
    # +inf shows as the brightest finite value, -inf as the darkest, NaN as black (the darkest).
    return np.nan_to_num(values, nan=lo, posinf=hi, neginf=lo)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB: alpha over white, 16-bit and float scaled, CMYK converted."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        values = np.asarray(img, dtype=np.float64)
        if mode == "F":
            values = _finite_only(values)
            lo, hi = float(values.min()), float(values.max())
            scaled = (values - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(values)
        else:
            top = 65535.0 if mode.startswith("I;16") or values.max() > 255 else 255.0
            scaled = values / top * 255
        gray = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
        return Image.fromarray(np.stack([gray] * 3, axis=-1), "RGB")
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    elif mode in ("LA", "La", "PA", "RGBa"):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        background = Image.new("RGB", img.size, (255, 255, 255))
        background.paste(img, mask=img.getchannel("A"))
        return background
    return img.convert("RGB")


def _model_file_hint(path: str) -> str:
    """What to do with a model file given as a photo (dropped on Classify, say)."""
    from engine.files import pytorch_file_kind

    try:
        kind = pytorch_file_kind(path)
    except Exception:  # a damaged zip can raise what zipfile pleases: no hint, the error stands
        return ""
    if kind == "torchscript":
        return (": it is a TorchScript model (a net trained on the CIFAR-10 tab goes to Classify "
                "with that tab's \"Use in Classify\")")
    if kind == "torch.save":
        from engine.cifar.checkpoint import is_checkpoint_file

        if is_checkpoint_file(Path(path)):
            return (": it is a TorchDesk CIFAR-10 checkpoint (open it on the CIFAR-10 tab, then "
                    "\"Use in Classify\")")
        return ": it is a PyTorch file (weights load with Import weights…, or --weights headless)"
    return ""


def open_image(path: str | os.PathLike) -> Image.Image:
    """Open any image Pillow reads as upright 8-bit RGB, or raise :class:`ImageProblem`.

    EXIF orientation is applied; animated formats give their first frame.
    """
    return open_image_sized(path)[0]


def open_image_sized(
    path: str | os.PathLike, draft_size: int | None = None
) -> tuple[Image.Image, tuple[int, int]]:
    """Like :func:`open_image`, also returning the full upright size (width, height).

    ``draft_size`` lets the JPEG decoder scale down by 1/2, 1/4 or 1/8 while keeping the short side
    >= ``draft_size`` pixels: several times faster for big photos, with pixels that differ slightly
    from a full decode followed by a resize.
    """
    path = os.fspath(path)
    try:
        if os.path.getsize(path) == 0:
            raise ImageProblem("file is empty")
    except FileNotFoundError:
        raise ImageProblem("file not found") from None
    except OSError as exc:
        raise ImageProblem(f"cannot read file: {exc.strerror or exc}") from None
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:  # closes the file animated formats keep open
                _check_size(img)
                width, height = img.size
                orientation = img.getexif().get(EXIF_ORIENTATION, 1)
                if orientation in (5, 6, 7, 8):
                    width, height = height, width
                if draft_size and img.format == "JPEG":
                    w, h = img.size
                    scale = min(w, h) / draft_size
                    if scale >= 2:
                        img.draft("RGB", (int(w / scale) + 1, int(h / scale) + 1))
                img.load()
                if orientation != 1:  # exif_transpose copies even an upright image: 2 ms a photo
                    img = ImageOps.exif_transpose(img)
                return to_rgb(img), (width, height)
    except ImageProblem:
        raise
    except UnidentifiedImageError:
        raise ImageProblem("not an image Pillow can read" + _model_file_hint(path)) from None
    except Image.DecompressionBombError:
        limit = _pixel_limit()
        raise ImageProblem(
            f"image is above the safety limit of {limit / 1e6:.0f} megapixels: possibly a "
            "decompression bomb"
        ) from None
    except PermissionError:
        raise ImageProblem("permission denied") from None
    except IsADirectoryError:
        raise ImageProblem("is a folder, not an image file") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        text = str(exc) or type(exc).__name__
        if "truncated" in text or isinstance(exc, EOFError):
            raise ImageProblem(f"image file is truncated or damaged ({text})") from None
        raise ImageProblem(f"image cannot be decoded ({text})") from None


MAX_ASPECT = 32  # longer than this many times its width: the middle is cut out first ...
SLIVER_KEEP = 8  # ... this many widths long (resized, 8 × 256 pixels around a 224 crop)


def resized_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """torchvision's ``resize(img, [short_side])`` output size (the long side is truncated)."""
    if width <= height:
        return short_side, int(short_side * height / width)
    return int(short_side * width / height), short_side


def preprocess_image(img: Image.Image, spec: Preprocess) -> tuple[np.ndarray, tuple]:
    """Resize + center-crop exactly like torchvision's preset; returns (uint8 HxWx3, crop box).

    The crop box is in the input image's pixels: (left, top, right, bottom).
    """
    w, h = img.size
    offset_x = offset_y = 0
    if max(w, h) > MAX_ASPECT * min(w, h):
        # A sliver (1×200000, say) resized whole would take gigabytes for a crop of its middle:
        # cut the middle out first, with room to spare around the crop.
        keep = SLIVER_KEEP * min(w, h)
        if w > h:
            offset_x = (w - keep) // 2
            img = img.crop((offset_x, 0, offset_x + keep, h))
        else:
            offset_y = (h - keep) // 2
            img = img.crop((0, offset_y, w, offset_y + keep))
        w, h = img.size
    rw, rh = resized_size(w, h, spec.resize_size)
    resized = img.resize((rw, rh), _PIL_FILTERS[spec.interpolation]) if (rw, rh) != (w, h) else img
    c = spec.crop_size
    if rw < c or rh < c:  # torchvision pads with zeros when the crop is bigger than the image
        canvas = Image.new("RGB", (max(rw, c), max(rh, c)))
        canvas.paste(resized, ((max(rw, c) - rw) // 2, (max(rh, c) - rh) // 2))
        resized, pad_x, pad_y = canvas, (max(rw, c) - rw) // 2, (max(rh, c) - rh) // 2
        rw, rh = resized.size
    else:
        pad_x = pad_y = 0
    top = int(round((rh - c) / 2.0))
    left = int(round((rw - c) / 2.0))
    crop = np.asarray(resized.crop((left, top, left + c, top + c)), dtype=np.uint8)
    sx, sy = w / (rw - 2 * pad_x), h / (rh - 2 * pad_y)
    box = ((left - pad_x) * sx + offset_x, (top - pad_y) * sy + offset_y,
           (left - pad_x + c) * sx + offset_x, (top - pad_y + c) * sy + offset_y)
    return crop, box


def thumbnail_array(img: Image.Image, size: int) -> np.ndarray:
    """A uint8 HxWx3 copy whose long side is at most ``size`` pixels."""
    thumb = img.copy()
    thumb.thumbnail((size, size), Image.Resampling.BILINEAR)
    return np.asarray(thumb, dtype=np.uint8)


def prepare_image(
    path: str | os.PathLike,
    spec: Preprocess,
    fast_decode: bool = False,
    thumbnail_size: int | None = None,
) -> PreparedImage:
    """Open, convert and preprocess one file (thread-safe); raises :class:`ImageProblem`."""
    img, size = open_image_sized(path, draft_size=spec.resize_size if fast_decode else None)
    crop, box = preprocess_image(img, spec)
    scale_x, scale_y = size[0] / img.size[0], size[1] / img.size[1]
    box = (box[0] * scale_x, box[1] * scale_y, box[2] * scale_x, box[3] * scale_y)
    thumb = thumbnail_array(img, thumbnail_size) if thumbnail_size else None
    return PreparedImage(str(path), crop, size, box, thumb)


class Prefetch:
    """Photos decoded ahead, on one worker, while the caller does other work (imports torch).

    :meth:`take` hands over one path's result. Paths the worker has not started by then are
    the caller's to decode (``take`` returns None and the worker never starts them), so nothing
    is decoded twice and the worker never holds up the caller for long.
    """

    def __init__(self, paths: list[str], spec: Preprocess, fast_decode: bool = False,
                 limit: int = 256) -> None:
        self._futures: dict[str, Future] = {}
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
        for path in dict.fromkeys(paths[:limit]):
            self._futures[path] = self._pool.submit(prepare_image, path, spec, fast_decode, None)

    def take(self, path: str) -> PreparedImage | None:
        """The prepared image, its :class:`ImageProblem` raised, or None: decode it yourself."""
        future = self._futures.pop(path, None)
        if future is None or future.cancel():
            return None
        return future.result()

    def close(self) -> None:
        """Stop the worker after its current image and wait for it."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._futures.clear()


class ForkedPrefetch(Prefetch):
    """:class:`Prefetch` in a forked child process, for when the caller holds the GIL a lot.

    Importing torch holds the GIL so much that a decoding thread gets under half a core; a
    process gets a whole one. Fork only while this is the process's only thread and torch is
    not imported yet (see :func:`start_prefetch`). The child takes paths in order; ``take`` of a
    path it has not started moves the cut-off down, so the child stops before that path.
    """

    def __init__(self, paths: list[str], spec: Preprocess, fast_decode: bool = False,
                 limit: int = 256) -> None:
        context = multiprocessing.get_context("fork")
        paths = list(dict.fromkeys(paths[:limit]))
        self._index = {path: i for i, path in enumerate(paths)}
        self._lock = context.Lock()
        self._cutoff = context.RawValue("i", len(paths))  # the child starts no index >= this
        self._started = context.RawValue("i", -1)  # the last index the child started
        self._queue = context.Queue()
        self._process = context.Process(
            target=_prefetch_child, name="torchdesk-prefetch", daemon=True,
            args=(paths, spec, fast_decode, self._lock, self._cutoff, self._started, self._queue))
        self._process.start()
        self._results: dict[int, tuple[PreparedImage | None, str | None]] = {}
        self._arrived = threading.Condition()
        self._child_done = False
        self._reader = threading.Thread(target=self._read, name="prefetch-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                message = self._queue.get(timeout=0.2)
            except queue.Empty:
                if self._process.is_alive():
                    continue
                message = None  # the child died without its last word
            except (EOFError, OSError):
                message = None
            with self._arrived:
                if message is None:
                    self._child_done = True
                else:
                    index, item, problem = message
                    self._results[index] = (item, problem)
                self._arrived.notify_all()
            if message is None:
                return

    def take(self, path: str) -> PreparedImage | None:
        index = self._index.pop(path, None)
        if index is None:
            return None
        with self._lock:
            if self._started.value < index:  # not begun: it and every later path are ours
                self._cutoff.value = min(self._cutoff.value, index)
                return None
        with self._arrived:
            self._arrived.wait_for(lambda: index in self._results or self._child_done)
            item, problem = self._results.pop(index, (None, None))
        if problem is not None:
            raise ImageProblem(problem)
        return item

    def close(self) -> None:
        with self._lock:
            self._cutoff.value = 0
        self._reader.join(timeout=30)
        self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.terminate()
        self._results.clear()
        self._index.clear()


def _prefetch_child(paths, spec, fast_decode, lock, cutoff, started, results) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle (no traceback)
    for index, path in enumerate(paths):
        with lock:
            if index >= cutoff.value:
                break
            started.value = index
        try:
            results.put((index, prepare_image(path, spec, fast_decode, None), None))
        except ImageProblem as exc:
            results.put((index, None, str(exc)))
        except Exception:  # noqa: BLE001 - the parent decodes it again and reports properly
            break
    results.put(None)


def start_prefetch(paths: list[str], spec: Preprocess, fast_decode: bool = False,
                   limit: int = 256) -> Prefetch:
    """Start decoding the first ``limit`` paths on one worker before the model is ready.

    The CLI calls this before importing torch and loading the network (mostly single-threaded
    work), so another core is already decoding photos meanwhile. A forked process where that is
    safe (Linux, no other thread, torch not imported), else a thread. Pass it to
    :meth:`Classifier.classify_files`; ``close()`` it afterwards.
    """
    if (sys.platform.startswith("linux") and threading.active_count() == 1
            and "torch" not in sys.modules):  # macOS frameworks are not fork-safe
        try:
            return ForkedPrefetch(paths, spec, fast_decode, limit)
        except OSError:  # no processes left, say: a thread still helps
            pass
    return Prefetch(paths, spec, fast_decode, limit)
