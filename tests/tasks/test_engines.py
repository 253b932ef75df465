"""The engine registry (``auto`` resolution), the engine contract of the base class, the cv2 baseline and the null
engine."""

from __future__ import annotations

import numpy as np
import pytest

from tasks.engines import registry
from tasks.engines.base import Inpainted, InpaintEngine
from tasks.engines.baseline import Cv2InpaintEngine, NearestFrameEngine, nearest_uncovered_frames
from tasks.engines.null import NullEngine
from tasks.engines.propagation import PropagationEngine
from tasks.errors import InputError, UnsupportedEditError


@pytest.fixture
def no_videopainter_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in registry.VIDEOPAINTER_ENV.values():
        monkeypatch.delenv(var, raising=False)


def _clip(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, size=(4, 24, 32, 3), dtype=np.uint8)
    masks = np.zeros((4, 24, 32), bool)
    masks[:, 8:16, 10:20] = True
    return frames, masks


@pytest.mark.parametrize(
    "name, cls",
    [
        ("propagation", PropagationEngine),
        ("cv2-inpaint", Cv2InpaintEngine),
        ("nearest-frame", NearestFrameEngine),
        ("null", NullEngine),
    ],
)
def test_get_engine_by_name(name: str, cls: type) -> None:
    engine = registry.get_engine(name)
    assert isinstance(engine, cls) and engine.engine_id == name
    assert engine.selection_reason == "requested"
    assert engine.version


def test_auto_without_weights_is_propagation(no_videopainter_env: None) -> None:
    choice = registry.resolve_engine("auto")
    assert choice.engine == "propagation" and "not configured" in choice.reason
    engine = registry.get_engine("auto", flow_scale=0.25)
    assert isinstance(engine, PropagationEngine) and engine.flow_scale == 0.25


