"""Eval-time views: center crop, flip and TenCrop shapes and content, and logits averaged over all views."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fer_lightning.data.views import CenterCrop, FlipTTA, TenCropTTA, five_crop
from fer_lightning.lit_module import FERLitModule

IMAGE = torch.arange(48 * 48, dtype=torch.int32).reshape(1, 48, 48)


def test_center_crop() -> None:
    assert torch.equal(CenterCrop(40)(IMAGE), IMAGE[:, 4:44, 4:44])
    assert CenterCrop(None)(IMAGE) is IMAGE
    with pytest.raises(ValueError, match="larger than the image"):
        CenterCrop(50)(IMAGE)


def test_flip_views() -> None:
    views = FlipTTA(40)(IMAGE)
    assert views.shape == (2, 1, 40, 40)
    assert torch.equal(views[1], views[0].flip(-1))


def test_tencrop_shapes_and_views() -> None:
    views = TenCropTTA(40)(IMAGE)
    assert views.shape == (10, 1, 40, 40)
    corners = [IMAGE[:, :40, :40], IMAGE[:, :40, 8:], IMAGE[:, 8:, :40], IMAGE[:, 8:, 8:], IMAGE[:, 4:44, 4:44]]
    for i, crop in enumerate(corners):
        assert torch.equal(views[i], crop)
        assert torch.equal(views[5 + i], crop.flip(-1))
    assert len({v.sum().item() + 7 * v[0, 0, 0].item() for v in views}) == 10  # ten different views
    assert TenCropTTA(None)(torch.zeros(3, 64, 64)).shape == (10, 3, 57, 57)  # 90% crops when trained uncropped
    assert five_crop(IMAGE, 48).shape == (5, 1, 48, 48)


def test_views_of_a_batch_stack_each_images_views() -> None:
    """data.loader=device cuts the views of a whole (B, C, H, W) batch at once: (B, V, C, h, w), per image as before."""
    images = torch.randint(0, 256, (3, 1, 48, 48), dtype=torch.uint8)
    for views in (CenterCrop(40), CenterCrop(None), FlipTTA(40), TenCropTTA(40), TenCropTTA(None)):
        expected = torch.stack([views(image) for image in images])
        assert torch.equal(views(images), expected), views


def test_logits_are_averaged_over_all_ten_views() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(40 * 40, 3))
    module = FERLitModule(net, optimizer=torch.optim.SGD, num_classes=3).eval()
    image = torch.randint(0, 256, (1, 48, 48), dtype=torch.uint8)
    batch = torch.stack([TenCropTTA(40)(image), TenCropTTA(40)(image.flip(-2))])  # (2, 10, 1, 40, 40)
    with torch.no_grad():
        expected = torch.stack([net(module.normalize(views)).mean(0) for views in batch])
        torch.testing.assert_close(module(batch), expected)
        for view in range(10):  # every view counts: changing any one of them changes the averaged logits
            changed = batch.clone()
            changed[:, view] = 255 - changed[:, view]
            assert not torch.allclose(module(changed), expected)
