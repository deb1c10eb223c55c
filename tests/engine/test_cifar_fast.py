"""The Fast net and recipe (engine/cifar/fast.py): shapes, whitening init, TTA, optimizer groups,
defaults. Small CPU tensors only; no timing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from engine.cifar import fast


def _images(n: int = 64, seed: int = 0) -> torch.Tensor:
    """uint8 N×3×32×32 with correlated channels and smooth pixels, like photos."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 1, 8, 8, generator=g)
    smooth = F.interpolate(base, size=32, mode="bilinear", align_corners=False)
    tint = torch.rand(n, 3, 1, 1, generator=g) * 0.4
    noise = torch.rand(n, 3, 32, 32, generator=g) * 0.1
    return ((smooth * 0.6 + tint + noise).clamp(0, 1) * 255).to(torch.uint8)


def _normalized(images: torch.Tensor) -> torch.Tensor:
    x = images.float() / 255
    mean = x.mean(dim=(0, 2, 3), keepdim=True)
    std = x.std(dim=(0, 2, 3), keepdim=True)
    return (x - mean) / std


@pytest.mark.parametrize("variant", sorted(fast.VARIANTS))
def test_forward_backward_shapes(variant):
    torch.manual_seed(0)
    images = _images(8)
    model = fast.build_fast_net(10, images, variant=variant)
    x = _normalized(images)
    logits = model(x)
    assert logits.shape == (8, 10)
    loss = F.cross_entropy(logits, torch.arange(8) % 10)
    loss.backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for p in trainable)
    assert model.whiten.weight.grad is None


