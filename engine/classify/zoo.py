"""The model zoo: every torchvision ImageNet classifier plus the offline default, and loading them.

A model id is ``"efficientnet_lite0"`` (the offline default), a torchvision architecture such as
``"resnet50"`` (its DEFAULT weights) or ``"resnet50.IMAGENET1K_V1"`` (a specific weights entry).
:func:`load_model` gives a :class:`LoadedModel`: the network in eval mode on its device, the
preprocessing its weights were trained with, and its category names.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from engine.classify.images import Preprocess
from engine.classify.load_stages import STAGE_TEXTS, LoadStages
from engine.files import pytorch_file_kind
from engine.jobs import JobError

DEFAULT_MODEL = "efficientnet_lite0"
DEFAULT_MODEL_TITLE = "EfficientNet-Lite0 (offline default)"

#: EfficientNet-Lite0 from the PyPI package: resize 256, center crop 224, mean = std = 0.5.
LITE0_PREPROCESS = Preprocess(256, 224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bilinear")
LITE0_PARAMS = 4_652_008
LITE0_GFLOPS = 0.39  # multiply-adds at 224×224, counted the way torchvision's "_ops" are

#: ImageNet preprocessing for architectures whose weights do not say (imported files, Hub models).
IMAGENET_PREPROCESS = Preprocess()


@dataclass
class ModelInfo:
    """What the model picker shows; plain data (``to_dict`` for JSON / the GUI)."""

    id: str
    title: str
    source: str  # "package" (offline default), "torchvision", "file", "hub"
    top1: float | None = None  # ImageNet-1K top-1 accuracy, %
    params: int | None = None
    gflops: float | None = None
    file_mb: float | None = None  # download size
    on_disk: bool = False
    url: str | None = None
    file: str | None = None  # where the weights file is (or will be)
    preprocess: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def summary(self) -> str:
        """One line: 'ResNet-50 · 80.9% top-1 · 25.6 M params · 4.1 GFLOPS · 97.8 MB · on disk'."""
        parts = [self.title]
        if self.top1 is not None:
            parts.append(f"{self.top1:.1f}% top-1")
        if self.params:
            parts.append(params_text(self.params))
        if self.gflops is not None:
            parts.append(f"{self.gflops:.2f} GFLOPS")
        if self.file_mb is not None:
            parts.append(f"{self.file_mb:.1f} MB")
        parts.append("on disk" if self.on_disk else "download")
        return " · ".join(parts)


@dataclass
class LoadedModel:
    """A ready network: eval mode, on ``device``, with its preprocessing and category names."""

    info: ModelInfo
    module: Any  # torch.nn.Module
    preprocess: Preprocess
    categories: list[str]
    device: str
    load_seconds: float = 0.0
    cache_key: str | None = None  # where its optimized CPU copy is cached (see script_cache)
    optimized: bool = False  # ``module`` is that optimized TorchScript copy, not the Python model


def params_text(count: int) -> str:
    """'25.6 M params', or the exact count below 0.1 M ('18,123 params'), which would read 0.0 M."""
    if count >= 100_000:
        return f"{count / 1e6:.1f} M params"
    return f"{count:,} params"


# ---- category names ----------------------------------------------------------------------------
_IMAGENET_CATEGORIES: list[str] | None = None


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names from torchvision's weights metadata.

    Read from ``torchvision/models/_meta.py`` without importing torchvision (a 2-4 s import the
    default model does not otherwise need); falls back to the public weights enum.
    """
    global _IMAGENET_CATEGORIES
    if _IMAGENET_CATEGORIES is None:
        categories = None
        spec = importlib.util.find_spec("torchvision")
        if spec is not None and spec.submodule_search_locations:
            meta_file = Path(next(iter(spec.submodule_search_locations))) / "models" / "_meta.py"
            namespace: dict[str, Any] = {}
            try:
                exec(compile(meta_file.read_text(encoding="utf-8"), str(meta_file), "exec"),
                     namespace)
                categories = namespace.get("_IMAGENET_CATEGORIES")
            except (OSError, SyntaxError):
                categories = None
        if not categories or len(categories) != 1000:
            from torchvision.models import ResNet50_Weights

            categories = ResNet50_Weights.DEFAULT.meta["categories"]
        _IMAGENET_CATEGORIES = list(categories)
    return _IMAGENET_CATEGORIES


