"""Tiny CIFAR-like data made inside tests: colour-coded classes that a small net learns fast."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

CLASS_COLOURS = {"cat": (200, 40, 40), "dog": (40, 200, 40), "ship": (40, 40, 200),
                 "Cat": (120, 120, 40)}


def make_images(n: int, colour, seed: int) -> np.ndarray:
    """``n`` uint8 32×32×3 images: a colour plus noise (HWC)."""
    rng = np.random.default_rng(seed)
    base = np.array(colour, dtype=np.int16)[None, None, None, :]
    noise = rng.integers(-40, 41, size=(n, 32, 32, 3), dtype=np.int16)
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def write_image_folder(root: Path, n_train: int = 6, n_test: int = 3,
                       classes=("cat", "dog", "ship"), fmt: str = "png") -> Path:
    """train/<class>/*.png and test/<class>/*.png under ``root``."""
    from PIL import Image

    for split, n in (("train", n_train), ("test", n_test)):
        for k, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i, img in enumerate(make_images(n, CLASS_COLOURS[name], seed=k * 100 + n)):
                Image.fromarray(img).save(folder / f"{i:04d}.{fmt}")
    return root


def write_image_archive(folder: Path, archive: Path, wrap: str | None = None) -> Path:
    """A .tar.gz of an image-folder layout (optionally inside one wrapping folder)."""
    with tarfile.open(archive, "w:gz") as tar:
        for split in ("train", "test"):
            arcname = f"{wrap}/{split}" if wrap else split
            tar.add(folder / split, arcname=arcname)
    return archive


def write_torchvision_folder(root: Path, per_batch: int = 4,
                             classes=("cat", "dog", "ship")) -> Path:
    """A fake ``cifar-10-batches-py`` folder (pickled batches in torchvision's format)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for b, name in enumerate(names):
        labels = [i % len(classes) for i in range(per_batch)]
        images = np.stack([make_images(1, CLASS_COLOURS[classes[k]], seed=b * 10 + i)[0]
                           for i, k in enumerate(labels)])
        data = images.transpose(0, 3, 1, 2).reshape(per_batch, -1)
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, "labels": labels, "batch_label": name}, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": list(classes), "num_cases_per_batch": per_batch}, f)
    return folder


def tar_gz_bytes_of(folder: Path, arcname: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(folder, arcname=arcname)
    return buf.getvalue()


def synthetic_dataset(n_train: int = 96, n_test: int = 48, classes=("cat", "dog", "ship")):
    """A CifarData built in memory (uint8 N×3×32×32)."""
    import torch

    from engine.cifar.data import CifarData

    def split(n, seed):
        images, labels = [], []
        for k, name in enumerate(classes):
            images.append(make_images(n // len(classes), CLASS_COLOURS[name], seed + k))
            labels += [k] * (n // len(classes))
        x = torch.from_numpy(np.concatenate(images).transpose(0, 3, 1, 2).copy())
        return x, torch.tensor(labels)

    return CifarData(*split(n_train, 1), *split(n_test, 50), list(classes), source="memory")