def test_channels_last_matches_contiguous():
    torch.manual_seed(0)
    images = _images(4)
    model = fast.build_fast_net(3, images).eval()
    x = _normalized(images)
    with torch.no_grad():
        plain = model(x)
        model_cl = model.to(memory_format=torch.channels_last)
        cl = model_cl(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(cl, plain, rtol=1e-4, atol=1e-4)


def test_whitening_layer_is_computed_from_data_and_frozen():
    images = _images(200)
    model = fast.FastNet(10, widths=(8, 8, 8), stem_stride=1)
    random_weight = model.whiten.weight.detach().clone()
    model.init_whitening(images)
    assert not torch.allclose(model.whiten.weight, random_weight)
    assert not model.whiten.weight.requires_grad

    # The first half of the channels whitens 2×2 patches: their covariance is ~identity
    # (below 1 only where the eigenvalue is small next to WHITEN_EPS); the second half negates it.
    with torch.no_grad():
        out = model.whiten(_normalized(images))
    half = out.shape[1] // 2
    torch.testing.assert_close(out[:, half:] + out[:, :half],
                               torch.zeros_like(out[:, :half]), rtol=0, atol=1e-4)
    flat = out[:, :half].permute(1, 0, 2, 3).reshape(half, -1).double()
    assert flat.mean(1).abs().max() < 1e-3
    covariance = torch.cov(flat)
    off_diagonal = covariance - torch.diag(covariance.diag())
    assert off_diagonal.abs().max() < 0.02
    assert covariance.diag().max() < 1.01
    assert (covariance.diag() > 0.9).sum() >= half - 3


def test_whitening_stays_frozen_through_a_training_step():
    images = _images(16)
    model = fast.build_fast_net(10, images)
    before = model.whiten.weight.detach().clone()
    groups = fast.fast_param_groups(model, lr=0.1, weight_decay=1e-3)
    optimizer = torch.optim.SGD(groups, lr=0.1, momentum=0.85, nesterov=True)
    loss = F.cross_entropy(model(_normalized(images)), torch.arange(16) % 10)
    loss.backward()
    optimizer.step()
    assert torch.equal(model.whiten.weight, before)


def test_build_without_images_is_random_but_frozen():
    model = fast.build_fast_net(10)
    assert not model.whiten.weight.requires_grad
    assert model.config == fast.VARIANTS[fast.default_variant()]
    with pytest.raises(ValueError):
        fast.build_fast_net(10, variant="tpu")


def test_variant_follows_the_images_device():
    assert fast.default_variant("cpu") == "cpu"
    assert fast.default_variant("cuda") == "gpu"
    model = fast.build_fast_net(10, _images(4))
    assert model.config["stem_stride"] == fast.VARIANTS["cpu"]["stem_stride"]


def test_same_variant_state_dicts_are_interchangeable():
    trained = fast.build_fast_net(10, _images(8), variant="gpu")
    fresh = fast.build_fast_net(10, None, variant="gpu")
    fresh.load_state_dict(trained.state_dict())
    torch.testing.assert_close(fresh.whiten.weight, trained.whiten.weight)


def test_param_groups_cover_trainable_params_once():
    model = fast.build_fast_net(10, _images(8))
    groups = fast.fast_param_groups(model, lr=0.2, weight_decay=1e-3)
    grouped = [p for g in groups for p in g["params"]]
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(grouped) == len(trainable) == len({id(p) for p in grouped})
    assert {id(p) for p in grouped} == {id(p) for p in trainable}
    others, norm_biases = groups
    assert others["lr"] == 0.2 and others["weight_decay"] == 1e-3
    assert norm_biases["lr"] == pytest.approx(0.2 * fast.NORM_BIAS_LR_SCALE)
    # The decay per step (lr × weight_decay) is the same in both groups.
    assert norm_biases["lr"] * norm_biases["weight_decay"] == pytest.approx(0.2 * 1e-3)
    bn_biases = {id(m.bias) for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
    assert {id(p) for p in norm_biases["params"]} == bn_biases
    assert model.optimizer_param_groups(0.2, 1e-3)[1]["lr"] == norm_biases["lr"]


def test_whitening_bias_can_join_the_bias_rate_in_its_own_fading_group():
    model = fast.build_fast_net(10, _images(8))
    plain = fast.fast_param_groups(model, lr=0.2, weight_decay=1e-3)
    assert any(p is model.whiten.bias for p in plain[0]["params"])
    groups = model.optimizer_param_groups(0.2, 1e-3, whiten_bias_fade=True)
    assert len(groups) == 3
    others, norm_biases, faded = groups
    assert faded["params"] == [model.whiten.bias] and faded["fade"] is True
    assert faded["lr"] == norm_biases["lr"] and faded["weight_decay"] == norm_biases["weight_decay"]
    assert all(p is not model.whiten.bias for p in others["params"] + norm_biases["params"])
    assert sum(len(g["params"]) for g in groups) == sum(len(g["params"]) for g in plain)


def test_tta_level_0_is_the_plain_forward_and_levels_average_views():
    torch.manual_seed(0)
    images = _images(6)
    model = fast.build_fast_net(10, images).eval()
    x = _normalized(images)
    with torch.no_grad():
        plain = model(x)
        level0 = fast.predict_with_tta(model, x, 0)
        level1 = fast.predict_with_tta(model, x, 1)
        level2 = fast.predict_with_tta(model, x, 2)
    torch.testing.assert_close(level0, plain)
    torch.testing.assert_close(level1, 0.5 * (plain + model(x.flip(-1))))
    assert level2.shape == (6, 10)
    assert not torch.allclose(level2, level1)
    with torch.no_grad():
        level3 = fast.predict_with_tta(model, x, 3)
        padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
        views = [padded[..., dy:dy + 32, dx:dx + 32] for dy in range(3) for dx in range(3)]
        expected = sum(fast.predict_with_tta(model, v, 1) for v in views) / 9
    torch.testing.assert_close(level3, expected)
    assert torch.equal(views[4], x)  # the unshifted view is one of the nine


def test_tta_views_count_the_forward_passes_of_each_level():
    images = _images(2)
    model = fast.build_fast_net(10, images).eval()
    passes = []
    model.register_forward_hook(lambda module, args, out: passes.append(len(args[0])))
    for level in range(4):
        passes.clear()
        with torch.no_grad():
            fast.predict_with_tta(model, _normalized(images), level)
        assert sum(passes) == 2 * fast.tta_views(level), level
    assert [fast.tta_views(level) for level in range(4)] == [1, 2, 6, 18]


def test_tta_keeps_channels_last_inputs_working():
    images = _images(4)
    model = fast.build_fast_net(10, images).eval().to(memory_format=torch.channels_last)
    x = _normalized(images).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert fast.predict_with_tta(model, x, 2).shape == (4, 10)


@pytest.mark.parametrize("device_type", ["cpu", "cuda", "mps"])
def test_defaults_are_sane(device_type):
    d = fast.fast_defaults(device_type)
    assert d["variant"] in fast.VARIANTS
    assert d["epochs"] >= 1 and d["batch_size"] >= 32
    assert 0 < d["lr"] < 10 and 0 < d["momentum"] < 1 and d["nesterov"] is True
    assert d["optimizer"] == ("muon" if device_type == "cpu" else "nesterov")
    assert 0 < d["muon_lr"] < 1 and 0 < d["muon_momentum"] < 1
    assert 0 <= d["weight_decay"] < 0.1 and 0 <= d["label_smoothing"] < 0.5
    assert d["schedule"] == "warmup_linear" and 0 < d["warmup"] < 1
    assert d["flip"] is True and d["translate"] == 2
    assert d["tta_level"] in (0, 1, 2, 3)
    assert d["precision"] == "auto"
    fast.fast_defaults(device_type)["epochs"] = -1  # a fresh dict each time
    assert fast.fast_defaults(device_type)["epochs"] >= 1


@pytest.mark.parametrize("native_bf16,epochs", [(False, 8), (True, fast.CPU_BF16_EPOCHS)])
def test_the_cpu_recipe_trains_longer_where_bf16_is_in_hardware(monkeypatch, native_bf16,
                                                                 epochs):
    import engine.devices

    monkeypatch.setattr(engine.devices, "cpu_has_native_bf16", lambda: native_bf16)
    assert fast.fast_defaults("cpu")["epochs"] == epochs
    assert fast.fast_defaults("cuda")["epochs"] == fast._DEFAULTS_BY_DEVICE["gpu"]["epochs"]


def test_fast_defaults_name_what_the_trainer_reads():
    from engine.cifar import trainer

    readable = set(trainer.GENERIC_DEFAULTS) | set(trainer.RECIPE_RUN_KEYS)
    missing = readable - set(fast.FAST_DEFAULTS)
    assert not missing - {"eval_batch_size"}
    assert fast.FAST_DEFAULTS == fast.fast_defaults("cpu")


@pytest.mark.parametrize("in_channels,out_channels", [(5, 7), (16, 16)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_conv3x3_on_2x2_equals_the_convolution(in_channels, out_channels, channels_last):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, in_channels, 2, 2, generator=g)
    weight = torch.randn(out_channels, in_channels, 3, 3, generator=g)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x_ref, w_ref = x.clone().requires_grad_(), weight.clone().requires_grad_()
    x_new, w_new = x.clone().requires_grad_(), weight.clone().requires_grad_()
    grad_out = torch.randn(6, out_channels, 2, 2, generator=g)

    expected = F.conv2d(x_ref, w_ref, padding=1)
    expected.backward(grad_out)
    result = fast.conv3x3_on_2x2(x_new, w_new)
    result.backward(grad_out)

    torch.testing.assert_close(result, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x_new.grad, x_ref.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(w_new.grad, w_ref.grad, rtol=1e-5, atol=1e-5)


def test_conv3x3_takes_the_matrix_path_only_when_cpu_training_on_2x2(monkeypatch):
    calls = []
    real = fast.conv3x3_on_2x2
    monkeypatch.setattr(fast, "conv3x3_on_2x2", lambda x, w: calls.append(x.shape) or real(x, w))
    conv = fast.Conv3x3(4, 4)
    small, large = torch.randn(2, 4, 2, 2), torch.randn(2, 4, 4, 4)
    expected = F.conv2d(small, conv.weight, padding=1)

    torch.testing.assert_close(conv(small), expected, rtol=1e-5, atol=1e-5)
    assert len(calls) == 1
    conv(large)  # other map sizes: oneDNN
    with torch.no_grad():
        conv(small)  # evaluation: oneDNN
    conv.weight.requires_grad_(False)
    conv(small)  # frozen weights: oneDNN
    assert len(calls) == 1


def test_fast_net_scripts_and_traces_like_the_python_model():
    torch.manual_seed(0)
    images = _images(4)
    model = fast.build_fast_net(10, images, variant="cpu").eval()
    x = _normalized(images)
    with torch.no_grad():
        expected = model(x)
        scripted = torch.jit.script(model)(x)
        traced = torch.jit.trace(model, x)(x)
    torch.testing.assert_close(scripted, expected)
    torch.testing.assert_close(traced, expected)


def test_net_options_override_the_variant():
    from engine.cifar.models import build_model
    from engine.jobs import JobError

    plain = fast.build_fast_net(10, variant="cpu", residual=False, norm_eps=1e-12)
    assert plain.config["residual"] is False and plain.config["widths"] == (48, 96, 192)
    assert all(not block.residual for block in plain.blocks)
    assert plain.blocks[0].norm1.eps == 1e-12
    assert plain(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    scripted = torch.jit.script(plain.eval())
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(scripted(x), plain(x), atol=1e-5)
    with pytest.raises(JobError, match="depth"):
        build_model("fast", 10, variant="cpu", depth=3)
