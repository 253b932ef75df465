"""The weight-free side-effect finder (tasks/effects.py) and its place in the render step: shadows are found on
still cameras (median background) and on moving cameras over real footage that plays (local views), nothing grows on
clips without effects or from things moving on their own, cameras that cannot be compensated are refused, and the
grown mask is what is inpainted and recorded."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from catalog.store import Catalog
from tasks import effects
from tasks.camera_motion import _linear_quantile, camera_maps
from tasks.effects import EFFECT_SOURCES, find_effects
from tasks.engines.propagation import PropagationEngine
from tasks.errors import InputError
from tasks.masks import decode_masks_npz, dilate_masks, encode_masks_npz
from tasks.steps.plan import RenderJob, plan
from tasks.steps.render import load, render_id_of, render_params, store
from tasks.synthetic import make_scene
from tasks.video_io import encode_stored


SIZE = {"num_frames": 48, "height": 96, "width": 128}
STEP = 3  # every third frame: 16 frames in which the object crosses a good part of the frame (the finder needs
# frames in which it is far from each pixel it darkens); small, each scene is built and searched in well under 1 s


def _scene(camera: str, *, shadow: bool, num_objects: int = 1, seed: int = 0):
    """A synthetic scene whose first object casts (or not) a shadow: the object's outline moved down by half its
    height and right by a quarter of its width, darkening the background by 45 % outside the object.

    Returns ``(frames, object_masks, true_effect)``: uint8 `(T, H, W, 3)`, bool `(T, H, W)`, bool `(T, H, W)`."""
    scene = make_scene(camera, num_objects=num_objects, seed=seed, **SIZE)
    frames = scene.frames[::STEP].astype(np.float32)
    objects = scene.label_map[::STEP] == 1
    effect = np.zeros_like(objects)
    if shadow:
        for t, obj in enumerate(objects):
            ys, xs = np.nonzero(obj)
            if not len(ys):
                continue
            dy, dx = (ys.max() - ys.min()) // 2, (xs.max() - xs.min()) // 4
            cast = np.zeros(obj.shape, np.float32)
            cast[np.clip(ys + dy, 0, obj.shape[0] - 1), np.clip(xs + dx, 0, obj.shape[1] - 1)] = 1
            cast = cv2.GaussianBlur(cast, (5, 5), 1.0) * ~obj
            frames[t] *= (1 - 0.45 * cast)[..., None]
            effect[t] = (cast > 0.2) & ~obj
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8), objects, effect


MOVING = {"frames": 25, "height": 96, "width": 128}  # real footage, small: each case is built and searched in < 0.3 s


def _real(footage: str, camera: str, effect: str):
    """The real-footage case (tasks/real_footage.py, built on first use into the cache) at ``MOVING``'s size."""
    from tasks.real_footage import real_cases

    return real_cases(kinds=(camera,), effects=(effect,), footage=[footage], **MOVING)[0]


@pytest.mark.parametrize("footage", ["bigbuckbunny.mp4", "carphone_pristine.mp4"])
def test_a_reflection_on_real_footage_is_found_and_a_clean_clip_grows_nothing(footage: str) -> None:
    """Real footage (tasks/real_footage.py, built on first use into the cache), a still camera, 16x96x128: the
    object's translucent mirror image a little below it is found; the same clip without it grows nothing."""
    from tasks.real_footage import real_cases

    cases = real_cases(frames=16, height=96, width=128, kinds=("static",), effects=("reflection", "none"),
                       footage=[footage])  # fmt: skip
    reflected, clean = (next(c for c in cases if c.effect == e) for e in ("reflection", "none"))
    found = find_effects(reflected.source, reflected.object_mask)
    hit = (found.masks & reflected.effect_mask).sum()
    assert hit / reflected.effect_mask.sum() >= 0.5 and hit / found.masks.sum() >= 0.8
    assert not find_effects(clean.source, clean.object_mask).masks.any()


