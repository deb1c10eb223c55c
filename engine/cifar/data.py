"""CIFAR-style data: find it, decode it once into a uint8 tensor cache, pick classes, browse it.

Sources (:func:`load_dataset` tells them apart from the path):

* a torchvision-format folder (``cifar-10-batches-py/`` with its pickled batches, or a folder
  holding it), as made by :func:`download_cifar10` or ``torchvision.datasets.CIFAR10``;
* torchvision's ``cifar-10-python.tar.gz`` archive itself;
* an image-folder layout ``train/<class>/*.jpg`` and ``test/<class>/*.jpg``, as a folder or as a
  ``.tar.gz``/``.tgz``/``.tar`` of one (a single wrapping top folder is allowed).

The first load decodes every image into uint8 N×3×32×32 tensors and saves them in the user's cache
folder (or ``TORCHDESK_CACHE_DIR``), keyed by the source's path and the sizes and modification times
of the files it reads (other files beside them, a checkpoint say, do not count); later loads read
that file in about a second, and a new cache for a path replaces the old one. Anything missing,
empty or malformed raises :class:`~engine.jobs.JobError` with a message that says what to fix.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import posixpath
import re
import tarfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.classify.images import IMAGE_SUFFIXES
from engine.downloads import cancel_blocked_reads
from engine.files import remove_quietly, temporary_name
from engine.jobs import JobError, JobStopped

CACHE_FORMAT = 2  # 2: EXIF orientation, 16-bit and transparent images decoded as in Classify
CIFAR2_CLASSES = ("airplane", "bird")
IMAGE_SIZE = 32
LEGACY_CACHE_NAME = re.compile(r"(torchvision|torchvision-archive|folder|archive)-[0-9a-f]{24}\.pt")
TORCHVISION_FOLDER = "cifar-10-batches-py"
TORCHVISION_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TORCHVISION_TEST_BATCH = "test_batch"
TORCHVISION_META = "batches.meta"

Report = Callable[[dict], None]
Stopped = Callable[[], bool]


def _no_report(update: dict) -> None:
    pass


def _never() -> bool:
    return False


@dataclass
class CifarData:
    """Train and test images as uint8 N×3×32×32 CPU tensors with int64 labels into ``class_names``.

    ``train_index``/``test_index`` map each row back to its position in the full source, so
    results (e.g. misclassified test images) can be shown from the unfiltered data.
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    class_names: list[str]
    source: str = ""
    train_index: torch.Tensor | None = field(default=None, repr=False)
    test_index: torch.Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.train_index is None:
            self.train_index = torch.arange(len(self.train_labels))
        if self.test_index is None:
            self.test_index = torch.arange(len(self.test_labels))

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per class in each split: ``{"train": {name: n}, "test": {name: n}}``."""
        out = {}
        for split, labels in (("train", self.train_labels), ("test", self.test_labels)):
            per_class = torch.bincount(labels, minlength=self.num_classes).tolist()
            out[split] = dict(zip(self.class_names, per_class, strict=True))
        return out


# ----------------------------------------------------------------------------- class subsets


def parse_classes(text: str | None) -> list[str] | None:
    """'airplane,bird' → ['airplane', 'bird']; 'cifar2' → the book's airplane-vs-bird pair."""
    if text is None or not text.strip():
        return None
    if text.strip().lower() in {"cifar2", "cifar-2"}:
        return list(CIFAR2_CLASSES)
    return [name.strip() for name in text.split(",") if name.strip()]


def select_classes(data: CifarData, names: list[str] | None) -> CifarData:
    """Keep only ``names`` (in that order; labels become 0..k-1). ``None`` keeps everything."""
    if names is None:
        return data
    old_ids = class_ids(data, names)
    remap = torch.full((data.num_classes,), -1, dtype=torch.int64)
    remap[old_ids] = torch.arange(len(old_ids))

    def pick(images, labels, index):
        keep = remap[labels] >= 0
        return images[keep], remap[labels[keep]], index[keep]

    tr = pick(data.train_images, data.train_labels, data.train_index)
    te = pick(data.test_images, data.test_labels, data.test_index)
    return CifarData(*tr[:2], *te[:2], [data.class_names[i] for i in old_ids], data.source,
                     train_index=tr[2], test_index=te[2])


