"""A torchvision network is built without its random initialization (on the meta device) and
given the weights file's tensors themselves: its answers are exactly those of the network built
the usual way and loaded by copy. Weights are random, saved in the cache under torchvision's
file name and marked as checked (no network)."""

from __future__ import annotations

import pytest
import torch

from engine.classify import weights, zoo
from engine.classify.zoo import load_model


def _cache_random_weights(arch: str, tmp_path, monkeypatch) -> dict:
    """Random weights for ``arch`` as its torchvision file in a fresh cache; its state dict."""
    from torchvision import models

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setenv("TORCHDESK_CACHE_DIR", str(tmp_path / "cache"))
    torch.manual_seed(0)
    state = models.get_model(arch, weights=None).state_dict()
    copy = weights.checkpoint_dir() / weights.file_name(models.get_model_weights(arch).DEFAULT.url)
    copy.parent.mkdir(parents=True)
    torch.save(state, copy)
    weights._remember_verified(copy)
    return state


def _built_the_usual_way(arch: str, state: dict):
    """The network as it was loaded before: randomly initialized, then the weights copied in."""
    from torchvision import models

    module = models.get_model(arch, weights=None)
    module.load_state_dict(state)
    return zoo._to_device(module.eval(), "cpu")


def _top5(module, batch):
    with torch.no_grad():
        return torch.softmax(module(batch), dim=1).topk(5)


@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small", "swin_t", "regnet_x_400mf"])
def test_a_network_built_on_meta_gives_the_same_answers(arch, tmp_path, monkeypatch):
    """ResNet and MobileNet (BatchNorm and its num_batches_tracked), Swin (relative position
    index buffers computed in __init__) and RegNet (which cannot be built on meta: built as
    before)."""
    state = _cache_random_weights(arch, tmp_path, monkeypatch)
    loaded = load_model(arch)
    tensors = [*loaded.module.parameters(), *loaded.module.buffers()]
    assert not any(t.is_meta for t in tensors)
    torch.manual_seed(1)
    batch = torch.rand(3, 3, 224, 224)
    new, old = _top5(loaded.module, batch), _top5(_built_the_usual_way(arch, state), batch)
    assert torch.equal(new.indices, old.indices)
    assert torch.equal(new.values, old.values)


def test_the_network_is_not_initialized_before_its_weights_are_put_in(tmp_path, monkeypatch):
    from torchvision import models

    _cache_random_weights("resnet18", tmp_path, monkeypatch)
    built_on = []  # where each network built had its parameters, as it was built
    real_get_model = models.get_model

    def get_model(*args, **kwargs):
        module = real_get_model(*args, **kwargs)
        built_on.append({p.device.type for p in module.parameters()})
        return module

    monkeypatch.setattr(models, "get_model", get_model)
    loaded = load_model("resnet18")
    assert built_on == [{"meta"}]  # built once, with no memory or random values
    assert {p.device.type for p in loaded.module.parameters()} == {"cpu"}


def test_weights_saved_in_half_precision_are_used_as_float32(tmp_path):
    """A copy converted them; the network built on meta gets them converted the same way."""
    from torchvision.models import resnet18

    torch.manual_seed(0)
    state = {key: tensor.half() if tensor.is_floating_point() else tensor
             for key, tensor in resnet18().state_dict().items()}
    half_file = tmp_path / "half.pth"
    torch.save(state, half_file)
    loaded = load_model("resnet18", weights_file=str(half_file))
    assert {p.dtype for p in loaded.module.parameters()} == {torch.float32}
    torch.manual_seed(1)
    batch = torch.rand(2, 3, 224, 224)
    new, old = _top5(loaded.module, batch), _top5(_built_the_usual_way("resnet18", state), batch)
    assert torch.equal(new.indices, old.indices) and torch.equal(new.values, old.values)
