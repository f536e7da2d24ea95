"""Calibration sources: folders, .npy arrays, the built-in photo crops, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bbdeploy.data.photos import CALIBRATION_PHOTOS, EVALUATION_PHOTOS, calibration_photos, evaluation_photos
from bbdeploy.backbones import resolve
from bbdeploy.errors import BBDeployError
from bbdeploy.quantization import calibration
from bbdeploy.quantization.calibration import BUILTIN_WARNING, calibration_set

PRE = resolve("mobilenet_v2").preprocess
SIZE = 32


def _write_images(folder, count, photos, start=0):
    names = sorted(photos)
    for i in range(start, start + count):
        sub = folder / f"class{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        suffix = (".jpg", ".png", ".webp", ".bmp")[i % 4]
        Image.fromarray(photos[names[i % len(names)]][: 64 + i, : 80 + i]).save(sub / f"img{i:03d}{suffix}")


def test_folder_is_searched_recursively_and_sampled_deterministically(tmp_path, photos):
    _write_images(tmp_path, 20, photos)
    (tmp_path / "notes.txt").write_text("not an image")
    first = calibration_set(tmp_path, PRE, SIZE, size=7)
    again = calibration_set(tmp_path, PRE, SIZE, size=7)
    assert len(first) == 7 and first.items == again.items == sorted(first.items)
    assert {p.suffix for p in calibration_set(tmp_path, PRE, SIZE, size=100).items} == {".jpg", ".png", ".webp", ".bmp"}
    batches = list(first.batches(3))
    assert [b.shape for b in batches] == [(3, 3, SIZE, SIZE), (3, 3, SIZE, SIZE), (1, 3, SIZE, SIZE)]
    assert all(b.dtype == np.float32 for b in batches)
    assert first.record()["fingerprint"] == again.record()["fingerprint"]


def test_fingerprint_follows_file_contents(tmp_path, photos):
    _write_images(tmp_path, 4, photos)
    before = calibration_set(tmp_path, PRE, SIZE).fingerprint()
    target = sorted(tmp_path.rglob("*.png"))[0]
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(target)
    assert calibration_set(tmp_path, PRE, SIZE).fingerprint() != before


def test_unreadable_files_are_counted_not_fatal(tmp_path, photos):
    _write_images(tmp_path, 5, photos)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    source = calibration_set(tmp_path, PRE, SIZE)
    assert sum(len(b) for b in source.batches(4)) == 5
    assert source.unreadable == [str(tmp_path / "broken.jpg")]
    assert source.record()["unreadable"] == 1


def test_all_unreadable_is_an_error(tmp_path):
    for i in range(3):
        (tmp_path / f"bad{i}.png").write_bytes(b"garbage")
    with pytest.raises(BBDeployError, match="none of the 3 calibration images .* could be read"):
        list(calibration_set(tmp_path, PRE, SIZE).batches())


def test_empty_folder_and_wrong_path_are_errors(tmp_path):
    with pytest.raises(BBDeployError, match="holds no images"):
        calibration_set(tmp_path, PRE, SIZE)
    (tmp_path / "data.csv").write_text("x")
    with pytest.raises(BBDeployError, match="neither a folder of images nor a .npy file"):
        calibration_set(tmp_path / "data.csv", PRE, SIZE)


def test_images_are_decoded_one_batch_at_a_time(tmp_path, photos, monkeypatch):
    _write_images(tmp_path, 12, photos)
    opened = []
    real_open = Image.open
    monkeypatch.setattr(calibration.Image, "open", lambda path, *a, **k: opened.append(path) or real_open(path, *a, **k))
    stream = calibration_set(tmp_path, PRE, SIZE).batches(4)
    next(stream)
    assert len(opened) == 4


def test_a_loaded_set_is_decoded_once_and_a_set_over_the_budget_keeps_streaming(tmp_path, photos, monkeypatch):
    _write_images(tmp_path, 6, photos)
    opened = []
    real_open = Image.open
    monkeypatch.setattr(calibration.Image, "open", lambda path, *a, **k: opened.append(path) or real_open(path, *a, **k))
    streamed = calibration_set(tmp_path, PRE, SIZE).load(budget_bytes=5 * 3 * SIZE * SIZE * 4)  # room for 5 of 6
    assert not streamed.in_memory and not opened
    loaded = calibration_set(tmp_path, PRE, SIZE).load()
    first = np.concatenate(list(loaded.batches(4)))
    again = np.concatenate(list(loaded.batches(5)))
    assert loaded.in_memory and len(opened) == 6 and first.shape == (6, 3, SIZE, SIZE)
    np.testing.assert_array_equal(first, again)
    np.testing.assert_array_equal(first, np.concatenate(list(streamed.batches(4))))  # the same pixels either way


def test_npy_inputs_preprocessed_or_raw_photos(tmp_path, photos):
    floats = np.random.default_rng(0).normal(size=(5, 3, SIZE, SIZE)).astype(np.float32)
    np.save(tmp_path / "pre.npy", floats)
    batches = list(calibration_set(tmp_path / "pre.npy", PRE, SIZE).batches(2))
    assert np.array_equal(np.concatenate(batches), floats)

    raw = np.stack([photos["chelsea"][:100, :120]] * 3)
    np.save(tmp_path / "raw.npy", raw)
    (batch,) = list(calibration_set(tmp_path / "raw.npy", PRE, SIZE).batches(8))
    assert batch.shape == (3, 3, SIZE, SIZE)


def test_npy_of_the_wrong_shape_says_what_to_pass(tmp_path):
    np.save(tmp_path / "wrong.npy", np.zeros((4, 3, 16, 16), np.float32))
    with pytest.raises(BBDeployError, match=r"shape \(4, 3, 16, 16\) and dtype float32; pass preprocessed float "
                                            r"inputs of shape \(N, 3, 32, 32\) or uint8 photos"):
        calibration_set(tmp_path / "wrong.npy", PRE, SIZE)


def test_builtin_photo_crops_are_loud_and_deterministic():
    source = calibration_set(None, PRE, SIZE, size=30)
    assert source.warning == BUILTIN_WARNING and source.record()["warning"] == BUILTIN_WARNING
    assert source.items == calibration_set(None, PRE, SIZE, size=30).items
    assert {name for name, _ in source.items} == set(CALIBRATION_PHOTOS)  # spread over every calibration photo
    batch = next(source.batches(30))
    assert batch.shape == (30, 3, SIZE, SIZE) and batch.std() > 0.1  # real image content, not constant


def test_evaluation_photos_are_disjoint_from_calibration_photos():
    """int8 parity is measured on photos the built-in calibration never saw, from three packages."""
    assert not set(CALIBRATION_PHOTOS) & set(EVALUATION_PHOTOS)
    calibration_pixels = {photo.tobytes() for photo in calibration_photos().values()}
    evaluation = evaluation_photos()
    assert all(photo.tobytes() not in calibration_pixels for photo in evaluation.values())
    assert len({photo.shape for photo in evaluation.values()}) >= 4  # distinct photos, not one repeated
    crops = calibration.evaluation_crops(PRE, SIZE, 40)
    assert {name for name, _ in crops.items} == set(EVALUATION_PHOTOS)
    assert next(crops.batches(40)).std() > 0.1


def test_calib_size_must_be_positive():
    with pytest.raises(BBDeployError, match="--calib-size 0 must be at least 1"):
        calibration_set(None, PRE, SIZE, size=0)


def test_held_out_items_are_the_ones_calibration_did_not_sample(tmp_path, photos):
    _write_images(tmp_path, 10, photos)
    source = calibration_set(tmp_path, PRE, SIZE, size=4)
    held_out = source.held_out_set(5)
    assert len(held_out) == 5 and not set(held_out.items) & set(source.items)
    assert set(held_out.items) | set(source.items) <= set(tmp_path.rglob("img*"))
    assert calibration_set(None, PRE, SIZE, size=4).held_out_set(5) is None  # built-in: evaluation photos instead