def class_ids(data: CifarData, names: list[str]) -> list[int]:
    """The indices of the classes ``names`` in ``data`` (checked: known, each once, two or
    more); a name's case may differ where the dataset has only one spelling."""
    if len(names) == 0:
        raise JobError("no classes chosen: choose at least two classes to train a classifier")
    lookup = {name.lower(): i for i, name in enumerate(data.class_names)}
    # exact names first: a dataset may have both "Cat" and "cat"
    lookup.update({name: i for i, name in enumerate(data.class_names)})
    unknown = [name for name in names if name not in lookup and name.lower() not in lookup]
    if unknown:
        raise JobError(
            f"unknown class {', '.join(repr(n) for n in unknown)}; "
            f"this dataset has: {', '.join(data.class_names)}"
        )
    old_ids = [lookup[name] if name in lookup else lookup[name.lower()] for name in names]
    if len(set(old_ids)) != len(names):
        raise JobError("each class may be chosen only once")
    if len(names) < 2:
        raise JobError("choose at least two classes to train a classifier")
    return old_ids


def limit_split(data: CifarData, max_train: int | None, max_test: int | None,
                seed: int = 0) -> CifarData:
    """A random subset of at most ``max_train``/``max_test`` images (for quick runs)."""
    gen = torch.Generator().manual_seed(seed)

    def pick(images, labels, index, limit):
        if not limit or limit >= len(labels):
            return images, labels, index
        keep = torch.randperm(len(labels), generator=gen)[:limit].sort().values
        return images[keep], labels[keep], index[keep]

    tr = pick(data.train_images, data.train_labels, data.train_index, max_train)
    te = pick(data.test_images, data.test_labels, data.test_index, max_test)
    return CifarData(*tr[:2], *te[:2], list(data.class_names), data.source,
                     train_index=tr[2], test_index=te[2])


def channel_sums(images: torch.Tensor) -> dict[str, Any]:
    """Per-channel sums and sums of squares of uint8 N×3×H×W images' values, exact integers,
    and the pixels per channel: what :func:`stats_from_sums` needs, for any group of images
    (several groups' add up to their union's)."""
    sums, squares = torch.zeros(3, dtype=torch.int64), torch.zeros(3, dtype=torch.int64)
    for chunk in images.split(1024):
        x = chunk.to(torch.int64)
        sums += x.sum(dim=(0, 2, 3))
        squares += (x * x).sum(dim=(0, 2, 3))
    pixels = images.shape[0] * images.shape[2] * images.shape[3] if images.ndim == 4 else 0
    return {"sums": sums.tolist(), "squares": squares.tolist(), "pixels": pixels}


def added_sums(groups: list[dict[str, Any]]) -> dict[str, Any]:
    """The :func:`channel_sums` of several groups of images together."""
    return {"sums": [sum(g["sums"][c] for g in groups) for c in range(3)],
            "squares": [sum(g["squares"][c] for g in groups) for c in range(3)],
            "pixels": sum(g["pixels"] for g in groups)}


# The least std normalized by: a channel that spreads less than one grey level of 255 (one
# colour throughout, say) carries next to nothing, and dividing by its spread (0 for a constant
# channel) would blow a stray pixel up to thousands, or make every input NaN. A constant channel
# then normalizes to a constant, and the other channels train as usual.
MIN_STD = 0.0039


def stats_from_sums(sums: dict[str, Any]) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0, 1] units, rounded to 4 places, from :func:`channel_sums`
    (exact integers: the same images give the same numbers however they were grouped); a std
    is at least :data:`MIN_STD`."""
    n = sums["pixels"]
    if not n:
        raise JobError("no training images to compute the mean and standard deviation from")
    mean = [total / (255 * n) for total in sums["sums"]]
    std = [max(round(variance ** 0.5, 4), MIN_STD) for variance in _variances(sums)]
    return [round(v, 4) for v in mean], std


def _variances(sums: dict[str, Any]) -> list[float]:
    """Each channel's variance in [0, 1] units (0 exactly for a constant channel)."""
    n = sums["pixels"]
    # n·Σx² − (Σx)² is exact in integers: never below 0
    return [(square * n - total * total) / (65025 * n * n)
            for total, square in zip(sums["sums"], sums["squares"], strict=True)]


