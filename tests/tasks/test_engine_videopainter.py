"""The videopainter engine adapter on tiny saved checkpoints (CPU, float32, 2 steps, windows of 9 frames)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers import CogVideoXImageToVideoPipeline

from tasks.engines.videopainter import VideoPainterEngine
from tasks.errors import InputError, UnsupportedEditError
from tests.videopainter.conftest import tiny_components
from videopainter.models.context_encoder import VideoPainterContextEncoder


@pytest.fixture(autouse=True)
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors on a shared 2-core runner
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("vp-engine")
    components = tiny_components(seed=0)
    CogVideoXImageToVideoPipeline(**components).save_pretrained(root / "base")
    torch.manual_seed(1)
    encoder = VideoPainterContextEncoder.from_transformer(components["transformer"], num_layers=2)
    for linear in encoder.branch_blocks:
        torch.nn.init.normal_(linear.weight, std=0.05)
    encoder.save_pretrained(root / "branch")
    return {"base": root / "base", "branch": root / "branch"}


def _engine(checkpoints, **kwargs) -> VideoPainterEngine:
    settings = {"device": "cpu", "dtype": "float32", "num_inference_steps": 2, "num_frames_per_window": 9}
    return VideoPainterEngine(base=checkpoints["base"], branch=checkpoints["branch"], **settings, **kwargs)


def _clip(num_frames: int, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(num_frames, height, width, 3), dtype=np.uint8)
    masks = np.zeros((num_frames, height, width), dtype=bool)
    masks[:, height // 4 : height // 2, width // 3 : width // 2] = True
    return frames, masks


def test_removal_keeps_background_and_geometry(checkpoints) -> None:
    """11 frames of 48x80: resized to the model's 64x64, padded to 17 frames (9 + 8), then restored."""
    engine = _engine(checkpoints)
    frames, masks = _clip(11, 48, 80)
    out = engine.inpaint(frames, masks, prompt="an empty road", edit_type="remove", seed=3)
    assert out.shape == frames.shape and out.dtype == np.uint8
    assert np.array_equal(out[~masks], frames[~masks])
    assert not np.array_equal(out[masks], frames[masks])
    pipe = engine.pipe
    engine.setup()
    assert engine.pipe is pipe  # loaded once per batch
    again = engine.inpaint(frames, masks, prompt="an empty road", edit_type="remove", seed=3)
    assert np.array_equal(again, out)  # seeded


def test_insertion_needs_an_edited_first_frame(checkpoints) -> None:
    engine = _engine(checkpoints)
    frames, masks = _clip(9, 64, 64)
    with pytest.raises(InputError) as info:
        engine.inpaint(frames, masks, prompt="a red car", edit_type="add")
    assert info.value.reason == "missing_first_frame"
    edited = frames[0].copy()
    edited[masks[0]] = (255, 0, 0)
    out = engine.inpaint(frames, masks, prompt="a red car", edit_type="add", first_frame=edited)
    assert np.array_equal(out[~masks], frames[~masks])
    with pytest.raises(UnsupportedEditError):
        engine.check_edit_type("style_transfer")


def test_bad_inputs_are_input_errors(checkpoints) -> None:
    engine = _engine(checkpoints)
    frames, masks = _clip(9, 64, 64)
    with pytest.raises(InputError, match="mask"):
        engine.inpaint(frames, masks[:, :32])
    with pytest.raises(InputError) as info:
        engine.inpaint(frames, np.zeros_like(masks))
    assert info.value.reason == "empty_mask"
    with pytest.raises(InputError):
        engine.inpaint(frames.astype(np.float32), masks)


def test_version_names_the_checkpoints_by_content(checkpoints, tmp_path: Path) -> None:
    first, second = _engine(checkpoints), _engine(checkpoints)
    assert first.version == second.version
    assert (
        first.version.startswith("videopainter-") and "+branch." in first.version and "+idlora.none" in first.version
    )
    copy = tmp_path / "branch"
    copy.mkdir()
    for path in checkpoints["branch"].iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    assert VideoPainterEngine(base=checkpoints["base"], branch=copy).version == first.version  # same content
    weights = copy / "diffusion_pytorch_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert VideoPainterEngine(base=checkpoints["base"], branch=copy).version != first.version
    assert first.params()["first_frame_source"] == "propagation"
    assert "videopainter" == first.engine_id and first.edit_types == {"remove", "add", "replace", "attribute"}
