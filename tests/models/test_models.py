from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torchvision.models import resnet50
from torchvision.models.video import r3d_18

from rsnflow.io import InvalidInputError
from rsnflow.models import (
    MLP,
    RSNClassifier,
    build_network,
    load_classifier,
    load_pretrained,
    one_channel_conv,
    save_classifier,
)
from rsnflow.space import MNI4_SHAPE, load_brain_mask


def test_mlp_is_the_papers() -> None:
    net = MLP(58)
    linears = [m for m in net.layers if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [
        (109350, 200),
        (200, 200),
        (200, 200),
        (200, 58),
    ]
    kinds = [type(m).__name__ for m in net.layers]
    assert kinds == ["Linear", "ReLU", "Linear", "ReLU", "Dropout", "Linear", "ReLU", "Linear"]
    assert net.layers[4].p == pytest.approx(0.66)
    assert net(torch.zeros(3, 1, *MNI4_SHAPE)).shape == (3, 58)


def test_masked_mlp_is_the_full_grid_mlp() -> None:
    mask = np.asarray(load_brain_mask().dataobj) > 0
    torch.manual_seed(0)
    full = MLP(58).eval()
    torch.manual_seed(0)
    masked = MLP(58, mask=mask).eval()
    assert masked.layers[0].in_features == int(mask.sum()) < 109350 // 3
    # same seed, same weights: the mask's columns of the whole-grid first layer, the rest identical
    torch.testing.assert_close(
        masked.layers[0].weight, full.layers[0].weight[:, torch.from_numpy(mask.ravel())]
    )
    torch.testing.assert_close(masked.layers[5].weight, full.layers[5].weight)
    maps = torch.randn(4, 1, *MNI4_SHAPE) * torch.from_numpy(
        mask
    )  # zero outside, as RSNClassifier makes them
    with torch.no_grad():
        torch.testing.assert_close(masked(maps), full(maps), atol=1e-5, rtol=1e-5)


def test_masked_mlp_saves_and_reloads(tmp_path: Path) -> None:
    mask = np.asarray(load_brain_mask().dataobj) > 0
    model = RSNClassifier("mlp", [f"c{i}" for i in range(58)], mask).eval()
    save_classifier(model, tmp_path / "m")
    again, meta = load_classifier(tmp_path / "m")
    assert meta["mlp_input"] == "mask"
    maps = torch.randn(2, *MNI4_SHAPE)
    with torch.no_grad():
        torch.testing.assert_close(again(maps), model(maps))


@pytest.mark.parametrize(("arch", "shape"), [("resnet2p5d", (2, 3, 64, 64)), ("r3d18", (1, 1, *MNI4_SHAPE))])
def test_cnn_shapes(arch: str, shape: tuple[int, ...]) -> None:
    net = build_network(arch, 58).eval()
    with torch.no_grad():
        assert net(torch.rand(*shape) * 255).shape == (shape[0], 58)


def test_one_channel_stem_sums_the_rgb_kernels() -> None:
    conv = nn.Conv3d(3, 4, (3, 3, 3), padding=1)
    one = one_channel_conv(conv)
    x = torch.randn(1, 1, 5, 6, 7)
    # A grey volume repeated on three channels gives the same response.
    assert torch.allclose(one(x), conv(x.repeat(1, 3, 1, 1, 1)), atol=1e-5)


def test_pretrained_weights_from_a_local_file(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ref = resnet50(weights=None)  # the 1000-class ImageNet layout of torchvision's checkpoints
    torch.save(ref.state_dict(), tmp_path / "resnet50.pth")
    net = build_network("resnet2p5d", 58)
    left = load_pretrained(net, tmp_path / "resnet50.pth")
    assert left == ["net.fc.bias", "net.fc.weight"]
    assert torch.equal(net.net.conv1.weight, ref.conv1.weight)

    video = r3d_18(weights=None)
    torch.save(video.state_dict(), tmp_path / "r3d18.pth")
    net3 = build_network("r3d18", 58)
    left = load_pretrained(net3, tmp_path / "r3d18.pth")
    assert left == ["net.fc.bias", "net.fc.weight"]
    assert torch.allclose(net3.net.stem[0].weight, video.stem[0].weight.sum(1, keepdim=True))

    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(InvalidInputError, match=r"junk\.pth"):
        load_pretrained(net, tmp_path / "junk.pth")
    torch.save({"other.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(InvalidInputError, match="no tensor in the file matches"):
        load_pretrained(net, tmp_path / "other.pth")


@pytest.mark.parametrize("arch", ["mlp", "resnet2p5d"])
def test_saved_classifier_reloads_and_predicts_identically(arch: str, tmp_path: Path) -> None:
    torch.manual_seed(1)
    mask = load_brain_mask().get_fdata() > 0
    model = RSNClassifier(arch, [f"c{i}" for i in range(58)], mask).eval()
    maps = torch.randn(4, *MNI4_SHAPE)
    with torch.no_grad():
        want = model(maps)
    save_classifier(model, tmp_path / arch, {"note": "test"})
    again, meta = load_classifier(tmp_path / arch)
    with torch.no_grad():
        assert torch.equal(again(maps), want)
    assert meta["note"] == "test" and meta["arch"] == arch


def test_classifier_normalises_like_the_dataset() -> None:
    from rsnflow.dataset import normalise_maps

    mask = load_brain_mask().get_fdata() > 0
    model = RSNClassifier("mlp", ["a", "b"], mask)
    maps = np.random.default_rng(0).normal(5, 3, (2, *MNI4_SHAPE)).astype(np.float32)
    got = model.prepare(torch.from_numpy(maps))[:, 0].numpy()
    assert np.allclose(got, normalise_maps(maps, mask), atol=1e-4)


def test_unknown_architecture() -> None:
    with pytest.raises(ValueError, match="unknown architecture 'vit'"):
        build_network("vit", 58)