def all_one_colour(sums: dict[str, Any]) -> bool:
    """Whether the images of :func:`channel_sums` are every one a single, shared colour."""
    return bool(sums["pixels"]) and not any(_variances(sums))


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0, 1] units over uint8 N×3×H×W images (the book's numbers)."""
    return stats_from_sums(channel_sums(images))


def class_channel_sums(data: CifarData) -> dict[str, dict[str, Any]]:
    """Each class's :func:`channel_sums` over its training images, by class name."""
    return {name: channel_sums(data.train_images[data.train_labels == k])
            for k, name in enumerate(data.class_names)}


def sample_grid(data: CifarData, per_class: int = 8, seed: int = 0) -> dict:
    """Sample training images per class for a browser grid.

    Returns ``{"class_names", "counts", "samples"}`` where ``samples[k]`` is a uint8 numpy array
    ``n×32×32×3`` (HWC, ready for a QImage) of up to ``per_class`` images of class ``k``.
    """
    gen = torch.Generator().manual_seed(seed)
    samples = []
    for k in range(data.num_classes):
        rows = torch.nonzero(data.train_labels == k).flatten()
        rows = rows[torch.randperm(len(rows), generator=gen)[:per_class]]
        samples.append(data.train_images[rows].permute(0, 2, 3, 1).contiguous().numpy())
    return {"class_names": list(data.class_names), "counts": data.counts(), "samples": samples}


# ----------------------------------------------------------------------------- loading + cache


def default_cache_dir() -> Path:
    """``$TORCHDESK_CACHE_DIR`` or the platform's user cache folder, plus ``cifar``."""
    from engine.cache import cache_root

    return cache_root() / "cifar"


def looks_like_a_dataset(folder: Path) -> bool:
    """Whether a folder holds what :func:`detect_source` looks for (or nearly: a train/ without
    its test/ gets its advice), one level down at most; a folder of photos does not."""
    def dataset_here(place: Path) -> bool:
        return any((place / name).exists() for name in (
            "train", "test", TORCHVISION_FOLDER, "cifar-10-python.tar.gz", TORCHVISION_META,
            TORCHVISION_TRAIN_BATCHES[0], TORCHVISION_TEST_BATCH))

    try:
        return dataset_here(folder) or any(
            child.is_dir() and (child / "train").is_dir() for child in folder.iterdir())
    except OSError:
        return True  # unreadable: the loader says why


def detect_source(path: Path) -> tuple[str, Path]:
    """Return ``(kind, root)`` with kind in {"torchvision", "torchvision-archive", "folder",
    "archive"}; raise JobError when the path holds nothing we can read."""
    if not path.exists():
        raise JobError(f"data path '{path}' does not exist")
    if path.is_file():
        name = path.name.lower()
        if not name.endswith((".tar.gz", ".tgz", ".tar")):
            raise JobError(
                f"'{path.name}' is not a folder or a .tar.gz/.tgz/.tar archive of CIFAR data"
            )
        if name == "cifar-10-python.tar.gz" or _holds_torchvision_batches(path):
            return "torchvision-archive", path
        return "archive", path
    for candidate in (path, path / TORCHVISION_FOLDER):
        if (candidate / TORCHVISION_TEST_BATCH).is_file() or (
            candidate / TORCHVISION_TRAIN_BATCHES[0]
        ).is_file():
            return "torchvision", candidate
    if (path / "train").is_dir() and (path / "test").is_dir():
        return "folder", path
    layouts = [p for p in sorted(path.iterdir())
               if p.is_dir() and (p / "train").is_dir() and (p / "test").is_dir()]
    if len(layouts) > 1:
        raise JobError(_several_datasets(path.name, [p.name for p in layouts]))
    if layouts:
        return "folder", layouts[0]
    if (path / "cifar-10-python.tar.gz").is_file():
        return "torchvision-archive", path / "cifar-10-python.tar.gz"
    for split, other in (("train", "test"), ("test", "train")):
        if (path / split).is_dir() and not (path / other).is_dir():
            raise JobError(f"'{path}' has a {split}/ folder but no {other}/ folder; the image "
                           "layout needs both (train/<class>/*.jpg and test/<class>/*.jpg)")
    raise JobError(
        f"no CIFAR data found in '{path}': expected a torchvision folder "
        f"({TORCHVISION_FOLDER}/) or train/<class>/*.jpg and test/<class>/*.jpg"
    )


def _several_datasets(where: str, names: list[str], archive: bool = False) -> str:
    fix = ("unpack it and give the folder of the one to use" if archive
           else "give the folder of the one to use (with train/ and test/ inside)")
    return f"'{where}' holds more than one dataset ({', '.join(names)}); {fix}"


def _holds_torchvision_batches(archive: Path) -> bool:
    """Whether an archive (under any name) is torchvision's: its first entries lie in
    ``cifar-10-batches-py/``. Only the first headers are read."""
    try:
        with tarfile.open(archive) as tar:
            for _ in range(3):
                member = tar.next()
                if member is None:
                    return False
                if TORCHVISION_FOLDER in Path(member.name).parts:
                    return True
                if member.isfile():
                    return False
    except (tarfile.TarError, OSError, EOFError):
        pass  # the loader says what is wrong with it
    return False


def _source_files(kind: str, root: Path) -> list[Path]:
    """The files a load reads (an archive is one file)."""
    if root.is_file():
        return [root]
    if kind == "torchvision":
        names = (TORCHVISION_META, *TORCHVISION_TRAIN_BATCHES, TORCHVISION_TEST_BATCH)
        return [root / name for name in names if (root / name).is_file()]
    return [file for _split, _cls, file in _image_files(root)]


def _is_image_name(name: str) -> bool:
    """An image by its name; hidden files are not (macOS puts '._photo.jpg' resource forks
    beside photos in archives it makes)."""
    return Path(name).suffix.lower() in IMAGE_SUFFIXES and not name.startswith(".")


def _image_files(root: Path) -> list[tuple[str, str, Path]]:
    """(split, class, file) for each image in an image-folder layout, sorted."""
    entries = []
    for split in ("train", "test"):
        for class_dir in sorted(p for p in (root / split).iterdir() if p.is_dir()):
            for file in sorted(class_dir.iterdir()):
                if _is_image_name(file.name) and file.is_file():
                    entries.append((split, class_dir.name, file))
    return entries


def _cache_name(kind: str, root: Path) -> tuple[str, str]:
    """``(prefix, name)``: the prefix is the same for every cache of this path; the name also
    changes when a file the load reads changes (path, size, modification time)."""
    # "1|": the prefix stays as format 1 made it, so caches of older formats are found and
    # removed as stale; the format is part of the name's hash instead
    where = hashlib.sha256(f"1|{kind}|{root.resolve()}".encode()).hexdigest()[:12]
    h = hashlib.sha256(f"format {CACHE_FORMAT}".encode())
    for file in _source_files(kind, root):
        st = file.stat()
        h.update(f"|{file.relative_to(root) if file != root else ''}|{st.st_size}|"
                 f"{st.st_mtime_ns}".encode())
    prefix = f"{kind}-{where}-"
    return prefix, f"{prefix}{h.hexdigest()[:12]}.pt"


def load_dataset(
    path: str | os.PathLike,
    report: Report = _no_report,
    stopped: Stopped = _never,
    cache_dir: str | os.PathLike | None = None,
    use_cache: bool = True,
    check_md5: bool = True,
) -> CifarData:
    """Load all of a dataset (every class) as uint8 tensors, decoding only the first time.

    ``report`` receives ``{"phase": "decode", "done": i, "total": n}`` while decoding,
    ``{"phase": "cache", ...}`` when reading the cache and ``{"phase": "note", "message": ...}``
    for something the user should know (a cache folder that cannot be written: every load
    decodes again); ``stopped()`` cancels (JobStopped).
    ``check_md5`` verifies torchvision batch files against torchvision's MD5 list.
    """
    path = Path(path).expanduser()
    kind, root = detect_source(path)
    cache_file = None
    if use_cache:
        cache_root = Path(cache_dir).expanduser() / "cifar" if cache_dir else default_cache_dir()
        prefix, name = _cache_name(kind, root)
        cache_file = cache_root / name
        cached = _read_cache(cache_file)
        if cached is not None:
            report({"phase": "cache", "done": 1, "total": 1})
            cached.source = str(root)
            return cached
    if kind == "torchvision":
        data = _load_torchvision_folder(root, check_md5)
    elif kind == "torchvision-archive":
        data = _load_torchvision_archive(root)
    elif kind == "folder":
        data = _load_image_folder(root, report, stopped)
    else:
        data = _load_image_archive(root, report, stopped)
    data.source = str(root)
    if cache_file is not None:
        problem = _write_cache(cache_file, data)
        if problem:  # the data still loads, but the next load decodes it all again
            report({"phase": "note", "message": (
                f"cannot keep the decoded images in '{cache_file.parent}' ({problem}), so every "
                "load decodes them again; set TORCHDESK_CACHE_DIR (headless: --cache-dir) to a "
                "writable folder")})
        _remove_stale_caches(cache_file, prefix)
    return data


def _remove_stale_caches(cache_file: Path, prefix: str) -> None:
    """Delete the caches of this path's earlier contents (each as large as the dataset), and
    those named the way earlier TorchDesk versions named them, which this one never reads.
    A file that cannot be deleted (another user's, say) is left alone."""
    if not cache_file.is_file():
        return
    for old in cache_file.parent.glob("*.pt"):
        stale = old.name.startswith(prefix) or LEGACY_CACHE_NAME.fullmatch(old.name)
        if stale and old != cache_file:
            remove_quietly(old)


def _read_cache(cache_file: Path) -> CifarData | None:
    if not cache_file.is_file():
        return None
    try:
        blob = torch.load(cache_file, map_location="cpu", weights_only=True, mmap=True)
        if blob.get("format") != CACHE_FORMAT:
            return None
        return CifarData(blob["train_images"], blob["train_labels"], blob["test_images"],
                         blob["test_labels"], list(blob["class_names"]))
    except Exception:  # a broken cache is rebuilt, never shown to the user
        return None


def _write_cache(cache_file: Path, data: CifarData) -> str | None:
    """Save the decoded data for later loads; returns why it could not be (None: saved)."""
    blob = {
        "format": CACHE_FORMAT,
        "train_images": data.train_images.contiguous(),
        "train_labels": data.train_labels,
        "test_images": data.test_images.contiguous(),
        "test_labels": data.test_labels,
        "class_names": list(data.class_names),
    }
    tmp = cache_file.with_name(f"{cache_file.name}.tmp-{os.getpid()}")
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        torch.save(blob, tmp)
        os.replace(tmp, cache_file)
    except OSError as exc:
        return exc.strerror or str(exc)
    except RuntimeError:  # torch.save's word for a full or read-only disk
        return "not writable, or the disk is full"
    finally:  # after a failure or a second Ctrl-C: no half-written file as large as the data
        remove_quietly(tmp)
    return None


def _archive_error(what: str, exc: BaseException) -> JobError:
    """One line for a tar problem (tarfile lists every compression it tried, one per line)."""
    if isinstance(exc, tarfile.ReadError) and "opened successfully" in str(exc):
        return JobError(f"{what}: it is not a .tar.gz, .tgz or .tar archive, or it is damaged")
    if isinstance(exc, EOFError):
        return JobError(f"{what}: the archive ends too early (an incomplete download?)")
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    return JobError(f"{what}: {lines[0]}")


# -- torchvision format


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    """What a Python 3 pickle of protocol 0-2 calls to rebuild ``bytes`` (``_codecs.encode``);
    only the Latin-1 codec that pickle itself writes is allowed."""
    if not isinstance(text, str) or encoding.lower().replace("-", "") != "latin1":
        raise pickle.UnpicklingError("_codecs.encode is only allowed with Latin-1 text")
    return text.encode("latin1")


# The globals a CIFAR batch may name: numpy arrays (``_reconstruct`` + ``ndarray`` + ``dtype``,
# as torchvision's Python 2 files have them; ``_frombuffer`` for protocol 5) and numpy integer
# scalars, under numpy 1's ``numpy.core`` and numpy 2's ``numpy._core``. Nothing else: a pickle
# can name any callable (``os.system``) and have it called while it loads.
_BATCH_GLOBALS = frozenset(
    [("numpy", "ndarray"), ("numpy", "dtype")]
    + [(f"{core}.multiarray", name) for core in ("numpy.core", "numpy._core")
       for name in ("_reconstruct", "scalar")]
    + [(f"{core}.numeric", "_frombuffer") for core in ("numpy.core", "numpy._core")]
)


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches (dicts of arrays, lists of ints and strings) and nothing else."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        if (module, name) in _BATCH_GLOBALS:
            return super().find_class(module, name)
        raise _ForeignObject(f"{module}.{name}")


class _ForeignObject(pickle.UnpicklingError):
    pass


def _unpickle_batch(raw: bytes, name: str, where: str) -> dict:
    try:
        batch = _BatchUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except _ForeignObject as exc:
        raise JobError(
            f"'{name}' in '{where}' holds Python objects other than CIFAR-10 data ({exc}); "
            "refusing to load it (it could run code). Use CIFAR-10 from a source you trust, "
            "or download it again"
        ) from None
    except Exception as exc:
        raise JobError(f"'{name}' is not a readable CIFAR batch file ({exc})") from None
    if not isinstance(batch, dict):
        raise JobError(f"'{name}' is not a CIFAR batch file")
    return batch


def _batch_arrays(batch: dict, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    data = batch.get("data")
    labels = batch.get("labels", batch.get("fine_labels"))
    if not isinstance(data, np.ndarray) or labels is None:
        raise JobError(f"'{name}' lacks the 'data'/'labels' entries of a CIFAR batch")
    if data.ndim != 2 or data.shape[1] != 3 * IMAGE_SIZE * IMAGE_SIZE or len(labels) != len(data):
        raise JobError(f"'{name}' has data of shape {data.shape}; expected N×3072 with N labels")
    images = torch.from_numpy(np.ascontiguousarray(data, dtype=np.uint8)).view(
        -1, 3, IMAGE_SIZE, IMAGE_SIZE
    )
    return images.clone(), torch.tensor(list(labels), dtype=torch.int64)


def _assemble_torchvision(read: Callable[[str], bytes | None], where: str) -> CifarData:
    meta_raw = read(TORCHVISION_META)
    if meta_raw is None:
        raise JobError(f"the torchvision folder lacks '{TORCHVISION_META}'")
    meta = _unpickle_batch(meta_raw, TORCHVISION_META, where)
    class_names = [str(n) for n in meta.get("label_names", [])]
    if not class_names:
        raise JobError(f"'{TORCHVISION_META}' lists no class names")
    splits = []
    for names in (TORCHVISION_TRAIN_BATCHES, (TORCHVISION_TEST_BATCH,)):
        images, labels = [], []
        for name in names:
            raw = read(name)
            if raw is None:
                raise JobError(f"the torchvision folder lacks '{name}'")
            x, y = _batch_arrays(_unpickle_batch(raw, name, where), name)
            images.append(x)
            labels.append(y)
        splits.append((torch.cat(images), torch.cat(labels)))
    (trx, try_), (tex, tey) = splits
    for labels in (try_, tey):
        if labels.numel() and (labels.min() < 0 or labels.max() >= len(class_names)):
            raise JobError("the batch files have labels outside the class list in batches.meta")
    return CifarData(trx, try_, tex, tey, class_names)


def _load_torchvision_folder(root: Path, check_md5: bool) -> CifarData:
    if check_md5:
        from torchvision.datasets import CIFAR10
        from torchvision.datasets.utils import check_integrity

        meta = (CIFAR10.meta["filename"], CIFAR10.meta["md5"])
        for name, md5 in [*CIFAR10.train_list, *CIFAR10.test_list, meta]:
            file = root / name
            if file.is_file() and not check_integrity(str(file), md5):
                raise JobError(
                    f"'{file}' does not match torchvision's MD5 checksum (corrupt or not "
                    "CIFAR-10); delete the folder and download it again"
                )

    def read(name: str) -> bytes | None:
        file = root / name
        return file.read_bytes() if file.is_file() else None

    return _assemble_torchvision(read, str(root))


def _load_torchvision_archive(archive: Path) -> CifarData:
    try:
        with tarfile.open(archive) as tar:
            members = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}

            def read(name: str) -> bytes | None:
                member = members.get(name)
                return tar.extractfile(member).read() if member else None

            return _assemble_torchvision(read, archive.name)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise _archive_error(f"cannot read the archive '{archive.name}'", exc) from None


# -- image folders


def _decode_image(raw: bytes, name: str) -> np.ndarray:
    from PIL import Image, ImageOps, UnidentifiedImageError

    from engine.classify.images import EXIF_ORIENTATION, to_rgb  # the same decoding as Classify

    try:
        with Image.open(io.BytesIO(raw)) as img:
            img.load()
            if img.getexif().get(EXIF_ORIENTATION, 1) != 1:
                img = ImageOps.exif_transpose(img)
            img = to_rgb(img)
            if img.size != (IMAGE_SIZE, IMAGE_SIZE):
                img = img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BILINEAR)
            return np.asarray(img, dtype=np.uint8)
    except UnidentifiedImageError:
        raise JobError(f"cannot decode image '{name}': not an image Pillow can read; "
                       f"{_REPLACE_IT}") from None
    except (OSError, ValueError) as exc:
        raise JobError(f"cannot decode image '{name}': {exc}; {_REPLACE_IT}") from None


