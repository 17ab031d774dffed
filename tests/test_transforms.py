"""Batched presets checked against torchvision.transforms.v2 (and PIL for the Caffe evaluation path)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from squeezelab.data import default_preset_for, get_preset, list_datasets, list_presets
from squeezelab.data import transforms as T
from squeezelab.errors import ConfigError
from conftest import shared_path


def _batch(n=4, h=32, w=32, seed=0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, h, w), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


@pytest.mark.parametrize("name", list_presets())
@pytest.mark.parametrize("side", [32, 64])
def test_every_preset_gives_float_batches_of_its_input_size(name, side):
    p = get_preset(name)
    x = _batch(3, side, side)
    for out in (p.train(x, generator=torch.Generator().manual_seed(0)), p.eval(x)):
        assert out.dtype == torch.float32 and out.shape == (3, 3, p.input_size, p.input_size)
        assert torch.isfinite(out).all()
    assert p.channel_order in ("RGB", "BGR") and len(p.mean) == len(p.std) == 3


@pytest.mark.parametrize("name", list_presets())
def test_train_is_reproducible_with_a_generator(name):
    p, x = get_preset(name), _batch(8, 32, 32)
    a = p.train(x, generator=torch.Generator().manual_seed(1))
    b = p.train(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def test_normalisation_matches_torchvision():
    x = _batch(4, 32, 32)
    p = get_preset("report003")  # no augmentation, native 32: eval is exactly ToDtype + Normalize
    ref = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(p.mean, p.std)])(x)
    torch.testing.assert_close(p.eval(x), ref, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(p.train(x), ref, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("shape", [(300, 400), (200, 150)])  # shrink and enlarge
def test_report004_eval_matches_torchvision_resize_centre_crop(shape):
    x = _batch(2, *shape)
    p = get_preset("report004")
    tail = [v2.Resize(256, antialias=True), v2.CenterCrop(224), v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(p.mean, p.std)]
    torch.testing.assert_close(p.eval(x), v2.Compose(tail)(x), atol=1e-5, rtol=1e-5)  # uint8 path
    ref_float = v2.Compose([v2.ToDtype(torch.float32, scale=True)] + tail[:2] + tail[3:])(x)
    ours_float = get_preset("report004")._finish(T.center_crop(T.resize_shorter(x.float(), 256), 224))
    torch.testing.assert_close(ours_float, ref_float, atol=1e-4, rtol=0)  # float path (CUDA)


def test_crop_at_matches_torchvision_crop_exactly():
    x = _batch(5, 40, 40)
    top, left = torch.tensor([0, 3, 8, 1, 5]), torch.tensor([8, 0, 2, 7, 4])
    out = T.crop_at(x, top, left, 32)
    for i in range(5):
        assert torch.equal(out[i], TF.crop(x[i], int(top[i]), int(left[i]), 32, 32))


@pytest.mark.parametrize("mode,tv_mode", [("constant", "constant"), ("reflect", "reflect")])
def test_random_crop_is_an_exact_crop_of_the_padded_image(mode, tv_mode):
    x = _batch(6, 32, 32).float()
    out = T.random_crop(x, 32, 4, torch.Generator().manual_seed(3), mode)
    padded = TF.pad(x, [4], padding_mode=tv_mode)
    offsets = set()
    for i in range(6):
        hits = [(t, l) for t in range(9) for l in range(9) if torch.equal(out[i], TF.crop(padded[i], t, l, 32, 32))]
        assert hits, f"image {i} is not a 32x32 window of the padded image"
        offsets.add(hits[0])
    assert len(offsets) > 1  # offsets really are random per image


@pytest.mark.parametrize("mode", ["constant", "reflect"])
def test_padding_and_flip_folded_into_the_crop_match_torchvision(mode):
    x = _batch(4, 12, 10)
    top, left = torch.tensor([0, 2, 5, 8]), torch.tensor([8, 0, 3, 6])
    flip = torch.tensor([True, False, True, False])
    out = T.crop_at(x, top, left, 9, padding=4, mode=mode, flip=flip)
    padded = TF.pad(x, [4], padding_mode=mode)
    for i in range(4):
        ref = TF.crop(padded[i], int(top[i]), int(left[i]), 9, 9)
        assert torch.equal(out[i], TF.horizontal_flip(ref) if flip[i] else ref)


def test_random_hflip_is_exact_and_per_image():
    x = _batch(64, 8, 8)
    out = T.random_hflip(x, torch.Generator().manual_seed(0))
    flipped = [torch.equal(out[i], TF.horizontal_flip(x[i])) for i in range(64)]
    kept = [torch.equal(out[i], x[i]) for i in range(64)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 16 < sum(flipped) < 48
    assert torch.equal(T.random_hflip(x, p=1.0), TF.horizontal_flip(x))


@pytest.mark.parametrize("deg", [0.0, 12.5, -20.0, 90.0])
def test_rotation_matches_torchvision_rotate(deg):
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    ours = T.rotate_resize_at(x, 16, torch.full((2,), math.radians(deg)))
    ref = TF.rotate(x, deg, interpolation=InterpolationMode.BILINEAR)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)


def test_rotation_with_folded_flip_is_rotate_then_mirror():
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    angle, flip = torch.full((3,), math.radians(17.0)), torch.tensor([True, False, True])
    ours = T.rotate_resize_at(x, 16, angle, flip)
    for i in range(3):
        ref = TF.rotate(x[i], 17.0, interpolation=InterpolationMode.BILINEAR)
        torch.testing.assert_close(ours[i], TF.horizontal_flip(ref) if flip[i] else ref, atol=1e-5, rtol=0)


def test_upsample_and_rotate_in_one_resampling_is_close_to_torchvision_two_steps():
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    up = TF.resize(x, [227, 227], antialias=False)
    torch.testing.assert_close(T.rotate_resize_at(x, 227, torch.zeros(2)), up, atol=1e-5, rtol=0)
    ours = T.rotate_resize_at(x, 227, torch.full((2,), math.radians(15)))
    ref = TF.rotate(up, 15.0, interpolation=InterpolationMode.BILINEAR)
    assert (ours - ref).abs().mean() < 0.01  # one resampling instead of two: small, not zero


def test_caffe_eval_keeps_227_images_and_converts_to_bgr_minus_mean():
    x = _batch(2, 227, 227)
    out = get_preset("caffe").eval(x)
    ref = x.flip(1).float() - torch.tensor([104.0, 117.0, 123.0])[:, None, None]
    torch.testing.assert_close(out, ref)


def test_caffe_eval_resize_crop_matches_pil():
    from PIL import Image

    path = next(iter(sorted(shared_path("imagenet-val-300", "images").glob("*.JPEG"))))
    im = Image.open(path).convert("RGB").resize((300, 260), Image.BILINEAR)  # a non-227 input
    x = torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1)[None]
    ref_im = im.resize((256, 256), Image.BILINEAR).crop((14, 14, 241, 241))  # Caffe: warp 256, centre 227
    ref = torch.from_numpy(np.asarray(ref_im)[:, :, ::-1].copy()).permute(2, 0, 1).float()
    ref -= torch.tensor([104.0, 117.0, 123.0])[:, None, None]
    diff = (get_preset("caffe").eval(x)[0] - ref).abs()
    assert diff.mean() < 1.0 and diff.max() < 12  # PIL rounds to uint8 and filters slightly differently


def test_decode_policy_caffe_keeps_227_and_warps_others():
    pol = get_preset("caffe").decode_policy(train=False)
    img227, img300 = _batch(1, 227, 227)[0], _batch(1, 300, 200)[0]
    assert pol.apply(img227) is img227
    assert pol.apply(img300).shape == (3, 227, 227)
    assert get_preset("caffe").decode_policy(train=True).apply(img227).shape == (3, 256, 256)
    assert get_preset("report004").decode_policy(train=False).apply(img300).shape == (3, 256, 256)


def test_presets_run_on_the_batch_device():
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for dev in devices:
        x = _batch(4, 64, 64).to(dev)
        g = torch.Generator(device=dev).manual_seed(0)
        for name in list_presets():
            assert get_preset(name).train(x, generator=g).device.type == dev


def test_unknown_preset_lists_valid_names():
    with pytest.raises(ConfigError, match="report000"):
        get_preset("report999")


def test_every_dataset_has_a_valid_default_preset():
    for name in list_datasets():
        assert default_preset_for(name) in list_presets()
    with pytest.raises(ConfigError):
        default_preset_for("mnist")


def test_digits_preset_statistics_match_the_data():
    from squeezelab.data import load_dataset

    x = torch.cat([load_dataset("digits", split=s).images for s in ("train", "test")]).float() / 255
    p = get_preset("digits")
    assert abs(x.mean().item() - p.mean[0]) < 2e-3 and abs(x.std().item() - p.std[0]) < 2e-3
