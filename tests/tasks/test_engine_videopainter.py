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
    """11 frames of 48x80: resized to the model's 64x64, padded to 18 frames (2 windows of 9 side by side), then
    restored."""
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


def test_release_settings_reach_the_pipeline(checkpoints) -> None:
    """Defaults: overlap 0, strength 1, dilation by the release's rule (None); explicit values are passed through."""
    engine = _engine(checkpoints)
    assert engine.params()["window_overlap"] == 0 and engine.params()["dilation_radius"] is None
    engine.setup()
    calls: list[dict] = []
    engine.pipe = _Forward(engine.pipe, calls)
    frames, masks = _clip(9, 64, 64)
    engine.inpaint(frames, masks, prompt="a road")
    assert (calls[-1]["window_overlap"], calls[-1]["strength"], calls[-1]["dilation_radius"]) == (0, 1.0, None)

    custom = _engine(checkpoints, strength=0.5, dilation_radius=2, window_overlap=1)
    custom.setup()
    custom.pipe = _Forward(custom.pipe, calls)
    out = custom.inpaint(frames, masks, prompt="a road", seed=1)
    assert (calls[-1]["window_overlap"], calls[-1]["strength"], calls[-1]["dilation_radius"]) == (1, 0.5, 2)
    assert np.array_equal(out[~masks], frames[~masks])
    for bad in ({"strength": 0.0}, {"dilation_radius": -1}, {"window_overlap": 9}, {"cache": "first_block"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            _engine(checkpoints, **bad)


class _Forward:
    """Stands in for the pipeline: records the keyword arguments of each call and forwards everything else."""

    def __init__(self, pipe, calls: list):
        self._pipe, self._calls = pipe, calls

    def __call__(self, **kwargs):
        self._calls.append(kwargs)
        return self._pipe(**kwargs)

    def __getattr__(self, name: str):
        return getattr(self._pipe, name)


def test_speed_options_are_applied_in_setup(checkpoints) -> None:
    """Off by default; when set, the loaded pipeline carries them and a clip still keeps its background and seed."""
    plain = _engine(checkpoints)
    plain.setup()
    assert plain.pipe.acceleration is None
    engine = _engine(checkpoints, cache="pyramid_attention_broadcast", cache_interval=3, fuse_qkv=True)
    params = engine.params()
    assert (params["cache"], params["cache_interval"], params["fuse_qkv"], params["compile_blocks"]) == (
        "pyramid_attention_broadcast",
        3,
        True,
        False,
    )
    engine.setup()
    assert engine.pipe.acceleration.describe() == "pab/3+fused_qkv"
    assert engine.pipe.transformer.is_cache_enabled
    assert all(block.attn1.fused_projections for block in engine.pipe.transformer.transformer_blocks)
    frames, masks = _clip(9, 64, 64)
    out = engine.inpaint(frames, masks, prompt="a road", seed=2)
    assert np.array_equal(out[~masks], frames[~masks])
    assert np.array_equal(out, engine.inpaint(frames, masks, prompt="a road", seed=2))