_REPLACE_IT = "replace that file with a good copy, or remove it from the dataset"


def _split_entries(entries: list[tuple[str, str, object]], where: str):
    """Group (split, class, handle) triples; check both splits exist with the same classes."""
    layout: dict[str, dict[str, list]] = {"train": {}, "test": {}}
    for split, cls, handle in entries:
        layout[split].setdefault(cls, []).append(handle)
    if not layout["train"]:
        raise JobError(f"no training images found in {where} (expected train/<class>/*.jpg)")
    if not layout["test"]:
        raise JobError(f"no test images found in {where} (expected test/<class>/*.jpg)")
    class_names = sorted(layout["train"])
    if sorted(layout["test"]) != class_names:
        only_train = sorted(set(layout["train"]) - set(layout["test"]))
        only_test = sorted(set(layout["test"]) - set(layout["train"]))
        raise JobError(
            f"train/ and test/ in {where} have different classes "
            f"(only in train: {', '.join(only_train) or '-'}; only in test: "
            f"{', '.join(only_test) or '-'}); a class folder without images counts as missing"
        )
    if len(class_names) < 2:
        raise JobError(f"{where} has only one class; a classifier needs at least two")
    return layout, class_names


def _decode_layout(layout, class_names, read_bytes, report: Report, stopped: Stopped,
                   read_key: Callable[[Any], Any] | None = None) -> CifarData:
    """Decode every image into its place: by split, class, then name. ``read_key`` orders the
    reads themselves (an archive's own order: reading a .tar.gz out of order decompresses it
    again from the start for every step back, ~100x slower)."""
    items = []  # (split, position, label, handle)
    sizes = {}
    for split in ("train", "test"):
        position = 0
        for label, cls in enumerate(class_names):
            for handle in sorted(layout[split][cls], key=str):
                items.append((split, position, label, handle))
                position += 1
        sizes[split] = position
    if read_key is not None:
        items.sort(key=lambda item: read_key(item[3]))
    images = {s: np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8) for s, n in sizes.items()}
    labels = {s: np.empty(n, np.int64) for s, n in sizes.items()}
    total = len(items)
    for done, (split, position, label, handle) in enumerate(items):
        if done % 256 == 0:
            if stopped():
                raise JobStopped()
            report({"phase": "decode", "done": done, "total": total})
        raw, name = read_bytes(handle)
        images[split][position] = _decode_image(raw, name)
        labels[split][position] = label
    report({"phase": "decode", "done": total, "total": total})
    arrays = {s: (torch.from_numpy(np.ascontiguousarray(images[s].transpose(0, 3, 1, 2))),
                  torch.from_numpy(labels[s])) for s in sizes}
    return CifarData(*arrays["train"], *arrays["test"], list(class_names))