def numbered_categories(count: int) -> list[str]:
    return [f"class {i}" for i in range(count)]


# ---- the catalogue ------------------------------------------------------------------------------
_TITLES = {
    "alexnet": "AlexNet", "googlenet": "GoogLeNet", "inception_v3": "Inception v3",
    "maxvit_t": "MaxViT-T", "squeezenet1_0": "SqueezeNet 1.0", "squeezenet1_1": "SqueezeNet 1.1",
}


def title_for(arch: str) -> str:
    """A readable name: 'resnet50' → 'ResNet-50', 'vit_b_16' → 'ViT-B/16'."""
    if arch in _TITLES:
        return _TITLES[arch]
    prefixes = [
        ("wide_resnet", "Wide ResNet-"), ("resnext", "ResNeXt-"), ("resnet", "ResNet-"),
        ("vgg", "VGG-"), ("densenet", "DenseNet-"), ("efficientnet_v2_", "EfficientNetV2-"),
        ("efficientnet_", "EfficientNet-"), ("mobilenet_", "MobileNet "), ("mnasnet", "MNASNet "),
        ("shufflenet_v2_", "ShuffleNetV2 "), ("regnet_", "RegNet"), ("convnext_", "ConvNeXt "),
        ("swin_v2_", "Swin V2-"), ("swin_", "Swin-"), ("vit_", "ViT-"),
    ]
    for prefix, pretty in prefixes:
        if arch.startswith(prefix):
            rest = arch[len(prefix):]
            if prefix == "vit_":
                size, patch = rest.split("_")
                return f"ViT-{size.upper()}/{patch}"
            if prefix == "regnet_":
                kind, size = rest.split("_", 1)
                return f"RegNet{kind.upper()} {size.replace('_', '.').upper()}"
            if prefix == "vgg_" or prefix == "vgg":
                return "VGG-" + rest.replace("_bn", " BN")
            if prefix in ("efficientnet_", "efficientnet_v2_", "mobilenet_", "swin_", "swin_v2_",
                          "convnext_"):
                rest = " ".join(t.upper() if len(t) <= 3 else t.capitalize()
                                for t in rest.split("_"))
            elif prefix == "wide_resnet":
                rest = rest.replace("_", "-")
            elif prefix == "resnext":
                rest = rest.replace("_", " ")
            else:
                rest = rest.replace("_", ".")
            return pretty + rest
    return arch


def default_model_info() -> ModelInfo:
    from engine.classify.lite0 import packaged_weights_path

    try:
        path = packaged_weights_path()
        on_disk = os.path.isfile(path)
        size = os.path.getsize(path) / 1024 / 1024 if on_disk else None
    except JobError:
        path, on_disk, size = None, False, None
    return ModelInfo(
        id=DEFAULT_MODEL, title=DEFAULT_MODEL_TITLE, source="package",
        params=LITE0_PARAMS, gflops=LITE0_GFLOPS, file_mb=size, on_disk=on_disk, file=path,
        preprocess=LITE0_PREPROCESS.to_dict(),
    )


def _split_model_id(model_id: str) -> tuple[str, str]:
    arch, _, weights_name = model_id.partition(".")
    return arch, weights_name or "DEFAULT"


def _torchvision_weights(arch: str, weights_name: str):
    from torchvision import models

    if arch == DEFAULT_MODEL:  # built in, with one set of weights
        raise JobError(f"'{DEFAULT_MODEL}' has one set of weights, built in: give it without "
                       f"a weights name (not '{arch}.{weights_name}')")
    if arch not in models.list_models(module=models):
        known = ", ".join(sorted([DEFAULT_MODEL, *models.list_models(module=models)]))
        given = arch if weights_name == "DEFAULT" else f"{arch}.{weights_name}"  # 'model.pt' too
        raise JobError(f"unknown model '{given}'; choose one of: {known}")
    enum = models.get_model_weights(arch)
    try:
        return enum[weights_name] if weights_name != "DEFAULT" else enum.DEFAULT
    except KeyError:
        names = ", ".join(f"{arch}.{w.name}" for w in enum)
        raise JobError(f"'{arch}' has no weights '{weights_name}'; choose one of: {names}") \
            from None


