"""Data for the Linear-fit job: the book's thermometer readings, CSV loading, train/val split.

Importing this module does not import torch, so the GUI can show the data before torch has loaded.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np

from engine.jobs import JobError

# Deep Learning with PyTorch, chapter 5: temperatures in Celsius and the unknown units.
BOOK_T_C = (0.5, 14.0, 15.0, 28.0, 11.0, 8.0, 3.0, -4.0, 6.0, 13.0, 21.0)
BOOK_T_U = (35.7, 55.9, 58.2, 81.9, 56.3, 48.9, 33.9, 21.8, 48.4, 60.4, 68.4)

MIN_POINTS = 2
MAX_CSV_BYTES = 50 * 1024 * 1024
FLOAT32_MAX = 3.4028234663852886e38  # the fit trains in float32


@dataclass(frozen=True)
class FitData:
    """Points to fit, ``y ≈ f(x)``; ``source`` says where they came from (for messages)."""

    x: tuple[float, ...]
    y: tuple[float, ...]
    source: str = "book thermometer readings"

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError("x and y must have the same length")

    def __len__(self) -> int:
        return len(self.x)

    @cached_property
    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) as read-only float64 arrays, made once (100k points take ~10 ms)."""
        x, y = np.array(self.x, dtype=np.float64), np.array(self.y, dtype=np.float64)
        x.flags.writeable = y.flags.writeable = False
        return x, y

    def with_point(self, x: float, y: float) -> FitData:
        edited = FitData((*self.x, float(x)), (*self.y, float(y)), self.source)
        if "arrays" in self.__dict__:
            old_x, old_y = self.arrays
            edited._keep_arrays(np.append(old_x, float(x)), np.append(old_y, float(y)))
        return edited

    def without_point(self, index: int) -> FitData:
        if not 0 <= index < len(self.x):
            raise IndexError(f"no point {index} among {len(self.x)}")
        edited = FitData(self.x[:index] + self.x[index + 1:],
                         self.y[:index] + self.y[index + 1:], self.source)
        if "arrays" in self.__dict__:
            old_x, old_y = self.arrays
            edited._keep_arrays(np.delete(old_x, index), np.delete(old_y, index))
        return edited

    def _keep_arrays(self, x: np.ndarray, y: np.ndarray) -> None:
        """Set :attr:`arrays` from an edited copy of the original's: a click on 2M points then
        copies two arrays (~5 ms) instead of converting 4M floats again (~150 ms)."""
        x.flags.writeable = y.flags.writeable = False
        self.__dict__["arrays"] = (x, y)

    def to_dict(self) -> dict:
        return {"x": list(self.x), "y": list(self.y), "source": self.source}

    @classmethod
    def from_dict(cls, d: dict) -> FitData:
        return cls(tuple(map(float, d["x"])), tuple(map(float, d["y"])), d.get("source", "data"))


def book_data() -> FitData:
    """The 11 readings from the book: x = unknown-unit thermometer (t_u), y = Celsius (t_c)."""
    return FitData(BOOK_T_U, BOOK_T_C)


def load_csv(path: str | Path) -> FitData:
    """Read ``x,y`` rows from a CSV file; raises :class:`JobError` naming the file and line."""
    path = Path(path)
    name = path.name
    try:
        size = path.stat().st_size
        if size > MAX_CSV_BYTES:
            raise JobError(f"{name} is {size / 1e6:.0f} MB; a CSV of x,y points should be smaller")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise JobError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise JobError(f"{path} is a folder, not a CSV file") from None
    except OSError as exc:
        raise JobError(f"cannot read {path}: {exc.strerror or exc}") from None
    return parse_csv_bytes(raw, name)