def test_auto_with_weights_but_no_cuda_is_propagation(no_videopainter_env, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("VPF_VIDEOPAINTER_BASE", str(tmp_path))
    monkeypatch.setattr(registry, "cuda_available", lambda: False)
    choice = registry.resolve_engine("auto")
    assert choice.engine == "propagation" and "no CUDA" in choice.reason
    # the VideoPainter paths are accepted (and unused) when auto falls back
    assert isinstance(registry.get_engine("auto", base=str(tmp_path)), PropagationEngine)


def test_auto_with_weights_and_cuda_is_videopainter(no_videopainter_env, monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(registry, "cuda_available", lambda: True)
    assert registry.resolve_engine("auto", base=str(tmp_path)).engine == "videopainter"
    monkeypatch.setenv("VPF_VIDEOPAINTER_BASE", str(tmp_path))
    choice = registry.resolve_engine("auto")
    assert choice.engine == "videopainter" and str(tmp_path) in choice.reason


def test_videopainter_paths_come_from_the_environment(no_videopainter_env, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("VPF_VIDEOPAINTER_BASE", str(tmp_path / "base"))
    monkeypatch.setenv("VPF_VIDEOPAINTER_BRANCH", str(tmp_path / "branch"))
    engine = registry.get_engine("videopainter", device="cpu")  # built lazily: nothing is loaded before setup()
    assert engine.engine_id == "videopainter"
    assert str(engine.base) == str(tmp_path / "base") and str(engine.branch) == str(tmp_path / "branch")


def test_unknown_engine_and_options_are_errors(no_videopainter_env) -> None:
    with pytest.raises(ValueError, match="unknown engine"):
        registry.get_engine("magic")
    with pytest.raises(ValueError, match="unknown option"):
        registry.get_engine("propagation", strength=3)
    with pytest.raises(ValueError, match="unknown option"):
        registry.get_engine("auto", sharpness=3)  # neither candidate takes it (videopainter has `strength`)


@pytest.mark.parametrize("engine", [Cv2InpaintEngine(), NearestFrameEngine(), NullEngine()])
def test_baselines_change_only_the_mask(engine) -> None:
    frames, masks = _clip()
    out = engine.inpaint(frames, masks)
    assert out.shape == frames.shape and out.dtype == np.uint8
    assert np.array_equal(out[~masks], frames[~masks])
    assert not np.array_equal(out[masks], frames[masks])
    with pytest.raises(UnsupportedEditError):
        engine.inpaint(frames, masks, edit_type="add")
    with pytest.raises(InputError) as info:
        engine.inpaint(frames, np.zeros_like(masks))
    assert info.value.reason == "empty_mask"


def test_null_engine_fills_with_the_frame_mean_of_the_background() -> None:
    frames, masks = _clip(1)
    out = NullEngine().inpaint(frames, masks)
    for t in range(len(frames)):
        expected = np.rint(frames[t][~masks[t]].astype(float).mean(0)).astype(np.uint8)
        assert (out[t][masks[t]] == expected).all()
    masks[2] = True  # a fully masked frame takes the clip's background mean
    out = NullEngine().inpaint(frames, masks)
    assert len(np.unique(out[2].reshape(-1, 3), axis=0)) == 1


def test_null_engine_with_every_frame_masked_fills_grey() -> None:
    frames, masks = _clip(1)
    masks[:] = True
    out = NullEngine().inpaint(frames, masks)
    assert (out == 128).all()


def test_sleep_engine_waits_holds_no_cpu_and_keeps_the_contract() -> None:
    import time

    from tasks.engines.sleep import SleepEngine

    frames, masks = _clip(1)
    engine = registry.get_engine("sleep", seconds=0.3)
    assert isinstance(engine, SleepEngine) and engine.params() == {"seconds": 0.3}
    wall, cpu = time.perf_counter(), time.process_time()
    out = engine.inpaint(frames, masks)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert wall >= 0.3 and cpu < 0.25  # it waits; the wait is not CPU work
    assert np.array_equal(out[~masks], frames[~masks]) and (out[masks] == 128).all()
    with pytest.raises(UnsupportedEditError):
        engine.inpaint(frames, masks, edit_type="add")
    with pytest.raises(ValueError, match="seconds"):
        SleepEngine(seconds=-1)


def test_cv2_baseline_settings() -> None:
    assert Cv2InpaintEngine(method="ns").params() == {"radius": 5, "method": "ns"}
    with pytest.raises(ValueError, match="method"):
        Cv2InpaintEngine(method="magic")


def test_nearest_uncovered_frame_of_every_pixel() -> None:
    masks = np.zeros((7, 1, 3), bool)
    masks[1:6, 0, 0] = True  # uncovered in frames 0 and 6: 1-2 look back, 4-5 ahead, 3 is a tie (the earlier wins)
    masks[:, 0, 1] = True  # never uncovered
    masks[0:2, 0, 2] = True  # uncovered from frame 2 on
    nearest = nearest_uncovered_frames(masks)
    assert nearest[:, 0, 0].tolist() == [0, 0, 0, 0, 6, 6, 6]
    assert nearest[:, 0, 1].tolist() == [-1] * 7
    assert nearest[:, 0, 2].tolist() == [2, 2, 2, 3, 4, 5, 6]  # an uncovered pixel's own frame is its nearest


def test_nearest_frame_engine_copies_the_background_where_it_was_seen_and_fills_the_rest() -> None:
    rng = np.random.default_rng(1)
    still = rng.integers(0, 256, size=(1, 24, 32, 3), dtype=np.uint8)
    frames = np.repeat(still, 6, axis=0)
    masks = np.zeros((6, 24, 32), bool)
    for t in range(6):
        masks[t, 8:16, 2 + 4 * t : 10 + 4 * t] = True  # a box sliding right
        frames[t][masks[t]] = 0  # the object: black
    masks[:, 10:12, 14:16] = True  # a spot covered in every frame
    result = NearestFrameEngine().run(frames, masks)
    seen = masks.copy()  # every hole pixel but the never-seen spot
    seen[:, 10:12, 14:16] = False
    assert np.array_equal(result.frames[seen], np.repeat(still, 6, axis=0)[seen])  # exact on a still camera
    assert result.report == {"spatial_pixels": 6 * 4, "hole_pixels": int(masks.sum())}
    assert (result.frames[:, 10:12, 14:16] != 0).any()  # the never-seen spot is filled, not left black
    # negative control: the per-frame spatial baseline cannot recover the texture the box hid
    spatial = Cv2InpaintEngine().inpaint(frames, masks)
    assert not np.array_equal(spatial[seen], np.repeat(still, 6, axis=0)[seen])


def test_nearest_frame_settings() -> None:
    assert NearestFrameEngine(radius=3).params() == {"radius": 3, "method": "telea"}
    with pytest.raises(ValueError, match="NearestFrameEngine: method"):
        NearestFrameEngine(method="magic")
    with pytest.raises(ValueError, match="radius"):
        NearestFrameEngine(radius=0)


# ------------------------------------------------------------------------------------------ the engine contract
class _Scribbler(InpaintEngine):
    """An engine whose fill writes everywhere (and records what it was given): the base class must keep the source
    outside the mask and check the inputs before calling it."""

    engine_id = "scribbler"
    edit_types = frozenset({"remove"})

    def __init__(self, *, shape: tuple[int, ...] | None = None, grow: int = 0):
        self.shape, self.grow, self.calls = shape, grow, []

    @property
    def version(self) -> str:
        return "scribbler-1"

    def fill(self, frames, masks, *, prompt, edit_type, seed, first_frame) -> Inpainted:
        self.calls.append((frames.dtype, masks.dtype))
        out = np.full(self.shape or frames.shape, 7, np.uint8)
        filled = None
        if self.grow:
            filled = masks.copy()
            filled[:, :, : self.grow] = True  # the engine grew the region itself (e.g. its own dilation)
        return Inpainted(out, flags=["scribbled"], report={"pixels": int(masks.sum())}, filled=filled)


def test_the_base_class_keeps_the_source_outside_the_mask_and_returns_the_report() -> None:
    frames, masks = _clip()
    engine = _Scribbler()
    result = engine.run(frames.astype(np.float32) / 255.0, masks.astype(np.uint8))
    assert engine.calls == [(np.uint8, np.bool_)]  # fill always sees uint8 frames and bool masks
    assert np.array_equal(result.frames[~masks], frames[~masks]) and (result.frames[masks] == 7).all()
    assert result.flags == ["scribbled"] and result.report == {"pixels": int(masks.sum())}
    grown = _Scribbler(grow=3).run(frames, masks).frames
    assert (grown[:, :, :3] == 7).all() and np.array_equal(
        grown[:, :, 3:][~masks[:, :, 3:]], frames[:, :, 3:][~masks[:, :, 3:]]
    )


def test_the_base_class_rejects_bad_inputs_before_fill_and_a_bad_fill_after_it() -> None:
    frames, masks = _clip()
    engine = _Scribbler()
    with pytest.raises(InputError, match="empty"):
        engine.run(frames, np.zeros_like(masks))
    with pytest.raises(InputError, match="counts must match"):
        engine.run(frames, masks[:2])
    with pytest.raises(UnsupportedEditError):
        engine.run(frames, masks, edit_type="add")
    assert engine.calls == []  # none of these reached the engine
    with pytest.raises(RuntimeError, match="scribbler"):
        _Scribbler(shape=(4, 24, 30, 3)).run(frames, masks)


@pytest.mark.parametrize("seed", range(4))
def test_paste_region_takes_the_fill_exactly_inside_the_region(seed: int) -> None:
    """The bounding-box paste equals a whole-clip select, for scattered regions, a broadcast fill and no region."""
    from tasks.engines.base import paste_region

    rng = np.random.default_rng(seed)
    frames = rng.integers(0, 256, size=(5, 20, 30, 3), dtype=np.uint8)
    filled = rng.integers(0, 256, size=(5, 20, 30, 3), dtype=np.uint8)
    region = rng.random((5, 20, 30)) < 0.05 * seed  # seed 0: empty
    for fill in (filled, np.broadcast_to(filled[:, :1, :1], frames.shape)):
        out = paste_region(frames, fill, region)
        np.testing.assert_array_equal(out, np.where(region[..., None], fill, frames))
        assert out is not frames and not np.shares_memory(out, fill)


# ------------------------------------------------------------------------------------------ vpf eval on real footage
def _eval_app():
    import typer

    from flows import cli_quality

    app = typer.Typer()
    cli_quality.register(app)
    app.command("noop")(lambda: None)  # two commands: typer keeps the subcommand names
    return app


def test_vpf_eval_on_real_footage_with_effect_masks_reports_each_engine() -> None:
    import json

    from typer.testing import CliRunner

    args = ["eval", "--real", "--engine", "propagation", "--engine", "nearest-frame", "--scenes", "static",
            "--effects", "shadow", "--frames", "9", "--height", "48", "--width", "72", "--effect-masks", "auto",
            "--json"]  # fmt: skip
    result = CliRunner().invoke(_eval_app(), args)
    assert result.exit_code == 0, result.output
    assert "real footage static" in result.output and "effect masks auto" in result.output
    table = json.loads(result.output.strip().splitlines()[-1])
    rows = {r["requested"]: r for r in table["engines"]}
    assert set(rows) == {"propagation", "nearest-frame"} and {r["clips"] for r in rows.values()} == {3}
    assert rows["propagation"]["psnr_in"] >= rows["nearest-frame"]["psnr_in"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--real", "--data", "somewhere"], "two sources"),
        (["--real", "--effects", "smoke"], "--effects must name"),
        (["--real", "--scenes", "occlusion"], "--scenes must name"),
        (["--effect-masks", "maybe"], "--effect-masks must be"),
    ],
)
def test_vpf_eval_usage_errors_exit_2_with_one_line(args: list[str], message: str) -> None:
    from typer.testing import CliRunner

    result = CliRunner().invoke(_eval_app(), ["eval", *args])
    assert result.exit_code == 2 and message in result.output