def _load_image_folder(root: Path, report: Report, stopped: Stopped) -> CifarData:
    layout, class_names = _split_entries(_image_files(root), f"'{root}'")

    def read_bytes(file: Path):
        return file.read_bytes(), str(file)

    return _decode_layout(layout, class_names, read_bytes, report, stopped)


def _links_to_a_file(member: tarfile.TarInfo, files: set[str]) -> bool:
    """A hard or symbolic link to a file in the archive (tar stores a file's second name, or a
    repeated photo, that way); ``tar.extractfile`` reads such links."""
    return (member.islnk() or member.issym()) and _link_target(member) in files


def _link_target(member: tarfile.TarInfo) -> str:
    if member.islnk():  # hard links name their target from the archive's root
        return posixpath.normpath(member.linkname)
    return posixpath.normpath(posixpath.join(posixpath.dirname(member.name), member.linkname))


def _load_image_archive(archive: Path, report: Report, stopped: Stopped) -> CifarData:
    try:
        with tarfile.open(archive) as tar:
            entries = []
            wrappers = set()  # the folders above train/ and test/
            members = tar.getmembers()
            files = {posixpath.normpath(m.name) for m in members if m.isfile()}
            for member in members:
                if not (member.isfile() or _links_to_a_file(member, files)):
                    continue
                parts = Path(member.name).parts
                if parts and parts[0] in (".", ""):
                    parts = parts[1:]
                wrapper = ""
                if len(parts) >= 4 and parts[-3] in ("train", "test"):
                    wrapper, parts = "/".join(parts[:-3]), parts[-3:]
                if len(parts) != 3 or parts[0] not in ("train", "test"):
                    continue
                if _is_image_name(parts[2]):
                    entries.append((parts[0], parts[1], member))
                    wrappers.add(wrapper)
            if len(wrappers) > 1:
                raise JobError(_several_datasets(archive.name,
                                                 sorted(w or "(top level)" for w in wrappers),
                                                 archive=True))
            layout, class_names = _split_entries(entries, f"'{archive.name}'")

            by_name = {posixpath.normpath(m.name): m for m in members if m.isfile()}

            def stored(member):  # a link reads the file it names (looked up once, here)
                return member if member.isfile() else by_name[_link_target(member)]

            def read_bytes(member):
                return (tar.extractfile(stored(member)).read(),
                        f"{archive.name}:{member.name}")

            return _decode_layout(layout, class_names, read_bytes, report, stopped,
                                  read_key=lambda member: stored(member).offset_data)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise _archive_error(f"cannot read the archive '{archive.name}'", exc) from None


