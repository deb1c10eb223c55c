"""Make a folder of ~300 ordinary-sized JPEG photos from the book's 5 images, for benchmarks.

Each photo is a random crop of a book image, flipped at random and scaled so its long side is
500-2000 px (the book photos are small, so most are upscaled), saved as JPEG quality 85-95.
``python benchmarks/classify_photos.py DIR [--count 300] [--seed 0]``
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from PIL import Image, ImageOps

BOOK_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "images"


def make_photos(directory: Path, count: int = 300, seed: int = 0) -> list[Path]:
    """Write ``count`` derived JPEGs into ``directory`` (reused when already there)."""
    directory.mkdir(parents=True, exist_ok=True)
    existing = sorted(directory.glob("photo_*.jpg"))
    if len(existing) == count:
        return existing
    rng = random.Random(seed)
    sources = [Image.open(p).convert("RGB") for p in sorted(BOOK_IMAGES.iterdir())]
    written = []
    for i in range(count):
        src = sources[i % len(sources)]
        w, h = src.size
        cw, ch = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
        left, top = rng.randint(0, w - cw), rng.randint(0, h - ch)
        img = src.crop((left, top, left + cw, top + ch))
        if rng.random() < 0.5:
            img = ImageOps.mirror(img)
        long_side = rng.randint(500, 2000)
        scale = long_side / max(cw, ch)
        img = img.resize((max(1, round(cw * scale)), max(1, round(ch * scale))), Image.BICUBIC)
        path = directory / f"photo_{i:03d}.jpg"
        img.save(path, quality=rng.randint(85, 95))
        written.append(path)
    return written


def copy_book_photos(directory: Path, count: int = 300) -> list[Path]:
    """The book's 5 images themselves, repeated to ``count`` files (0.07-1.8 MP: small photos,
    where start-up weighs most), named ``*.jpg`` (Pillow reads the PNGs by content)."""
    directory.mkdir(parents=True, exist_ok=True)
    existing = sorted(directory.glob("book_*.jpg"))
    if len(existing) == count:
        return existing
    sources = sorted(BOOK_IMAGES.iterdir())
    written = []
    for i in range(count):
        path = directory / f"book_{i:03d}.jpg"
        path.write_bytes(sources[i % len(sources)].read_bytes())
        written.append(path)
    return written


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    photos = make_photos(args.directory, args.count, args.seed)
    print(f"{len(photos)} photos in {args.directory}")