def parse_csv_bytes(raw: bytes, source: str = "CSV") -> FitData:
    """Decode and parse CSV bytes; binary content is refused with the line it starts on.

    A UTF-16 byte-order mark (Excel's "Unicode text") decodes as UTF-16; other text is UTF-8
    (with or without a BOM), else Windows-1252 or Latin-1 as Excel writes it on Windows, so a
    header such as ``Température`` does not matter as long as the numbers parse.
    """
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            text = raw.decode("utf-16")  # the BOM says which byte order, and is dropped
        except UnicodeDecodeError as exc:
            line = raw[:exc.start].decode("utf-16", errors="replace").count("\n") + 1
            raise JobError(f"{source} line {line}: not valid UTF-16 text, although the file "
                           "starts as UTF-16 does; is this a CSV file of x,y numbers?") from None
        nul = text.find("\0")
        if nul >= 0:
            _refuse_binary(source, text.count("\n", 0, nul) + 1)
        return parse_csv_text(text, source)
    nul = raw.find(b"\0")
    if nul >= 0:
        _refuse_binary(source, raw.count(b"\n", 0, nul) + 1)
    for encoding in ("utf-8-sig", "cp1252"):
        try:
            text = raw.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        text = raw.decode("latin-1")  # every byte is a character
    return parse_csv_text(text, source)


def _refuse_binary(source: str, line: int) -> None:
    raise JobError(f"{source} line {line}: binary data, not a text CSV of x,y numbers")


def parse_csv_text(text: str, source: str = "CSV") -> FitData:
    """Parse ``x,y`` rows (comma, semicolon, tab or space separated; one header line allowed).

    Blank lines and lines starting with ``#`` are skipped. When every line has a semicolon,
    semicolons separate and commas are decimal commas (``1,5;2``), as European spreadsheets
    write it. Likewise when every line has a tab and commas do not split the lines into x,y
    numbers, tabs separate and commas are decimal commas (``1,5<tab>2``).
    """
    lines = text.splitlines()  # \n, \r\n and old Macs' \r
    data_lines = [ln for ln in lines if ln.strip() and not ln.strip().startswith("#")]
    if data_lines and all(";" in ln for ln in data_lines):
        delimiter = ";"
    else:
        delimiter = next((d for d in (",", ";", "\t") if any(d in ln for ln in data_lines)),
                         None)
    try:
        return _parse_rows(lines, delimiter, delimiter == ";", source)
    except JobError as comma_error:
        # "1,5<tab>2": the commas are decimal commas of a tab-separated file. Tried only when
        # the comma reading fails, so every file read with commas before reads the same.
        if delimiter != "," or not all("\t" in ln.strip() for ln in data_lines):
            raise
        try:
            return _parse_rows(lines, "\t", True, source)
        except JobError as tab_error:
            # the reading that got further is the likelier one; on the same line, the tab
            # reading when every line has two tab-separated cells
            two_tab_cells = all(len(ln.strip().split("\t")) == 2 for ln in data_lines)
            tab_further = ((_error_line(tab_error), two_tab_cells)
                           > (_error_line(comma_error), False))
            raise (tab_error if tab_further else comma_error) from None


class _RowError(JobError):
    """A bad row: :attr:`line` is its line number."""

    def __init__(self, message: str, line: int = 0) -> None:
        super().__init__(message)
        self.line = line


def _error_line(error: JobError) -> float:
    """The line a parse failed on; errors about the whole file come after every line."""
    return error.line if isinstance(error, _RowError) else math.inf