@pytest.mark.parametrize("seed", [0, 1])
def test_a_shadow_is_found_on_a_still_camera(seed: int) -> None:
    frames, objects, truth = _scene("static", shadow=True, seed=seed)
    found = find_effects(frames, objects)
    assert found.source == "static-background", found.reason
    hit = (found.masks & truth).sum()
    assert hit / found.masks.sum() >= 0.8  # what is found is the shadow
    assert not (found.masks & objects).any()  # never the object itself
    assert found.area == pytest.approx(found.masks.mean())
    # the region a render fills (dilated as the factory does at this width) takes most of the shadow with it; the
    # object's mask alone does not (negative control)
    covered = (dilate_masks(objects | found.masks, 3) & truth).sum() / truth.sum()
    alone = (dilate_masks(objects, 3) & truth).sum() / truth.sum()
    assert covered >= 0.75 and covered >= alone + 0.2, (covered, alone)


@pytest.mark.parametrize("camera", ["pan", "zoom", "handheld"])
@pytest.mark.parametrize("footage", ["bikes.mp4", "bigbuckbunny.mp4"])
def test_a_shadow_is_found_on_moving_cameras_from_local_views(footage: str, camera: str) -> None:
    """A moving camera over footage that plays: the shadow, moving with the object, is found against local views
    (most of it, and little else); the same clip without a shadow grows nothing (negative control)."""
    case = _real(footage, camera, "shadow")
    found = find_effects(case.source, case.object_mask)
    assert found.source == "local-views", found.reason
    hit = (found.masks & case.effect_mask).sum()
    assert hit / case.effect_mask.sum() >= 0.6 and hit / found.masks.sum() >= 0.8
    assert not (found.masks & case.object_mask).any()
    clean = _real(footage, camera, "none")
    assert find_effects(clean.source, clean.object_mask).masks.mean() < 0.001  # under 0.1 % of the clip's pixels


@pytest.mark.parametrize("footage", ["bikes.mp4", "bigbuckbunny.mp4", "carphone_pristine.mp4"])
def test_something_moving_on_its_own_near_the_object_on_a_pan_grows_nothing(footage: str) -> None:
    """A pan without a shadow, but with a dark blob (darkening by 45 %, like the shadows) crossing just below the
    object on a path of its own (3 px per frame rightwards in the frame, whatever the object does): not an effect.
    The blob on its own is as dark as a shadow and sits next to the object for a few frames; it does not stay in one
    place relative to the object, so it is not in the object's zone."""
    case = _real(footage, "pan", "none")
    frames = case.source.astype(np.float32)
    blob = np.zeros(case.object_mask.shape, bool)
    start = np.nonzero(case.object_mask[0])[1].mean() - 40
    for t, obj in enumerate(case.object_mask):
        ys = np.nonzero(obj)[0]
        drawn = np.zeros(obj.shape, np.uint8)
        cv2.ellipse(drawn, (int(start + 3 * t), int(ys.mean() + 22)), (9, 5), 0, 0, 360, 1, -1)
        blob[t] = (drawn > 0) & ~obj
        frames[t][blob[t]] *= 0.55
    frames = np.clip(np.rint(frames), 0, 255).astype(np.uint8)
    found = find_effects(frames, case.object_mask)
    assert found.source == "local-views", found.reason
    assert (found.masks & blob).sum() <= 0.02 * blob.sum()
    assert found.masks.mean() < 0.001


@pytest.mark.parametrize("camera", ["static", "pan"])
def test_no_growth_on_the_same_clip_without_a_shadow(camera: str) -> None:
    """Negative control of the synthetic tests: same scene, same object, no effect."""
    frames, objects, _ = _scene(camera, shadow=False)
    found = find_effects(frames, objects)
    assert found.source in ("static-background", "local-views")
    assert found.masks.mean() <= 0.002  # false positives bounded: 0.2 % of the clip's pixels


def test_a_still_camera_is_the_still_route_whatever_moving_cameras_says() -> None:
    """The moving-camera route changes nothing on a still camera: same result with ``moving_cameras`` on and off."""
    frames, objects, _ = _scene("static", shadow=True)
    on, off = find_effects(frames, objects), find_effects(frames, objects, moving_cameras=False)
    assert on.source == off.source == "static-background"
    assert (on.masks == off.masks).all() and on.masks.any()