def _preprocess_from_weights(weights) -> Preprocess:
    preset = weights.transforms()
    mode = getattr(preset, "interpolation", None)
    return Preprocess(
        resize_size=int(preset.resize_size[0]),
        crop_size=int(preset.crop_size[0]),
        mean=tuple(float(v) for v in preset.mean),
        std=tuple(float(v) for v in preset.std),
        interpolation=getattr(mode, "value", "bilinear"),
    )


def torchvision_model_info(arch: str, weights_name: str = "DEFAULT") -> ModelInfo:
    from engine.classify import weights as weight_files

    weights = _torchvision_weights(arch, weights_name)
    meta = weights.meta
    metrics = meta.get("_metrics", {}).get("ImageNet-1K", {})
    model_id = arch if weights_name == "DEFAULT" else f"{arch}.{weights.name}"
    title = title_for(arch) + ("" if weights_name == "DEFAULT" else f" ({weights.name})")
    return ModelInfo(
        id=model_id, title=title, source="torchvision", top1=metrics.get("acc@1"),
        params=meta.get("num_params"), gflops=meta.get("_ops"), file_mb=meta.get("_file_size"),
        on_disk=weight_files.is_cached(weights.url), url=weights.url,
        file=str(weight_files.cached_path(weights.url)),
        preprocess=_preprocess_from_weights(weights).to_dict(),
    )


def list_models() -> list[ModelInfo]:
    """The offline default first, then every torchvision ImageNet classifier (DEFAULT weights)."""
    from torchvision import models

    infos = [default_model_info()]
    for arch in sorted(models.list_models(module=models)):
        infos.append(torchvision_model_info(arch))
    return infos


