"""tasks/masks.py: codecs (npz, COCO RLE, PNG, VPData label maps), resampling, dilation, QA."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from tasks.config import SelectionOptions
from tasks.errors import InputError
from tasks.masks import (
    decode_masks_npz,
    decode_masks_rle,
    dilate_masks,
    encode_masks_npz,
    encode_masks_rle,
    load_label_map,
    load_masks,
    mask_bbox,
    qa_masks,
    resample_masks,
    select_label,
)


# the run's defaults, from the one place they are written
QA = SelectionOptions().model_dump(include={"min_area", "max_area", "max_area_change"})


def random_masks(seed: int = 0, shape: tuple[int, int, int] = (5, 33, 47)) -> np.ndarray:
    return np.random.default_rng(seed).random(shape) > 0.6


def square_masks(num_frames: int = 6, height: int = 40, width: int = 60, side: int = 12) -> np.ndarray:
    masks = np.zeros((num_frames, height, width), bool)
    for t in range(num_frames):
        masks[t, 10 : 10 + side, 5 + 2 * t : 5 + 2 * t + side] = True
    return masks


def test_npz_round_trip_is_exact_compact_and_deterministic() -> None:
    masks = random_masks()
    data = encode_masks_npz(masks)
    decoded = decode_masks_npz(data)
    assert decoded.dtype == bool and decoded.shape == masks.shape
    np.testing.assert_array_equal(decoded, masks)
    assert data == encode_masks_npz(masks.copy()), "same mask, same bytes (ids hash them)"
    big = np.zeros((49, 480, 720), bool)
    big[:, 100:300, 200:400] = True
    assert len(encode_masks_npz(big)) < big.size / 8 / 20, "bit-packed and compressed"
    with pytest.raises(ValueError, match=r"\(T, H, W\)"):
        encode_masks_npz(masks[0])


def test_rle_round_trip_through_pycocotools() -> None:
    masks = random_masks(1)
    rles = encode_masks_rle(masks)
    assert json.loads(json.dumps(rles)) == rles
    np.testing.assert_array_equal(decode_masks_rle(rles), masks)
    # An RLE made directly by pycocotools (Fortran-ordered uint8), and uncompressed RLE, decode too.
    direct = mask_utils.encode(np.asfortranarray(masks[2].astype(np.uint8)))
    uncompressed = {"size": [33, 47], "counts": [0, 33 * 47]}  # every pixel set
    decoded = decode_masks_rle([direct, None, uncompressed])
    np.testing.assert_array_equal(decoded[0], masks[2])
    assert not decoded[1].any() and decoded[2].all()


def test_dilate_square_kernel() -> None:
    masks = np.zeros((2, 21, 21), bool)
    masks[0, 10, 10] = True
    dilated = dilate_masks(masks, 2)  # a radius: kernel side 5
    ys, xs = np.nonzero(dilated[0])
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (8, 12, 8, 12) and dilated[0].sum() == 25
    assert not dilated[1].any()
    assert dilate_masks(masks, 0).sum() == 1 and dilate_masks(masks, 0) is not masks


def test_load_vpdata_label_map(tmp_path) -> None:
    labels = np.zeros((4, 20, 30), np.uint8)
    labels[:, 2:8, 3:9] = 3
    labels[:, 10:15, 10:20] = 7
    path = tmp_path / "all_masks.npz"
    np.savez_compressed(path, labels)  # key arr_0, as VPData ships them
    np.testing.assert_array_equal(load_masks(str(path), 7), labels == 7)
    np.testing.assert_array_equal(load_masks(str(path)), labels != 0)
    raw = load_label_map(str(path))
    assert raw.dtype == np.uint8 and raw.shape == (4, 20, 30)
    np.testing.assert_array_equal(select_label(raw, 7, str(path), frames=[1, 3]), (labels == 7)[[1, 3]])
    with pytest.raises(InputError) as err:
        load_masks(str(path), 5)
    assert err.value.reason == "mask_id_absent" and "labels: 0, 3, 7" in str(err.value) and str(path) in str(err.value)


def test_load_png_folder_and_rle_json_by_id(tmp_path) -> None:
    masks = square_masks()
    folder = tmp_path / "pngs"
    folder.mkdir()
    for t, mask in enumerate(masks):
        cv2.imwrite(str(folder / f"{t:04d}.png"), mask.astype(np.uint8) * 255)
    np.testing.assert_array_equal(load_masks(str(folder)), masks)
    rle = tmp_path / "objects.json"
    rle.write_text(json.dumps({"1": encode_masks_rle(masks), "2": encode_masks_rle(~masks)}))
    np.testing.assert_array_equal(load_masks(str(rle), 2), ~masks)
    for mask_id, reason in ((None, "mask_id_absent"), (9, "mask_id_absent")):
        with pytest.raises(InputError) as err:
            load_masks(str(rle), mask_id)
        assert err.value.reason == reason
    with pytest.raises(InputError) as err:
        load_masks(str(tmp_path / "nothing.npz"))
    assert err.value.reason == "not_found"


def test_resample_follows_the_video_transform() -> None:
    masks = square_masks(num_frames=10, height=40, width=60)
    out = resample_masks(masks, range(1, 10, 3), height=20, width=30, video_size=(40, 60))
    assert out.shape == (3, 20, 30) and out.dtype == bool
    np.testing.assert_array_equal(
        out[1], cv2.resize(masks[4].astype(np.uint8), (30, 20), interpolation=cv2.INTER_NEAREST) > 0
    )
    crop = resample_masks(masks, [0], height=40, width=40, resize_mode="crop", video_size=(40, 60))
    np.testing.assert_array_equal(crop[0], masks[0][:, 10:50])
    with pytest.raises(InputError) as err:
        resample_masks(masks, [0], height=20, width=30, video_size=(30, 60), uri="m.npz")
    assert err.value.reason == "mask_shape_mismatch" and "60x40" in str(err.value) and "m.npz" in str(err.value)
    with pytest.raises(InputError) as err:
        resample_masks(masks, [0, 10], height=20, width=30, video_size=(40, 60))
    assert err.value.reason == "mask_frames_mismatch"
    # A mask in the coded orientation of a video displayed turned by 90° is turned like the video.
    turned = resample_masks(masks, [0], height=60, width=40, video_size=(60, 40), rotation=90)
    np.testing.assert_array_equal(turned[0], np.rot90(masks[0]))


def test_qa_accepts_a_steady_object() -> None:
    verdict = qa_masks(square_masks(), **QA)
    assert verdict.ok and verdict.reason is None
    assert verdict.stats["area_ratio_mean"] == pytest.approx(144 / 2400)
    assert verdict.stats["max_area_change"] == 0.0 and verdict.stats["bbox"] == [5, 10, 17, 22]
    assert mask_bbox(np.zeros((3, 3), bool)) is None


@pytest.mark.parametrize(
    "edit, reason",
    [
        (lambda m: m & False, "empty_mask"),
        (lambda m: np.ones_like(m), "full_frame_mask"),
        (lambda m: np.concatenate([m[:1] & False, m[1:]]), "empty_first_frame"),
        (lambda m: m[:, :, :] & (np.arange(m.shape[2]) < 7), "mask_too_small"),
        (lambda m: ~m, "mask_too_large"),
        (lambda m: np.concatenate([m[:3], np.repeat(m[3:4] | np.roll(m[3:4], 6, axis=1), 3, 0)]), "area_change_too_large"),
    ],
)  # fmt: skip
def test_qa_rejections_name_their_reason(edit, reason: str) -> None:
    verdict = qa_masks(edit(square_masks()), **QA)
    assert not verdict.ok and verdict.reason == reason and verdict.message