@pytest.mark.parametrize("camera", ["pan", "zoom", "handheld"])
def test_moving_cameras_are_left_alone_when_asked_to(camera: str) -> None:
    """``moving_cameras=False``: a moving camera is refused, nothing grows, even where local views find the shadow
    (checked above)."""
    case = _real("bikes.mp4", camera, "shadow")
    found = find_effects(case.source, case.object_mask, moving_cameras=False)
    assert found.source == "unreliable" and "moving camera" in found.reason
    assert not found.masks.any() and found.area == 0.0


@pytest.mark.parametrize("seed", [0, 1, 3, 4])
def test_objects_moving_on_their_own_are_not_an_effect(seed: int) -> None:
    """Two objects cross the scene on their own paths; the finder is asked about the first only. The second one
    changes the background near the first as it passes, but does not move with it. (Seeds whose objects' paths
    differ, checked below: a companion walking along with the object, as in seed 2, cannot be told from its effect
    by the weight-free finder.)"""
    frames, objects, _ = _scene("static", shadow=False, num_objects=2, seed=seed)
    other = make_scene("static", num_objects=2, seed=seed, **SIZE).label_map[::STEP] == 2
    path = [np.nonzero(m)[1].mean() for m in objects], [np.nonzero(m)[1].mean() for m in other if m.any()]
    assert abs((path[0][-1] - path[0][0]) - (path[1][-1] - path[1][0])) > 15  # not moving together (pixels)
    found = find_effects(frames, objects)
    assert (found.masks & other).sum() <= 0.02 * other.sum()
    assert found.masks.mean() <= 0.002