# ----------------------------------------------------------------------------- download


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _check_writable(folder: Path) -> None:
    """Raise a clear JobError unless a file can be made in ``folder`` (before any download)."""
    probe = temporary_name(folder / "write-check")
    try:
        with open(probe, "wb") as f:
            f.write(b"")
    except OSError as exc:
        raise JobError(
            f"cannot write to {folder} ({_reason(exc)}): choose a folder you can write to"
        ) from None
    finally:
        remove_quietly(probe)


def download_cifar10(
    folder: str | os.PathLike,
    report: Report = _no_report,
    stopped: Stopped = _never,
    url: str | None = None,
    md5: str | None = None,
) -> Path:
    """Download torchvision's CIFAR-10 archive into ``folder`` and unpack it.

    Reports ``{"phase": "download", "done": bytes, "total": bytes}``; ``stopped()`` cancels
    (the partial file is removed, JobStopped raised). The archive's MD5 is checked with
    torchvision's own list (``url``/``md5`` exist so tests can serve a local archive).
    Returns the ``cifar-10-batches-py`` folder. An already complete folder is reused.
    """
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import check_integrity, extract_archive

    folder = Path(folder).expanduser()
    url = url or CIFAR10.url
    md5 = md5 or CIFAR10.tgz_md5
    target = folder / TORCHVISION_FOLDER
    if (target / TORCHVISION_TEST_BATCH).is_file() and (target / TORCHVISION_META).is_file():
        return target
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise JobError(f"cannot create the download folder '{folder}': {exc}") from None
    _check_writable(folder)
    archive = folder / CIFAR10.filename
    if not check_integrity(str(archive), md5):
        partial = archive.with_name(archive.name + ".part")
        try:
            with urllib.request.urlopen(url, timeout=30) as response, open(partial, "wb") as out, \
                    cancel_blocked_reads(response, stopped):
                total = int(response.headers.get("Content-Length") or 0)
                done = 0
                # read1: whatever has arrived, so a slow line still shows progress
                while chunk := response.read1(1 << 16):
                    if stopped():
                        raise JobStopped()
                    out.write(chunk)
                    done += len(chunk)
                    report({"phase": "download", "done": done, "total": total})
            if stopped():  # the read ended because Cancel shut the connection
                raise JobStopped()
        except JobStopped:
            remove_quietly(partial)
            raise
        except (urllib.error.URLError, OSError, ValueError) as exc:
            remove_quietly(partial)  # never hides the error (a read-only folder refuses it too)
            raise JobError(f"download of CIFAR-10 failed: {exc}") from None
        try:
            os.replace(partial, archive)
        except OSError as exc:
            remove_quietly(partial)
            raise JobError(f"cannot save the download as '{archive}': {_reason(exc)}") from None
        if not check_integrity(str(archive), md5):
            remove_quietly(archive)
            raise JobError("the downloaded CIFAR-10 archive failed its MD5 check; try again")
    report({"phase": "extract", "done": 0, "total": 1})
    try:
        extract_archive(str(archive), str(folder))
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise _archive_error(f"cannot unpack '{archive}'", exc) from None
    report({"phase": "extract", "done": 1, "total": 1})
    return target


