"""Batched, parallel image classification with a loaded model; results are plain data.

:class:`Classifier` wraps a :class:`~engine.classify.zoo.LoadedModel`. ``classify_file`` answers one
photo quickly (the GUI's drop); ``classify_files`` streams results for many: a thread pool decodes
and preprocesses (Pillow releases the GIL) while the main thread runs batches under
``torch.inference_mode()`` in channels_last memory layout, optionally under bf16/fp16 autocast.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from engine.classify import script_cache
from engine.classify.images import ImageProblem, Prefetch, PreparedImage, prepare_image
from engine.classify.load_stages import LoadStages
from engine.classify.zoo import LoadedModel, numbered_categories
from engine.devices import true_fp32
from engine.jobs import JobError, JobStopped

PRECISIONS = ("fp32", "auto", "bf16", "fp16")
CPU_CHUNK = 4  # images per forward when each CPU core classifies its own chunks
#: Models up to this many parameters get a frozen, oneDNN-optimized TorchScript copy for CPU
#: inference (bigger ones would hold their weights twice).
OPTIMIZE_MAX_PARAMS = 100_000_000
#: At most this many decode (or, on a single-threaded CPU, decode+classify) workers a core: each
#: CPU worker runs its own forward, so 16 on 2 cores took 1.6x the memory and 3x the time of 2.
WORKERS_PER_CORE = 4
#: What a model whose scores are NaN or infinite says (damaged weights, or a diverged training)
NOT_FINITE = ("{model} gave NaN or infinite scores, so it cannot classify: its weights are "
              "damaged, or come from a training run that diverged")


def max_workers() -> int:
    """The most workers :meth:`Classifier.classify_files` uses on this machine."""
    return WORKERS_PER_CORE * (os.cpu_count() or 1)


@dataclass
class ImageResult:
    """One file's answer: top-k predictions or the reason it could not be classified."""

    path: str
    top: list[dict] = field(default_factory=list)  # [{"label", "index", "prob"}], best first
    error: str | None = None
    seconds: float = 0.0  # decode + preprocess + this image's share of its batch's inference
    original_size: tuple[int, int] | None = None  # (width, height)
    crop_box: tuple[float, float, float, float] | None = None  # net's view in original pixels
    net_view: np.ndarray | None = None  # uint8 HxWx3: the preprocessed crop, de-normalized
    thumbnail: np.ndarray | None = None  # uint8 HxWx3
    probs: np.ndarray | None = None  # float32 (classes,), only when asked for

    def to_json(self) -> dict:
        """The CLI's JSON shape: path, top, error."""
        return {"path": self.path, "top": self.top, "error": self.error}

    def to_dict(self) -> dict:
        """Everything, for the GUI (numpy arrays stay arrays)."""
        return {**self.to_json(), "seconds": self.seconds, "original_size": self.original_size,
                "crop_box": self.crop_box, "net_view": self.net_view, "thumbnail": self.thumbnail}