def test_a_camera_that_cannot_be_compensated_grows_nothing() -> None:
    """Frames of independent noise: no camera motion explains them. Without moving cameras the finder refuses the
    clip; with them (the default) the local views find nothing that moves with the object."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(12, 64, 80, 3), dtype=np.uint8)
    objects = np.zeros((12, 64, 80), bool)
    objects[:, 20:40, 30:50] = True
    found = find_effects(frames, objects, moving_cameras=False)
    assert found.source == "unreliable" and found.area == 0.0 and not found.masks.any()
    assert found.reason
    found = find_effects(frames, objects)
    assert found.area == 0.0 and not found.masks.any()


def test_an_object_that_never_leaves_its_place_grows_nothing() -> None:
    """Without frames in which the object is far, no pixel near it has a background to compare with: the shadow of an
    object that stands still is not found (nothing to compare with), and nothing else is."""
    frames, objects, _ = _scene("static", shadow=True)
    still = np.repeat(objects[:1], len(objects), axis=0)
    frames = np.repeat(frames[:1], len(frames), axis=0)
    found = find_effects(frames, still)
    assert not found.masks.any() and found.area == 0.0

    everywhere = np.zeros(frames.shape[:3], bool)
    everywhere[:, 4:92, 4:124] = True  # no pixel is ever far from it
    found = find_effects(frames, everywhere)
    assert found.source == "unreliable" and not found.masks.any()

    # on a moving camera, an object that keeps its place in the scene: its surroundings are never seen without it
    case = _real("bikes.mp4", "pan", "shadow")
    pinned = np.repeat(case.object_mask[:1], MOVING["frames"], axis=0)
    found = find_effects(case.source, pinned)
    assert not found.masks.any() and found.area == 0.0


def test_bad_input_names_the_input_and_the_problem() -> None:
    frames = np.zeros((8, 32, 32, 3), np.uint8)
    with pytest.raises(InputError, match="do not match") as err:
        find_effects(frames, np.zeros((8, 32, 30), bool), name="clip_x")
    assert "clip_x" in str(err.value) and err.value.reason == "bad_shape"
    with pytest.raises(InputError, match="uint8"):
        find_effects(frames.astype(np.float32), np.zeros((8, 32, 32), bool))


def test_plan_asks_for_effect_masks_on_removals_only_and_they_change_the_render_id() -> None:
    clips = [{"clip_id": "c", "video_uri": "v.mp4", "width": 128, "fps": 8.0}]
    objects = [{"object_id": "o", "mask_uri": "m.npz", "label": "horse"}]
    instructions = [
        {"instruction_id": "i1", "object_id": "o", "clip_id": "c", "edit_type": "remove", "instruction": "Remove."},
        {"instruction_id": "i2", "object_id": "o", "clip_id": "c", "edit_type": "replace", "instruction": "Swap."},
    ]
    jobs = {j.edit_type: j for j in plan(instructions, objects, clips, dilation_radius=None, effect_masks="auto")}
    assert jobs["remove"].effect_masks == "auto" and jobs["replace"].effect_masks == "off"
    off = plan(instructions, objects, clips, dilation_radius=None, effect_masks="off")[0]
    assert off.effect_masks == "off"
    engine = PropagationEngine()
    assert render_params(jobs["remove"], engine)["pipeline"]["effect_masks"] == "auto"
    assert "effect_masks" not in render_params(off, engine)["pipeline"]  # renders made before the option keep ids
    assert render_id_of(jobs["remove"], engine, 0) != render_id_of(off, engine, 0)
    every = plan(instructions, objects, clips, dilation_radius=None, effect_masks="all")[0]
    assert render_id_of(every, engine, 0) not in {render_id_of(j, engine, 0) for j in (jobs["remove"], off)}


@pytest.mark.parametrize(
    "camera, mode, source",
    [
        ("static", "auto", "static-background"),
        ("static", "off", "off"),  # negative control: the object's mask alone
        ("pan", "auto", "local-views"),  # moving cameras too, by default
        ("pan", "all", "local-views"),  # the same as auto
        ("pan", "off", "off"),
    ],
)
def test_the_render_step_inpaints_and_records_the_grown_mask(tmp_path, camera: str, mode: str, source: str) -> None:
    """The still camera on a synthetic scene; the pan on real footage that plays (the synthetic pans keep the object
    in place in the frame, so local views never see its surroundings without it)."""
    if camera == "static":
        frames, objects, truth = _scene(camera, shadow=True)
    else:
        case = _real("bikes.mp4", camera, "shadow")
        frames, objects, truth = case.source, case.object_mask, case.effect_mask
    cat = Catalog(str(tmp_path / "catalog"))
    job = RenderJob(
        instruction_id="i", object_id="o", clip_id="c", edit_type="remove", instruction="Remove the object.",
        clip_video_uri=cat.put_media(encode_stored(frames, 8.0), "mp4"),
        mask_uri=cat.put_media(encode_masks_npz(objects), "npz"), fps=8.0, dilation_radius=2, effect_masks=mode,
    )  # fmt: skip
    engine = PropagationEngine()
    inputs = load(job, cat, engine)
    assert (inputs.object_masks == objects).all()  # the object's mask stays the object
    covered = (inputs.masks & truth).sum() / truth.sum()
    alone = (dilate_masks(objects, 2) & truth).sum() / truth.sum()  # the object's dilated mask leaves most of it out
    assert alone < 0.45
    result = engine.run(inputs.frames, inputs.masks)
    row = store(job, inputs, result, cat, engine, seed=0, run_id=None).row
    assert row["effect_source"] == source
    if source in ("static-background", "local-views"):
        assert covered >= alone + 0.2 and row["effect_area"] > 0
    else:
        assert (inputs.masks == dilate_masks(objects, 2)).all()
        assert row["effect_area"] is None
    assert (decode_masks_npz(cat.read_media(row["mask_uri"])) == inputs.masks).all()  # what the gate scores against


def test_effect_sources_are_the_documented_ones() -> None:
    assert set(EFFECT_SOURCES) == {"static-background", "local-views", "unreliable"}


# ----------------------------------------------------------------------------------------------- the fast helpers
# the finder's speed-ups must not change what it finds: each helper against the numpy/OpenCV call it stands for


def test_the_masked_median_is_nanmedian_of_the_used_values() -> None:
    """Per pixel, the median over the used frames, odd and even counts, one used frame, none (0)."""
    rng = np.random.default_rng(0)
    values = rng.integers(0, 256, (9, 7, 11)).astype(np.uint8)
    use = rng.random(values.shape) > 0.4
    use[:, 0, 0] = False  # no frame: 0
    use[:, 0, 1] = False
    use[3, 0, 1] = True  # one frame: its value
    values[:, 1, :] = 255  # the largest value sorts before the unused ones
    samples = np.where(use, values.astype(np.float32), np.nan)
    samples[:, ~use.any(0)] = 0.0
    expected = np.nanmedian(samples, axis=0).astype(np.float32)
    got = effects._masked_median(values, use)
    assert got.dtype == np.float32 and np.array_equal(got, expected)
    assert got[0, 0] == 0.0 and got[0, 1] == values[3, 0, 1]


@pytest.mark.parametrize("size", [1, 2, 7, 4095, 4096, 20_001, 100_000])
def test_the_windowed_median_is_np_median(size: int) -> None:
    """Small arrays (a plain partial sort), large ones (values between two sampled bounds), skewed, with ties, and an
    array whose strided sample misses the middle (the window falls back to all values)."""
    rng = np.random.default_rng(size)
    misleading = np.zeros(size)
    misleading[:: max(1, size // 1024)] = 1000.0  # the sample sees only these
    for values in (
        np.abs(rng.normal(0.0, 3.0, size)),
        np.round(rng.exponential(2.0, size), 1),  # many ties
        np.concatenate([np.zeros(size // 2), rng.random(size - size // 2) * 100]),
        np.sort(rng.random(size)),
        misleading,
    ):
        assert effects._median_of(values) == float(np.median(values))
        assert effects._median_of(values.astype(np.float32)) == float(np.median(values.astype(np.float32)))


def test_the_linear_quantile_is_np_quantile() -> None:
    rng = np.random.default_rng(1)
    for size in [1, 2, 3, 10, 99, 1000, 9600]:
        for _ in range(5):
            values = np.abs(rng.normal(0.0, 1.0, size)) * rng.choice([1e-3, 1.0, 100.0])
            for q in (0.0, 0.1, 0.5, 0.67, 0.99, 1.0):
                assert _linear_quantile(values, q) == np.quantile(values, q)


def test_camera_maps_follow_a_known_shift_and_skip_blind_pairs() -> None:
    """A texture moved by a known step per frame gives that translation (uint8 and float input alike); a frame pair
    with nothing clear is taken as not moving."""
    rng = np.random.default_rng(3)
    texture = cv2.GaussianBlur(rng.uniform(0, 255, (120, 160)).astype(np.float32), (0, 0), 2.0)
    dx, dy = 1.5, -0.75  # px per frame
    frames = np.stack([cv2.warpAffine(texture, np.float32([[1, 0, -t * dx], [0, 1, -t * dy]]), (160, 120),
                                      borderMode=cv2.BORDER_REFLECT) for t in range(6)])[:, 20:100, 20:140]  # fmt: skip
    busy = np.zeros(frames.shape, bool)
    maps = camera_maps(frames, busy)
    for t, m in enumerate(maps):  # frame t's pixel x lies at x + t * dx in frame 0
        assert np.allclose(m[:2, 2], [t * dx, t * dy], atol=0.3) and np.allclose(m[:2, :2], np.eye(2), atol=0.01)
    grey = np.clip(frames, 0, 255).astype(np.uint8)
    assert all(np.array_equal(a, b) for a, b in zip(camera_maps(grey, busy), camera_maps(frames, busy)))
    busy[3] = True  # nothing clear between frames 2 and 3, and 3 and 4
    blind = camera_maps(frames, busy)
    assert np.array_equal(blind[3], blind[2]) and np.allclose(blind[5][:2, 2] - blind[4][:2, 2], [dx, dy], atol=0.2)


def test_far_and_near_are_those_of_the_whole_frame_distance() -> None:
    """The boxed transforms give the whole-frame one's far and near pixels; frames without the object are all far;
    objects at the frame's edge too."""
    objects = np.zeros((3, 60, 80), bool)
    objects[0, 20:30, 30:45] = True
    objects[2, 0:8, 70:80] = True  # at the corner
    far, near = effects._far_and_near(objects, 12, 9.6)
    assert far[1].all() and not near[1].any()
    for t in (0, 2):
        full = cv2.distanceTransform((~objects[t]).view(np.uint8), cv2.DIST_L2, 3)
        assert np.array_equal(far[t], full > 12) and np.array_equal(near[t], full <= 9.6)
        assert near[t].sum() > objects[t].sum() and (~far[t]).sum() > near[t].sum()  # not trivially all or none