# ----------------------------------------------------------------------------- GUI job


def load_reporter(ctx) -> Report:
    """A ``report`` for :func:`load_dataset` and :func:`download_cifar10` that passes their
    updates to the job context ``ctx`` as ``{"phase": "load", "step_name": <their phase>}``,
    throttled; each step's last update and every note always get through."""

    def relay(update):
        finished = "done" in update and update["done"] == update.get("total")
        ctx.throttled_report({**update, "phase": "load", "step_name": update["phase"]},
                             force=finished or update["phase"] == "note")

    return relay


def browse_job(config: dict, ctx) -> dict:
    """Job for the data browser: optionally download, load (decoding once), summarise.

    ``config``: ``path``; ``download`` (bool: fetch torchvision's CIFAR-10 into ``path`` first);
    ``classes`` (optional subset); ``per_class`` (grid size); ``cache_dir``.
    Returns plain data: ``source``, ``class_names`` (all of the source's classes), ``counts``,
    ``samples`` (per-class uint8 HWC numpy arrays), ``mean``/``std`` (of the chosen classes'
    training images), ``class_sums`` (each class's :func:`channel_sums`, for the mean and std
    of any classes: :func:`added_sums`, :func:`stats_from_sums`) and ``test_images`` (every
    test image, uint8 N×32×32×3 numpy, indexed like the trainer's ``misclassified`` lists).
    """

    relay = load_reporter(ctx)
    path = config.get("path")
    if not path:
        raise JobError("choose a dataset folder or archive first")
    if config.get("download"):
        download_cifar10(path, report=relay, stopped=ctx.stopped)
    data = load_dataset(path, report=relay, stopped=ctx.stopped, cache_dir=config.get("cache_dir"))

    def check_stop():  # Cancel also holds after the load (the statistics read every image)
        if ctx.stopped():
            raise JobStopped()

    check_stop()
    class_sums = class_channel_sums(data)
    chosen = (data.class_names if config.get("classes") is None
              else [data.class_names[k] for k in class_ids(data, config["classes"])])
    mean, std = stats_from_sums(added_sums([class_sums[name] for name in chosen]))
    check_stop()
    grid = sample_grid(data, per_class=int(config.get("per_class", 8)))
    check_stop()
    return {
        "source": data.source,
        "class_names": list(data.class_names),
        "counts": data.counts(),
        "samples": grid["samples"],
        "mean": mean,
        "std": std,
        "class_sums": class_sums,
        "test_images": data.test_images.permute(0, 2, 3, 1).contiguous().numpy(),
    }