def resolve_precision(precision: str, device: str) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None = plain fp32).

    "auto" picks fp16 on CUDA GPUs (tensor cores, same top-1) and fp32 elsewhere: on CPUs
    without AMX, bf16 autocast is slower than fp32 for these models.
    """
    if precision not in PRECISIONS:
        raise JobError(f"unknown precision '{precision}'; choose one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return None
    if precision == "auto":
        return torch.float16 if device.startswith("cuda") else None
    if precision == "fp16" and device == "cpu":
        raise JobError("fp16 is not supported on the CPU here; use bf16 or fp32")
    return torch.bfloat16 if precision == "bf16" else torch.float16


def idle_cpu_threads() -> int:
    """CPU threads worth giving PyTorch now: the cores the 1-minute load average leaves idle.

    Intra-op threads that outnumber the free cores wait on each other at every layer; on a busy
    2-core machine a 2-thread batch-1 forward measured 40x slower than a 1-thread one.
    """
    cores = os.cpu_count() or 1
    try:
        busy = os.getloadavg()[0]
    except (AttributeError, OSError):
        return cores
    return max(1, min(cores, round(cores - busy)))


def _same_output(model, probe: torch.Tensor, expected: torch.Tensor) -> bool:
    with torch.inference_mode():
        return script_cache.matches(expected, script_cache.first_output(model(probe)).float())


@contextlib.contextmanager
def _stop_at_each_layer(model, check: Callable[[], None]) -> Iterator[None]:
    """While the body runs, ``check()`` (which raises to stop) is called before the forward of
    each of ``model``'s modules; TorchScript models, which have no hooks, run whole."""
    if not isinstance(model, torch.nn.Module) or isinstance(model, torch.jit.ScriptModule):
        yield
        return
    handles = [module.register_forward_pre_hook(lambda *_: check()) for module in model.modules()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class Classifier:
    """Classifies images with one loaded model: load once, call often (one thread at a time)."""

    def __init__(self, loaded: LoadedModel, precision: str = "fp32") -> None:
        self.loaded = loaded
        self.model = loaded.module
        self.device = torch.device(loaded.device)
        self.spec = loaded.preprocess
        self.categories = loaded.categories
        self.autocast_dtype = resolve_precision(precision, loaded.device)
        shape = (1, 3, 1, 1)
        self._mean = torch.tensor(self.spec.mean, device=self.device).view(shape)
        self._std = torch.tensor(self.spec.std, device=self.device).view(shape)
        self._gradcam = None
        self._inference_model: torch.nn.Module | None = None
        self._optimize_lock = threading.Lock()
        self.optimized = False  # whether CPU inference runs the TorchScript-optimized copy
        if loaded.optimized:  # already the optimized copy (from the script cache)
            self._inference_model, self.optimized = self.model, True

    def optimize_for_cpu(self) -> bool:
        """Use a frozen TorchScript copy with oneDNN fusions for fp32 CPU inference.

        Convolution + bias + activation run as one prepacked oneDNN kernel: about 1.5x faster
        than eager mode for EfficientNet-Lite0 on one core, same outputs to float rounding
        (checked on a probe batch; any failure or mismatch keeps the Python model). Scripting
        takes ~0.5 s for Lite0, so models with a ``cache_key`` keep the script on disk (see
        :mod:`engine.classify.script_cache`). Grad-CAM keeps using the Python model (hooks).
        """
        with self._optimize_lock:
            if self._inference_model is not None:
                return self.optimized
            self._inference_model = self.model
            if not self._can_optimize():
                return False
            probe = script_cache.probe_batch(self.spec.crop_size)
            try:
                with torch.inference_mode():
                    expected = script_cache.first_output(self.model(probe)).float()
            except Exception:  # noqa: BLE001 - the model's own forward reports its problems
                return False
            key = self.loaded.cache_key
            cached = script_cache.load(key, self.spec.crop_size) if key else None
            if cached is not None and _same_output(cached, probe, expected):
                optimized = cached
            else:  # an entry that disagrees with this model is left alone: not this one's
                optimized = self._script_and_check(probe, expected, key if cached is None else None)
            if optimized is not None:
                self._inference_model, self.optimized = optimized, True
            return self.optimized

    def _can_optimize(self) -> bool:
        """Whether :meth:`optimize_for_cpu` would try: fp32 CPU inference of a Python model of
        at most ``OPTIMIZE_MAX_PARAMS`` parameters."""
        return (self.device.type == "cpu" and self.autocast_dtype is None
                and isinstance(self.model, torch.nn.Module)
                and not isinstance(self.model, torch.jit.ScriptModule)
                and sum(p.numel() for p in self.model.parameters()) <= OPTIMIZE_MAX_PARAMS)

    def _script_and_check(self, probe: torch.Tensor, expected: torch.Tensor,
                          cache_key: str | None) -> torch.nn.Module | None:
        try:
            scripted, optimized = script_cache.script_and_optimize(self.model)
            if not _same_output(optimized, probe, expected):
                return None
        except Exception:  # noqa: BLE001 - not scriptable: the Python model is just as right
            return None
        if cache_key:
            script_cache.save(cache_key, scripted, expected)
        return optimized

    # ---- tensors ----------------------------------------------------------------------------
    def to_batch(self, crops: list[np.ndarray]) -> torch.Tensor:
        """uint8 HxWx3 crops → normalized float (N, 3, H, W), channels_last, on the device.

        The same arithmetic as torchvision's preset (x / 255, then (x - mean) / std).
        """
        stacked = torch.from_numpy(np.stack(crops))  # N, H, W, 3
        # non_blocking only on CUDA: MPS may read the pageable source after it is freed
        batch = stacked.to(self.device, non_blocking=self.device.type == "cuda").permute(
            0, 3, 1, 2)  # channels_last view
        batch = batch.float().div_(255)
        return batch.sub_(self._mean).div_(self._std)

    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        model = self._inference_model or self.model
        try:
            with torch.inference_mode():
                if self.autocast_dtype is not None:
                    with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                        out = model(batch)
                else:
                    with true_fp32(self.device):
                        out = model(batch)
        except (JobError, JobStopped):
            raise
        except torch.OutOfMemoryError:
            raise JobError(f"{self.loaded.info.title} ran out of memory on {self.device} with "
                           f"{len(batch)} image(s) at once: use a smaller batch size, or another "
                           "device") from None
        except Exception as exc:  # a model that does not take images of this shape
            first_line = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            shape = "×".join(str(n) for n in batch.shape[1:])
            raise JobError(f"{self.loaded.info.title} failed on a {shape} image: "
                           f"{first_line}") from None
        if isinstance(out, tuple | list):  # e.g. GoogLeNet/Inception aux outputs
            out = out[0]
        if not isinstance(out, torch.Tensor) or out.dim() != 2:
            raise JobError(f"the model gave {type(out).__name__} instead of class scores")
        return out.float()

    def probabilities(self, crops: list[np.ndarray]) -> torch.Tensor:
        """Softmax probabilities, float64 (N, classes) on the CPU: in float32 a thousand of
        them can add up to a little over 1."""
        return torch.softmax(self.logits(self.to_batch(crops)).cpu().double(), dim=1)  # MPS: no f64

    def top_k(self, probs: torch.Tensor, k: int) -> list[list[dict]]:
        k = max(1, min(k, probs.shape[1]))
        values, indices = probs.topk(k, dim=1)
        names = self.categories
        return [
            [{"label": names[i] if i < len(names) else f"class {i}", "index": int(i),
              "prob": float(p)} for p, i in zip(row_p.tolist(), row_i.tolist(), strict=True)]
            for row_p, row_i in zip(values, indices, strict=True)
        ]

    def warm_up(self, optimize: bool = True, stages: LoadStages | None = None) -> None:
        """Optimize for the CPU where that helps (unless ``optimize`` is false), then run one
        forward on a blank crop, so the first real photo does not pay for kernel setup.

        ``stages`` reports both steps and obeys a stop after each (see
        :class:`~engine.classify.load_stages.LoadStages`), and within the forward of a Python
        model at each layer (ViT-L/16's took 4.6 s on a 2-core CPU; ViT-H/14's, at 518×518,
        longer still)."""
        stages = stages or LoadStages(self.loaded.info.title)
        if optimize:
            if self._inference_model is None and self._can_optimize():
                stages.begin("optimize")  # ~0.5 s for Lite0; seconds for a big net
            self.optimize_for_cpu()
        stages.begin("warm_up")
        size = self.spec.crop_size
        with _stop_at_each_layer(self._inference_model or self.model, stages.check):
            probs = self.probabilities([np.zeros((size, size, 3), dtype=np.uint8)])
        stages.check()
        if not torch.isfinite(probs).all():
            raise JobError(NOT_FINITE.format(model=self.loaded.info.title))
        classes = probs.shape[1]
        if classes != len(self.categories):  # ImageNet's names for a head that is not
            self.categories = self.loaded.categories = numbered_categories(classes)

    # ---- one image ----------------------------------------------------------------------------
    def prepare(self, path: str, fast_decode: bool = False,
                thumbnail_size: int | None = None) -> PreparedImage:
        return prepare_image(path, self.spec, fast_decode=fast_decode,
                             thumbnail_size=thumbnail_size)

    def classify_file(self, path: str, top_k: int = 5, thumbnail_size: int | None = 256,
                      keep_probs: bool = False) -> ImageResult:
        """Classify one file with full-quality decoding; bad files give ``error``, never raise."""
        started = time.perf_counter()
        try:
            prepared = self.prepare(path, thumbnail_size=thumbnail_size)
        except ImageProblem as exc:
            return ImageResult(path=str(path), error=str(exc),
                               seconds=time.perf_counter() - started)
        probs = self.probabilities([prepared.crop])
        return self._result(prepared, probs[0], top_k, time.perf_counter() - started,
                            with_views=True, keep_probs=keep_probs)

    def _result(self, prepared: PreparedImage, probs: torch.Tensor, top_k: int, seconds: float,
                with_views: bool, keep_probs: bool = False) -> ImageResult:
        if not torch.isfinite(probs).all():  # a wrong answer must not look like one
            return ImageResult(path=prepared.path, seconds=seconds,
                               error=NOT_FINITE.format(model=self.loaded.info.title))
        return ImageResult(
            path=prepared.path, top=self.top_k(probs[None], top_k)[0], seconds=seconds,
            original_size=prepared.original_size, crop_box=prepared.crop_box,
            net_view=prepared.crop if with_views else None,
            thumbnail=prepared.thumbnail if with_views else None,
            probs=probs.numpy().astype(np.float32) if keep_probs else None,
        )

    # ---- many images ---------------------------------------------------------------------------
    def _classify_entries(self, entries: list[tuple[PreparedImage, float] | ImageResult],
                          top_k: int, with_views: bool) -> list[ImageResult]:
        """One forward for the prepared entries (with their preparation seconds); problems
        (``ImageResult`` with ``error``) stay in their place."""
        good = [entry for entry in entries if not isinstance(entry, ImageResult)]
        rows = iter(())
        share = 0.0
        if good:
            started = time.perf_counter()
            rows = iter(self.probabilities([item.crop for item, _ in good]))
            share = (time.perf_counter() - started) / len(good)
        return [entry if isinstance(entry, ImageResult)
                else self._result(entry[0], next(rows), top_k, entry[1] + share, with_views)
                for entry in entries]

    def _prepare(self, path: str, fast_decode: bool, thumbnail_size: int | None,
                 prefetched: Prefetch | None) -> PreparedImage:
        early = prefetched.take(path) if prefetched is not None else None
        if early is not None:
            return early
        return prepare_image(path, self.spec, fast_decode, thumbnail_size)

    def classify_files(
        self,
        paths: Iterable[str],
        top_k: int = 5,
        batch_size: int = 32,
        workers: int | None = None,
        fast_decode: bool = False,
        thumbnail_size: int | None = None,
        with_views: bool = False,
        should_stop: Callable[[], bool] | None = None,
        prefetched: Prefetch | None = None,
    ) -> Iterator[ImageResult]:
        """Yield one :class:`ImageResult` per path, in order, as batches finish.

        On a GPU (or a CPU whose cores all serve one multi-threaded forward), a thread pool
        decodes ``workers`` files ahead while this thread runs full batches. On a CPU where torch
        runs single-threaded, each pool worker decodes *and* classifies its own small chunk, so
        every core works without intra-op threads waiting on each other (small batches are as
        fast per image as big ones for these networks on CPUs). Bad files come back with
        ``error`` in their place. Stops between batches when ``should_stop()`` is true (on a
        single-threaded CPU, after yielding the chunks already being classified). ``workers``
        is capped at :func:`max_workers`.
        ``prefetched`` holds images decoded ahead (see
        :func:`engine.classify.images.start_prefetch`); those it has not started are decoded here.
        """
        paths = list(paths)
        batch_size = max(1, int(batch_size))
        cores = os.cpu_count() or 1
        if workers:
            workers = min(int(workers), max_workers())
        if self.device.type == "cpu" and torch.get_num_threads() == 1 and (workers or cores) > 1:
            yield from self._classify_in_chunks(paths, top_k, min(batch_size, CPU_CHUNK),
                                                workers or cores, fast_decode, thumbnail_size,
                                                with_views, should_stop or (lambda: False),
                                                prefetched)
            return
        workers = workers or min(8, cores)
        window = max(batch_size * 2, workers * 2)
        stop = should_stop or (lambda: False)
        pending: deque[tuple[str, Future]] = deque()
        waiting: list[tuple[PreparedImage, float] | ImageResult] = []  # in input order
        ready = 0  # how many entries of ``waiting`` need the network

        def flush() -> Iterator[ImageResult]:
            nonlocal ready
            yield from self._classify_entries(waiting, top_k, with_views)
            waiting.clear()
            ready = 0

        def timed_prepare(path: str) -> tuple[PreparedImage, float]:
            started = time.perf_counter()
            prepared = self._prepare(path, fast_decode, thumbnail_size, prefetched)
            return prepared, time.perf_counter() - started

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
            queue = iter(paths)
            try:
                for path in queue:
                    pending.append((path, pool.submit(timed_prepare, path)))
                    if len(pending) >= window:
                        break
                while pending:
                    if stop():
                        return
                    path, future = pending.popleft()
                    next_path = next(queue, None)
                    if next_path is not None:
                        pending.append((next_path, pool.submit(timed_prepare, next_path)))
                    try:
                        waiting.append(future.result())
                        ready += 1
                    except ImageProblem as exc:
                        waiting.append(ImageResult(path=str(path), error=str(exc)))
                    if ready >= batch_size or (ready == 0 and len(waiting) >= batch_size):
                        yield from flush()
                if waiting and not stop():
                    yield from flush()
            finally:
                for _, future in pending:
                    future.cancel()

    def _classify_in_chunks(self, paths, top_k, chunk, workers, fast_decode, thumbnail_size,
                            with_views, stop, prefetched) -> Iterator[ImageResult]:
        def prepare(path: str) -> PreparedImage:
            return self._prepare(path, fast_decode, thumbnail_size, prefetched)

        def run_chunk(chunk_paths: list[str]) -> list[ImageResult]:
            entries: list[tuple[PreparedImage, float] | ImageResult] = []
            for path in chunk_paths:
                started = time.perf_counter()
                try:
                    item = prepare(path)
                except ImageProblem as exc:
                    entries.append(ImageResult(path=str(path), error=str(exc)))
                else:
                    entries.append((item, time.perf_counter() - started))
            return self._classify_entries(entries, top_k, with_views)

        chunks = [paths[i:i + chunk] for i in range(0, len(paths), chunk)]
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="classify") as pool:
            pending: deque[Future] = deque()
            queue = iter(chunks)
            for chunk_paths in queue:
                pending.append(pool.submit(run_chunk, chunk_paths))
                if len(pending) >= workers * 2:
                    break
            try:
                while pending:
                    if stop():
                        break
                    results = pending.popleft().result()
                    following = next(queue, None)
                    if following is not None:
                        pending.append(pool.submit(run_chunk, following))
                    yield from results
                # Stopped: the chunks a worker has begun are finished anyway (the pool waits
                # for them), so they are yielded; those not begun are cancelled. The pool
                # takes chunks in order, so the begun ones come first.
                begun = [future for future in pending if not future.cancel()]
                pending.clear()
                for future in begun:
                    yield from future.result()
            finally:
                for future in pending:
                    future.cancel()

    # ---- Grad-CAM --------------------------------------------------------------------------------
    def grad_cam(self, crop: np.ndarray, class_index: int) -> np.ndarray:
        """Grad-CAM heatmap (float32 HxW in [0, 1], the crop's size) for ``class_index``."""
        from engine.classify.gradcam import GradCam

        if not 0 <= class_index < len(self.categories):
            raise JobError(f"class index {class_index} is outside 0..{len(self.categories) - 1}")
        if isinstance(self.model, torch.jit.ScriptModule):
            raise JobError("Grad-CAM needs a Python model; TorchScript files have no hooks")
        if self._gradcam is None:
            self._gradcam = GradCam(self.model)
        return self._gradcam(self.to_batch([crop]), int(class_index))
