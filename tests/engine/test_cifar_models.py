"""Every CIFAR model runs forward and backward, with the parameter counts the book prints."""

from __future__ import annotations

import pytest
import torch

from engine.cifar import models
from engine.jobs import JobError

BOOK_MODELS = [name for name in models.MODELS if name != "fast"]


@pytest.mark.parametrize("name", BOOK_MODELS)
def test_book_model_forward_and_backward(name):
    torch.manual_seed(0)
    model = models.build_model(name, num_classes=3)
    x = torch.randn(4, 3, 32, 32)
    logits = model(x)
    assert logits.shape == (4, 3)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 0])).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


def test_parameter_counts_match_the_book_for_cifar2():
    assert models.parameter_count("net", 2) == {"trainable": 18090, "total": 18090}
    assert models.parameter_count("netwidth", 2)["trainable"] == 38386
    counts = {name: models.parameter_count(name, 10)["trainable"] for name in BOOK_MODELS}
    assert counts["netwidth"] == 38386 + 8 * 33  # 10 classes: fc2 gains 8 outputs (32 w + 1 b)
    assert counts["netdropout"] == counts["netwidth"]  # dropout has no parameters
    assert counts["netresdeep"] > counts["netres"]


def test_resdeep_blocks_have_their_own_weights():
    model = models.NetResDeep(num_classes=2, n_blocks=3)
    convs = [block.conv.weight for block in model.resblocks]
    assert len({id(w) for w in convs}) == 3
    assert model.resblocks[0].batch_norm.weight.detach().eq(0.5).all()


def test_unknown_model_is_a_clear_error():
    with pytest.raises(JobError, match="unknown model 'resnet9000'.*netresdeep"):
        models.build_model("resnet9000", 10)


def test_normalized_classifier_normalizes_inside():
    model = models.NormalizedClassifier(torch.nn.Flatten(), [0.5, 0.5, 0.5], [0.25, 0.25, 0.25])
    out = model(torch.full((1, 3, 1, 1), 0.75))
    assert torch.allclose(out, torch.ones(1, 3))


def test_fast_net_from_the_registry_trains_a_step():
    torch.manual_seed(0)
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    model = models.build_model("fast", 10, images)
    logits = model(torch.randn(8, 3, 32, 32))
    assert logits.shape == (8, 10)
    logits.float().logsumexp(1).mean().backward()
    counts = models.count_parameters(model)
    assert 0 < counts["trainable"] <= counts["total"]