def _parse_rows(lines: list[str], delimiter: str | None, decimal_comma: bool,
                source: str) -> FitData:
    """The x,y rows of ``lines`` split at ``delimiter`` (``None``: at whitespace)."""
    xs: list[float] = []
    ys: list[float] = []
    header_allowed = True
    header_seen = False
    for line_no, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if delimiter is None:
            cells = stripped.split()
        else:
            cells = [c.strip() for c in next(csv.reader([stripped], delimiter=delimiter))]
        if len(cells) != 2:
            raise _RowError(
                f"{source} line {line_no}: expected 2 columns x,y but found {len(cells)}"
                f" ({stripped[:40]!r})", line_no
            )
        numbers = [_parse_number(c.replace(",", ".") if decimal_comma else c) for c in cells]
        if header_allowed and all(isinstance(n, str) for n in numbers):
            header_allowed = False  # a header line such as "x,y" or "t_u,t_c"
            header_seen = True
            continue
        header_allowed = False
        for cell, number in zip(cells, numbers, strict=True):
            shown = repr(cell) if len(cell) <= 40 else f"{cell[:40]!r}..."
            if isinstance(number, str):
                raise _RowError(f"{source} line {line_no}: {shown} is not a number", line_no)
            if not math.isfinite(number):
                raise _RowError(
                    f"{source} line {line_no}: {shown} is not a finite number (NaN or infinity)",
                    line_no,
                )
            if abs(number) > FLOAT32_MAX:
                raise _RowError(f"{source} line {line_no}: {shown} is too large (the fit works "
                                f"in float32, up to about 3.4e38)", line_no)
        xs.append(numbers[0])
        ys.append(numbers[1])
    if not xs and header_seen:
        raise JobError(f"{source} has a header but no x,y rows: expected lines of x,y numbers "
                       "below it")
    if not xs:
        raise JobError(f"{source} is empty: expected lines of x,y numbers")
    if len(xs) < MIN_POINTS:
        raise JobError(f"{source} has only {len(xs)} point; a fit needs at least {MIN_POINTS}")
    return FitData(tuple(xs), tuple(ys), source)


def _parse_number(cell: str) -> float | str:
    """The cell as a float, or the cell itself when it is not a number."""
    try:
        return float(cell)
    except ValueError:
        return cell


def split_counts(n_points: int, val_fraction: float) -> tuple[int, int]:
    """(train, val) sizes as the book computes them (``int(fraction * n)``), at least 1 val point
    when the fraction is positive. Raises :class:`JobError` when too few points would train."""
    if not 0.0 <= val_fraction < 1.0:
        raise JobError(f"validation fraction must be in [0, 1), got {val_fraction}")
    n_val = int(val_fraction * n_points)
    if val_fraction > 0:
        n_val = max(1, n_val)
    n_train = n_points - n_val
    if n_train < MIN_POINTS:
        raise JobError(
            f"{n_points} points with validation fraction {val_fraction:g} leave {n_train} to"
            f" train on; use a smaller fraction or more points (at least {MIN_POINTS} must train)"
        )
    return n_train, n_val


def split_indices(n_points: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded ``randperm`` split as in the book: the last ``n_val`` shuffled indices validate.

    Each part is returned in data order, so a run without validation sums its loss in the same
    order as the book's loop (and lands on the same last digits).
    """
    train, val = split_index_arrays(n_points, val_fraction, seed)
    return train.tolist(), val.tolist()


def split_index_arrays(n_points: int, val_fraction: float,
                       seed: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`split_indices` as read-only int64 arrays (2M points: no round trip through 2M
    ints). The last splits are kept: a new run with another learning rate splits the same
    way, and the shuffle of 2M points takes ~50 ms of the GUI thread."""
    return _split_index_arrays(int(n_points), float(val_fraction), int(seed))


@lru_cache(maxsize=2)
def _split_index_arrays(n_points: int, val_fraction: float,
                        seed: int) -> tuple[np.ndarray, np.ndarray]:
    n_train, n_val = split_counts(n_points, val_fraction)
    if n_val == 0:
        train, val = np.arange(n_points), np.arange(0)
    else:
        import torch

        generator = torch.Generator().manual_seed(seed)
        # numpy sorts: this runs on the GUI thread, where torch's thread pool makes a sort of
        # 200k indices take 0.1-0.7 s when the CPU is busy (np.sort: ~1 ms, the same lists)
        shuffled = torch.randperm(n_points, generator=generator).numpy()
        train, val = np.sort(shuffled[:n_train]), np.sort(shuffled[n_train:])
    for part in (train, val):
        part.flags.writeable = False  # shared by every session split alike
    return train, val