# ---- loading ------------------------------------------------------------------------------------
def _read_state_dict(path: str, what: str) -> dict:
    import torch

    if os.path.isdir(path):
        raise JobError(f"{path} is a folder, not a weights file: choose the .pth file in it")
    if not os.path.isfile(path):
        raise JobError(f"weights file not found: {path}")
    try:
        with open(path, "rb") as f:
            start = f.read(4)
    except OSError as exc:  # before looking inside: not "not a weights file"
        raise JobError(f"cannot read {path} ({exc.strerror or exc}): give this user permission "
                       "to read it, or copy it somewhere readable and load that") from None
    name = os.path.basename(path)
    not_weights = f"{name} is not a PyTorch weights file (a .pth that torch.save wrote)"
    kind = pytorch_file_kind(path)
    if kind == "torchscript":
        raise JobError(f"{name} is a TorchScript model, not weights for {what}: weights are a "
                       "state dict saved with torch.save. (A net trained on TorchDesk's "
                       "CIFAR-10 tab goes to Classify with that tab's \"Use in Classify\".)")
    if kind is None and start == b"PK\x03\x04":  # a zip archive (torch.save's) without its end
        raise JobError(f"{name} is cut short or damaged (an incomplete archive): download or "
                       "copy it again")
    if kind is None:
        raise JobError(not_weights)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:  # the disk, not the file's contents (a torch.load error is not one)
        raise JobError(f"cannot read {path} ({exc.strerror or exc}); try again, or copy it "
                       "somewhere else and load that") from None
    except Exception as exc:  # pickle errors, zip errors, unsupported objects: all user-fixable
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in first_line or "Weights only" in first_line:
            # torch's own advice (load with weights_only=False) would run code from the file
            first_line = "it holds Python objects, not just tensors; TorchDesk loads only tensors"
        raise JobError(f"{path} is not a PyTorch weights file {what} can read ({first_line})") \
            from None
    if isinstance(state, dict) and isinstance(state.get("model_state"), dict):
        # what engine.cifar.checkpoint saves: a CIFAR-10 network, not an ImageNet one
        raise JobError(f"{name} is a TorchDesk CIFAR-10 checkpoint, not weights for {what}; to "
                       "classify with it, enter it as the CIFAR-10 tab's checkpoint and press "
                       "\"Use in Classify\"")
    for key in ("state_dict", "model_state_dict", "model", "net"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not state or not all(
        hasattr(v, "shape") for v in state.values()
    ):
        raise JobError(f"{path} holds no state dict of tensors for {what}")
    return _without_data_parallel_prefix(state)


def _without_data_parallel_prefix(state: dict) -> dict:
    """``state`` with the ``module.`` that DataParallel puts before each key removed, keeping
    torch's ``_metadata`` (each layer's state-dict version): MNASNet refuses weights without it
    ('version should be set to 1 or 2 instead of None')."""
    from collections import OrderedDict

    cleaned = OrderedDict((key.removeprefix("module."), value) for key, value in state.items())
    metadata = getattr(state, "_metadata", None)
    if metadata is not None:
        if any(key.startswith("module.") for key in state):
            metadata = OrderedDict(("" if prefix == "module" else prefix.removeprefix("module."),
                                    versions) for prefix, versions in metadata.items())
        cleaned._metadata = metadata
    return cleaned


def _build_on_meta(models, arch: str):
    """``arch`` with its tensors on the meta device (shapes only: no memory, no random
    initialization), for :func:`fit_state_dict` to give it the weights' own tensors; ViT-L/16
    builds in 0.04 s instead of 2-4 s. None for a network whose ``__init__`` reads tensor values
    (RegNet), which a meta tensor does not have."""
    import torch

    try:
        with torch.device("meta"):
            return models.get_model(arch, weights=None)
    except Exception:  # "Cannot copy out of meta tensor": built the usual way instead
        return None


def _holds_meta_tensors(module) -> bool:
    """Whether any tensor of ``module`` (parameter, buffer, or plain attribute, which a state
    dict does not hold) is still on the meta device after its weights were put in."""
    for sub in module.modules():
        tensors = [*sub._parameters.values(), *sub._buffers.values(),
                   *(value for value in vars(sub).values() if hasattr(value, "is_meta"))]
        if any(tensor is not None and tensor.is_meta for tensor in tensors):
            return True
    return False


def fit_state_dict(module, state: dict, path: str, what: str) -> None:
    """Load ``state`` into ``module`` strictly, or raise a JobError saying what does not fit.

    A module built on the meta device takes ``state``'s tensors themselves (no copy), in the
    type and layout its own would have had (contiguous, its dtype: a copy would convert a
    half-precision file too), so it computes exactly what a module built the usual way does.
    """
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [
        f"{k} {tuple(state[k].shape)} ≠ {tuple(v.shape)}"
        for k, v in expected.items() if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or wrong_shape:
        details = []
        if wrong_shape:
            details.append(f"{len(wrong_shape)} with other shapes (e.g. {wrong_shape[0]})")
        if missing:
            details.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            details.append(f"{len(unexpected)} not in {what} (e.g. {unexpected[0]})")
        raise JobError(f"{os.path.basename(path)} does not fit {what}: "
                       f"of its {len(state)} tensors, " + "; ".join(details))
    on_meta = any(tensor.is_meta for tensor in expected.values())
    if on_meta:
        state = _typed_like(state, expected)
    module.load_state_dict(state, assign=on_meta)


def _typed_like(state: dict, expected: dict) -> dict:
    """``state``'s tensors in ``expected``'s dtypes and contiguous (themselves where they are),
    with its ``_metadata`` (the layers' state-dict versions)."""
    from collections import OrderedDict

    typed = OrderedDict((key, tensor.to(expected[key].dtype).contiguous())
                        for key, tensor in state.items())
    if hasattr(state, "_metadata"):
        typed._metadata = state._metadata
    return typed


def _output_classes(module) -> int | None:
    import torch

    last = None
    for sub in module.modules():
        if isinstance(sub, torch.nn.Linear | torch.nn.Conv2d):
            last = sub
    if isinstance(last, torch.nn.Linear):
        return last.out_features
    if isinstance(last, torch.nn.Conv2d):  # SqueezeNet classifies with a 1x1 conv
        return last.out_channels
    return None


def _categories_for(count: int | None) -> list[str]:
    if count == 1000 or count is None:
        return imagenet_categories()
    return numbered_categories(count)


def load_model(
    model_id: str = DEFAULT_MODEL,
    device: str = "cpu",
    weights_file: str | None = None,
    progress: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> LoadedModel:
    """Build ``model_id`` with its pretrained weights (downloading them if needed) on ``device``.

    ``weights_file`` loads a local ``.pth`` into the architecture instead ("Import weights…").
    ``progress`` gets the download's and the check's reports and each stage of the load
    (:class:`~engine.classify.load_stages.LoadStages`); ``should_stop()`` is obeyed between
    stages (raising :class:`~engine.jobs.JobStopped`).
    """
    import time

    started = time.perf_counter()
    arch, weights_name = _split_model_id(model_id)
    stages = LoadStages(_loading_title(arch, weights_name, weights_file), progress, should_stop)
    cache_key = None
    if model_id == DEFAULT_MODEL:
        from engine.classify.lite0 import EfficientNetLite0, load_lite0, remap_in_order

        info = default_model_info()
        preprocess = LITE0_PREPROCESS
        if weights_file:
            stages.begin("read")
            state = _read_state_dict(weights_file, "EfficientNet-Lite0")
            stages.begin("build")
            module = EfficientNetLite0()
            stages.begin("fit")
            if set(state) != set(module.state_dict()) and len(state) == len(module.state_dict()):
                state = remap_in_order(state, module.state_dict(), weights_file)
            fit_state_dict(module, state, weights_file, "EfficientNet-Lite0")
        else:
            stages.begin("build")  # 0.1 s: network and packaged weights in one
            module = load_lite0()
            cache_key = default_model_cache_key()
        module.fold_batchnorm()  # inference only: ~1.5x faster on CPUs, same outputs (1e-6)
    else:
        stages.begin("import")  # 2-4 s the first time
        from torchvision import models

        weights = _torchvision_weights(arch, weights_name)
        info = torchvision_model_info(arch, weights_name)
        preprocess = _preprocess_from_weights(weights)
        if weights_file:
            path = weights_file
        else:
            from engine.classify.weights import ensure_weights

            stages.begin("weights")
            path = str(ensure_weights(weights.url, progress=progress, should_stop=should_stop))
            info.on_disk = True
        # the weights are fetched, checked and read before the network is built: a big one
        # takes seconds to build (ViT-H/14: 633 M parameters), which nobody can follow
        stages.begin("read", _reading_text(path))
        state = _read_state_dict(path, info.title)
        stages.begin("build")
        module = _build_on_meta(models, arch) or models.get_model(arch, weights=None)
        stages.begin("fit")
        fit_state_dict(module, state, path, info.title)
        if _holds_meta_tensors(module):  # something its __init__ made that no weights file holds
            module = models.get_model(arch, weights=None)
            fit_state_dict(module, state, path, info.title)
        del state
    if weights_file:
        info = ModelInfo(**{**asdict(info), "source": "file", "file": weights_file,
                            "title": f"{info.title} ← {os.path.basename(weights_file)}",
                            "top1": None, "on_disk": True, "url": None})
    categories = _categories_for(_output_classes(module))
    stages.begin("device", f"putting it on {device}")
    module = _to_device(module.eval(), device)
    stages.check()
    return LoadedModel(info, module, preprocess, categories, device,
                       time.perf_counter() - started, cache_key=cache_key)


def _loading_title(arch: str, weights_name: str, weights_file: str | None) -> str:
    """The model's title while it loads (before torchvision, which knows its exact title, is
    imported): 'ResNet-50', 'ResNet-50 (IMAGENET1K_V1)', 'ResNet-50 ← mine.pth'."""
    if arch == DEFAULT_MODEL:
        title = DEFAULT_MODEL_TITLE
    else:
        title = title_for(arch) + ("" if weights_name == "DEFAULT" else f" ({weights_name})")
    return f"{title} ← {os.path.basename(weights_file)}" if weights_file else title


def _reading_text(path: str) -> str:
    """'reading its weights (2416.6 MB)': MB of 1024 × 1024 bytes, as the model list counts."""
    try:
        size = os.path.getsize(path)
    except OSError:  # reading it says what is wrong
        return STAGE_TEXTS["read"]
    return f"{STAGE_TEXTS['read']} ({size / 1024 / 1024:.1f} MB)"


def default_model_cache_key() -> str | None:
    """The script-cache key of the default model with its packaged weights (None: not installed)."""
    from engine.classify import lite0, script_cache

    try:
        weights = lite0.packaged_weights_path()
    except JobError:
        return None
    return script_cache.cache_key(DEFAULT_MODEL, weights, (lite0.__file__,))


def load_cached_default_model(device: str = "cpu") -> LoadedModel | None:
    """The default model as its cached, optimized CPU copy, without building the Python model
    (~0.3 s instead of ~1 s); None when there is no usable cache entry yet.

    For inference only: Grad-CAM needs the Python model (:func:`load_model`).
    """
    import time

    from engine.classify import script_cache

    if device != "cpu":
        return None
    started = time.perf_counter()
    key = default_model_cache_key()
    module = script_cache.load(key, LITE0_PREPROCESS.crop_size) if key else None
    if module is None:
        return None
    return LoadedModel(default_model_info(), module, LITE0_PREPROCESS, imagenet_categories(),
                       device, time.perf_counter() - started, cache_key=key, optimized=True)


def _to_device(module, device: str):
    import torch

    try:
        module = module.to(device)
    except (RuntimeError, AssertionError) as exc:
        raise JobError(f"cannot put the model on {device}: {exc}") from None
    if device != "mps":  # channels_last: faster convolutions on CPU (oneDNN) and CUDA
        module = module.to(memory_format=torch.channels_last)
    return module


# ---- Torch Hub -----------------------------------------------------------------------------------
#: Where to check that GitHub is reachable before torch.hub tries (it has no timeout of its own).
HUB_PROBE_ADDRESS = ("github.com", 443)


def _hub_repo_cached(repo: str) -> bool:
    import torch.hub

    owner_name, _, ref = repo.partition(":")
    owner, _, name = owner_name.partition("/")
    hub_dir = Path(torch.hub.get_dir())
    if ref:
        return (hub_dir / f"{owner}_{name}_{ref.replace('/', '_')}").is_dir()
    return any(hub_dir.glob(f"{owner}_{name}_*"))


def _check_reachable(what: str, where: str) -> None:
    import socket

    from engine.classify.weights import resolve_host_quickly

    try:
        resolve_host_quickly(HUB_PROBE_ADDRESS[0], 4.0)
        socket.create_connection(HUB_PROBE_ADDRESS, timeout=4).close()
    except OSError as exc:
        raise JobError(
            f"cannot reach {HUB_PROBE_ADDRESS[0]} to fetch {what} (no network? {exc}). "
            f"Copy the repository into {where} on this machine, or use a local folder instead."
        ) from None


def load_hub_model(
    repo: str,
    entry: str,
    device: str = "cpu",
    progress: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> LoadedModel:
    """``torch.hub.load(repo, entry)`` with pretrained weights, like the book's
    ``hub.load('pytorch/vision', 'resnet18')``. ``repo`` may be ``owner/name[:ref]`` on GitHub
    or a local folder holding a ``hubconf.py``.
    """
    import time

    import torch
    import torch.hub

    started = time.perf_counter()
    repo, entry = repo.strip(), entry.strip()
    if not repo or not entry:
        raise JobError("Torch Hub needs a repository (e.g. pytorch/vision) and an entry point "
                       "(e.g. resnet18)")
    stages = LoadStages(f"{entry} (Torch Hub {repo})", progress, should_stop)
    local = os.path.isdir(repo)
    if not local:
        if repo.count("/") != 1 and not (":" in repo and repo.split(":")[0].count("/") == 1):
            raise JobError(f"'{repo}' is neither a folder nor a GitHub repository 'owner/name'")
        if not _hub_repo_cached(repo):
            _check_reachable(f"Torch Hub repository {repo}", torch.hub.get_dir())
    source = "local" if local else "github"
    known_weights = None
    if repo.split(":")[0] == "pytorch/vision":
        try:
            known_weights = _torchvision_weights(entry, "DEFAULT")
        except JobError:
            known_weights = None
    if known_weights is not None:  # fetch weights ourselves: verified, cancellable, offline-safe
        from engine.classify.weights import ensure_weights

        stages.begin("weights")
        ensure_weights(known_weights.url, progress=progress, should_stop=should_stop)
    stages.begin("hub")
    try:
        try:
            module = torch.hub.load(repo, entry, source=source, weights="DEFAULT",
                                    trust_repo=True, verbose=False)
        except TypeError:  # older hubconf entry points take pretrained=True instead of weights=
            module = torch.hub.load(repo, entry, source=source, pretrained=True,
                                    trust_repo=True, verbose=False)
    except JobError:
        raise
    except Exception as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise JobError(f"Torch Hub could not load {entry} from {repo}: {text}") from None
    if not isinstance(module, torch.nn.Module):
        raise JobError(f"{repo} {entry} did not give a PyTorch model (got {type(module).__name__})")
    preprocess = _preprocess_from_weights(known_weights) if known_weights else IMAGENET_PREPROCESS
    params = sum(p.numel() for p in module.parameters())
    info = ModelInfo(id=f"hub:{repo}:{entry}", title=f"{entry} (Torch Hub {repo})", source="hub",
                     params=params, on_disk=True, preprocess=preprocess.to_dict())
    categories = _categories_for(_output_classes(module))
    stages.begin("device", f"putting it on {device}")
    module = _to_device(module.eval(), device)
    stages.check()
    return LoadedModel(info, module, preprocess, categories, device,
                       time.perf_counter() - started)


# ---- TorchScript models (e.g. trained in the CIFAR-10 tab) --------------------------------------
def load_torchscript_model(
    path: str,
    device: str = "cpu",
    class_names: list[str] | None = None,
    input_size: int = 224,
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0),
    std: tuple[float, float, float] = (1.0, 1.0, 1.0),
    title: str | None = None,
    progress: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> LoadedModel:
    """A TorchScript classifier file. The default mean/std of 0/1 feed it RGB in [0, 1]
    (the CIFAR-10 tab's exports normalize inside); photos are resized and center-cropped to
    ``input_size``. Grad-CAM is not available for these (TorchScript has no hooks).
    ``progress`` and ``should_stop`` as for :func:`load_model`.
    """
    import time
    import warnings

    import torch

    started = time.perf_counter()
    if not os.path.isfile(path):
        raise JobError(f"model file not found: {path}")
    stages = LoadStages(title or os.path.basename(path), progress, should_stop)
    stages.begin("read", "reading the file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated upstream
            module = torch.jit.load(path, map_location="cpu")
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise JobError(f"{path} is not a TorchScript model ({first})") from None
    module.eval()
    try:
        with torch.no_grad():
            out = module(torch.zeros(1, 3, input_size, input_size))
    except Exception as exc:
        raise JobError(f"{os.path.basename(path)} does not take 3×{input_size}×{input_size} "
                       f"images: {str(exc).strip().splitlines()[0]}") from None
    classes = int(out.shape[-1])
    names = list(class_names) if class_names else numbered_categories(classes)
    if len(names) != classes:
        raise JobError(f"{os.path.basename(path)} gives {classes} scores but {len(names)} class "
                       "names were given")
    preprocess = Preprocess(input_size, input_size, tuple(mean), tuple(std), "bilinear")
    params = sum(p.numel() for p in module.parameters())
    info = ModelInfo(id=f"torchscript:{path}", title=title or os.path.basename(path),
                     source="file", params=params, on_disk=True, file=path,
                     file_mb=os.path.getsize(path) / 1024 / 1024,
                     preprocess=preprocess.to_dict())
    stages.begin("device", f"putting it on {device}")
    try:
        module = module.to(device)
    except (RuntimeError, AssertionError) as exc:
        raise JobError(f"cannot put the model on {device}: {exc}") from None
    stages.check()
    return LoadedModel(info, module, preprocess, names, device, time.perf_counter() - started)
