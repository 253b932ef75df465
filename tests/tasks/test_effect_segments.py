"""The open-vocabulary route of side-effect-aware masks (tasks/effect_segments.py): the instances a segmenter finds
for "shadow of <label>" become the effect when they are near the object and are not the object itself; the route
joins the weight-free finder's, is asked only for labelled removals with effect masks, is recorded (effect_source,
effect_area, the render's identity), loads once per batch (sharing the gate's models when the specs are the same),
and refuses an unloadable spec naming it.

The render step is driven by a small real phrase segmenter (dark pixels for "shadow of …", the object's hue for
"reflection of …": a segmenter that finds the object again) on a tiny synthetic clip; the real ``sam3`` segmenter
runs the route end to end with a tiny random model (it finds random things or nothing)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from catalog import ids
from catalog.store import Catalog
from tasks.annotate.segmenters import Track
from tasks.config import EFFECT_PHRASES, RenderConfig, RunConfig, ScoreConfig
from tasks.effect_segments import (
    EffectSegmenter,
    PhraseFinder,
    SegmentedEffects,
    combine,
    effect_from_instances,
    effect_phrases,
)
from tasks.effects import EFFECT_SOURCES, FINDER_VERSION, EffectMasks, find_effects
from tasks.engines.propagation import PropagationEngine
from tasks.errors import InputError
from tasks.masks import encode_masks_npz
from tasks.steps.plan import RenderJob, plan, with_effect_segmenter
from tasks.steps.render import load, render_id_of, render_params, store
from tasks.video_io import encode_stored


# ---------------------------------------------------------------------------------------------- the mask logic
H, W = 40, 60  # short side 40: "near" is within 4 pixels of the object's mask


def _box(top: int, bottom: int, left: int, right: int, frames: int = 2) -> np.ndarray:
    m = np.zeros((frames, H, W), bool)
    m[:, top:bottom, left:right] = True
    return m


def test_a_shadow_touching_the_object_is_taken_and_the_object_and_far_things_are_not() -> None:
    obj = _box(10, 20, 20, 30)
    obj[1] = False  # frame 1: the object is out of view, so nothing is near it
    shadow = _box(20, 25, 22, 34)  # touches the object's bottom edge
    near = _box(10, 18, 33, 36)  # 3 px right of it (a reflection a little away): near
    beyond = _box(10, 18, 36, 40)  # 6 px right of it: too far
    far = _box(30, 38, 50, 58)  # a dark patch across the frame
    refound = _box(9, 21, 19, 31)  # the object found again, a little larger: IoU 0.69
    mostly_inside = _box(12, 18, 24, 32)  # overlaps it, IoU 0.26, but 4/6 of it inside
    effect, kept = effect_from_instances([shadow, near, beyond, far, refound, mostly_inside], obj)
    assert effect.shape == obj.shape and effect.dtype == bool
    assert (effect[0] == ((shadow[0] | near[0]) & ~obj[0])).all()  # exactly the two near instances, minus the object
    assert not effect[1].any()  # no object, nothing near it
    assert kept.tolist() == [1, 1, 0, 0, 0, 0]
    assert not (effect & obj).any()


def test_an_overlapping_shadow_keeps_only_its_outside_part_and_the_thresholds_are_the_documented_ones() -> None:
    obj = _box(10, 20, 20, 30)
    shadow = _box(15, 30, 18, 32)  # overlaps the object's lower half: IoU 0.22, 1/3.5 of it inside
    effect, kept = effect_from_instances(np.stack([shadow]), obj)
    assert kept.tolist() == [2] and (effect == (shadow & ~obj)).all()
    strict, _ = effect_from_instances([shadow], obj, max_inside_share=0.2)  # 0.24 of it inside: now refused
    assert not strict.any()
    beyond = _box(10, 18, 36, 40)
    wide, kept = effect_from_instances([beyond], obj, reach_share=0.2)  # 8 px reach takes the 6 px gap
    assert kept.tolist() == [2] and wide.any()


def test_bad_shapes_and_thresholds_are_refused_naming_them() -> None:
    obj = _box(10, 20, 20, 30)
    with pytest.raises(ValueError, match="instance 1: shape"):
        effect_from_instances([obj, obj[:1]], obj)
    with pytest.raises(ValueError, match="object_masks"):
        effect_from_instances([obj], obj[0])
    with pytest.raises(ValueError, match="max_object_iou=0"):
        effect_from_instances([obj], obj, max_object_iou=0.0)
    assert not effect_from_instances([], obj)[0].any()  # nothing found: nothing grown


def _finder(masks: np.ndarray, source: str = "static-background") -> EffectMasks:
    return EffectMasks(masks, float(masks.mean()), source, "")  # type: ignore[arg-type]


def _segmented(masks: np.ndarray) -> SegmentedEffects:
    return SegmentedEffects(masks, float(masks.mean()), ["shadow of x"], 1, int(masks.any()))


def test_combine_unites_the_routes_and_names_who_found_the_effect() -> None:
    a, b, none = _box(0, 5, 0, 5), _box(3, 8, 3, 8), np.zeros((2, H, W), bool)
    masks, area, source = combine(_finder(a), _segmented(b))
    assert (
        (masks == (a | b)).all() and area == pytest.approx((a | b).mean()) and source == "segmenter+static-background"
    )
    assert combine(_finder(none, "unreliable"), _segmented(b))[2] == "segmenter"  # only the segmenter found it
    masks, area, source = combine(_finder(a, "stabilised"), _segmented(none))  # the segmenter found nothing
    assert (masks == a).all() and source == "stabilised" and area == pytest.approx(a.mean())
    finder = _finder(a)
    assert combine(finder, None) == (finder.masks, finder.area, "static-background")  # the route was not asked


def test_phrases_fill_the_label_once_each() -> None:
    assert effect_phrases(EFFECT_PHRASES, "dog") == ["shadow of dog", "reflection of dog"]
    assert effect_phrases(["shadow of {label}", "shadow of {label}"], "a red car") == ["shadow of a red car"]


# --------------------------------------------------------------------------------------------- configuration
def test_the_run_segmenter_is_the_default_and_null_turns_it_off() -> None:
    spec = "sam3:/models/sam3#threshold=0.4"
    assert RunConfig(source="x", segmenter=spec).render.effect_segmenter == spec
    assert RunConfig(source="x", segmenter=spec, render={"effect_segmenter": None}).render.effect_segmenter is None
    other = "detect+track:/m/gdino#tracker=sam2:/m/sam2"
    assert RunConfig(source="x", segmenter=spec, render={"effect_segmenter": other}).render.effect_segmenter == other
    assert RunConfig(source="x").render.effect_segmenter is None  # provided masks: no open-vocabulary segmenter
    assert RunConfig(source="x", segmenter="sam:/m/sam_vit_b.pth").render.effect_segmenter is None
    again = RunConfig.model_validate(RunConfig(source="x", segmenter=spec).model_dump())
    assert again.render.effect_segmenter == spec and again.render.effect_phrases == list(EFFECT_PHRASES)


@pytest.mark.parametrize(
    "update, message",
    [
        ({"effect_segmenter": "sam:/m/sam_vit_b.pth"}, "open-vocabulary"),
        ({"effect_segmenter": "sam3:/m#colour=red"}, "unknown option"),
        ({"effect_phrases": ["shadow"]}, "must contain {label}"),
        ({"effect_phrases": ["{thing} of {label}"]}, "may name only {label}"),
        ({"effect_phrases": []}, "at least 1"),
    ],
)
def test_bad_settings_are_refused(update: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        RenderConfig(**update)


def test_the_command_line_option_and_set_null(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    import flows.cli_factory as cli_factory
    from flows.build_pairs import RunSummary
    from flows.cli import app

    seen: list[RunConfig] = []

    def run_factory(config: RunConfig, **kwargs) -> RunSummary:
        seen.append(config)
        return RunSummary(run_id="r", status="completed", catalog="memory://x", counts={}, failures_by_reason={},
                          elapsed_s=0.0)  # fmt: skip

    monkeypatch.setattr(cli_factory, "run_factory", run_factory)
    monkeypatch.setattr("tasks.annotate.specs.check_annotation", lambda config: None)  # the folders do not exist
    base = ["run", "clips/", "--catalog", "memory://x", "--segmenter", "sam3:/m"]
    runner = CliRunner()
    for extra in ([], ["--effect-segmenter", "sam3:/other", "--effect-phrases", "shadow of {label}"],
                  ["--set", "render.effect_segmenter=null"]):  # fmt: skip
        assert runner.invoke(app, [*base, *extra]).exit_code == 0
    assert [c.render.effect_segmenter for c in seen] == ["sam3:/m", "sam3:/other", None]
    assert seen[1].render.effect_phrases == ["shadow of {label}"]
    refused = runner.invoke(app, [*base, "--effect-segmenter", "sam:/m.pth"])
    assert refused.exit_code == 2 and "open-vocabulary" in refused.output


# ----------------------------------------------------------------------------------------- plan and identity
CLIPS = [{"clip_id": "c", "video_uri": "v.mp4", "width": 128, "fps": 8.0}]
INSTRUCTIONS = [
    {"instruction_id": "i1", "object_id": "o", "clip_id": "c", "edit_type": "remove", "instruction": "Remove."},
    {"instruction_id": "i2", "object_id": "o", "clip_id": "c", "edit_type": "replace", "instruction": "Swap."},
]


def test_plan_asks_the_segmenter_for_labelled_removals_with_effect_masks_only() -> None:
    spec = "sam3:/m"
    labelled = [{"object_id": "o", "mask_uri": "m.npz", "label": "dog"}]
    unlabelled = [{"object_id": "o", "mask_uri": "m.npz"}]
    jobs = {j.edit_type: j for j in plan(INSTRUCTIONS, labelled, CLIPS, dilation_radius=None, effect_masks="auto",
                                         effect_segmenter=spec)}  # fmt: skip
    assert (jobs["remove"].effect_segmenter, jobs["remove"].effect_phrases) == (spec, list(EFFECT_PHRASES))
    assert jobs["replace"].effect_segmenter is None and jobs["replace"].effect_phrases == []
    off = plan(INSTRUCTIONS, labelled, CLIPS, dilation_radius=None, effect_masks="off", effect_segmenter=spec)[0]
    assert off.effect_segmenter is None  # effect masks off: neither route runs
    nameless = plan(INSTRUCTIONS, unlabelled, CLIPS, dilation_radius=None, effect_masks="auto", effect_segmenter=spec)
    assert nameless[0].effect_segmenter is None  # no label to ask for: the weight-free finder alone
    assert with_effect_segmenter(jobs["remove"], None).effect_segmenter is None
    assert with_effect_segmenter(jobs["remove"], spec) is jobs["remove"]  # already so: the same job


def test_the_spec_and_phrases_are_part_of_the_render_id_and_older_ids_do_not_change(monkeypatch) -> None:
    objects = [{"object_id": "o", "mask_uri": "m.npz", "label": "dog"}]
    engine = PropagationEngine()
    without = plan(INSTRUCTIONS, objects, CLIPS, dilation_radius=4, effect_masks="auto")[0]
    params = render_params(without, engine)
    grown = {"dilation_radius": 4, "effect_masks": "auto", "effect_finder": FINDER_VERSION}
    assert params["pipeline"] == grown  # as before the route existed
    before = ids.render_id("i1", engine.engine_id, {"engine": engine.params(), "pipeline": grown}, 0,
                           version=engine.version)  # fmt: skip
    assert render_id_of(without, engine, 0) == before
    # another finder version is another render; no effect masks: neither is named, as before either existed
    with monkeypatch.context() as patch:
        patch.setattr("tasks.effects.FINDER_VERSION", "1")
        assert render_id_of(without, engine, 0) != before
    off = plan(INSTRUCTIONS, objects, CLIPS, dilation_radius=4, effect_masks="off")[0]
    assert render_params(off, engine)["pipeline"] == {"dilation_radius": 4}
    spec = "sam3:/m"
    asked = plan(INSTRUCTIONS, objects, CLIPS, dilation_radius=4, effect_masks="auto", effect_segmenter=spec)[0]
    pipeline = render_params(asked, engine)["pipeline"]
    assert pipeline["effect_segmenter"] == spec and pipeline["effect_phrases"] == list(EFFECT_PHRASES)
    shadows = plan(INSTRUCTIONS, objects, CLIPS, dilation_radius=4, effect_masks="auto", effect_segmenter=spec,
                   effect_phrases=["shadow of {label}"])[0]  # fmt: skip
    assert len({render_id_of(j, engine, 0) for j in (without, asked, shadows)}) == 3


# ------------------------------------------------------------------------- the render step, a phrase segmenter
LABEL = "box"
T, CH, CW = 8, 48, 64  # a tiny clip: 8 frames of 48x64


class DarkHueSegmenter:
    """A small phrase segmenter: "shadow of …" finds the dark pixels (luma < 70), one instance per region connected
    in space and time; "reflection of …" finds the saturated magenta pixels (the object itself: the error a real
    segmenter makes, which the route must not take); other phrases find nothing. Records what it is asked."""

    name = "dark-hue"

    def __init__(self) -> None:
        self.asked: list[list[str]] = []
        self.loads = 0

    def setup(self) -> None:
        self.loads += 1

    def track(self, frames: np.ndarray, phrases) -> list[Track]:
        from scipy import ndimage

        self.asked.append(list(phrases))
        luma = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames])
        hsv = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2HSV) for f in frames])
        out = []
        for phrase in phrases:
            if phrase.startswith("shadow of"):
                labels, count = ndimage.label(luma < 70)
                regions = [labels == k for k in range(1, count + 1)]
            elif phrase.startswith("reflection of"):
                regions = [(np.abs(hsv[..., 0].astype(int) - 150) <= 12) & (hsv[..., 1] > 120)]
            else:
                regions = []
            for masks in regions:
                if masks.any():
                    out.append(Track(phrase, 1.0, 0, (0.0, 0.0, 1.0, 1.0), masks))
        return out


def _clip(floor_kind: str = "flat") -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A still camera over a grey floor, ``flat`` (light noise: too few features for the weight-free finder, which
    calls it ``unreliable``) or ``textured`` (blurred noise, 100-200: the finder sees a still camera); a magenta box
    (8x8) moves right 4 px a frame with its shadow (5 px tall, touching its bottom edge); a dark patch lies still
    across the frame. Returns ``(frames, object, shadow, patch)``: uint8 `(T, 48, 64, 3)`, bool `(T, 48, 64)` ×3."""
    rng = np.random.default_rng(0)
    if floor_kind == "flat":
        floor = (140 + rng.normal(0, 4, (CH, CW, 1))).clip(0, 255)
    else:
        noise = cv2.GaussianBlur(rng.normal(0, 1, (CH, CW)).astype(np.float32), (0, 0), 1.5)
        floor = (150 + 35 * noise / noise.std()).clip(100, 200)[..., None]
    frames = np.repeat(np.repeat(floor[None], T, 0), 3, -1)
    obj, shadow, patch = (np.zeros((T, CH, CW), bool) for _ in range(3))
    patch[:, 38:45, 50:60] = True
    for t in range(T):
        x = 6 + 4 * t
        obj[t, 12:20, x : x + 8] = True
        shadow[t, 20:25, x + 1 : x + 10] = True
    frames[shadow | patch] = 35.0
    frames[obj] = (200, 40, 200)
    return frames.astype(np.uint8), obj, shadow, patch


def _job(cat: Catalog, frames: np.ndarray, obj: np.ndarray, **fields) -> RenderJob:
    return RenderJob(
        instruction_id=fields.pop("instruction_id", "i"), object_id="o", clip_id="c", edit_type="remove",
        instruction="Remove the box.", clip_video_uri=cat.put_media(encode_stored(frames, 8.0), "mp4"),
        mask_uri=cat.put_media(encode_masks_npz(obj), "npz"), fps=8.0, dilation_radius=0, **fields,
    )  # fmt: skip


@pytest.mark.parametrize("floor_kind, source", [("flat", "segmenter"), ("textured", "segmenter+static-background")])
def test_the_render_step_asks_for_the_labels_effects_and_grows_the_mask_by_what_is_near(
    tmp_path, floor_kind: str, source: str
) -> None:
    frames, obj, shadow, patch = _clip(floor_kind)
    cat = Catalog(str(tmp_path / "catalog"))
    seg = DarkHueSegmenter()
    effects = EffectSegmenter(segmenter=seg)
    job = _job(cat, frames, obj, effect_masks="auto", label=LABEL, effect_segmenter=effects.name,
               effect_phrases=list(EFFECT_PHRASES))  # fmt: skip
    engine = PropagationEngine()
    inputs = load(job, cat, engine, effect_segmenter=effects)
    assert seg.asked == [["shadow of box", "reflection of box"]] and seg.loads == 1
    assert (inputs.object_masks == obj).all()
    grown = inputs.masks & ~obj  # dilation 0: the effect itself
    assert (grown & shadow).sum() / shadow.sum() > 0.95  # the shadow is taken (mp4 edges aside)
    assert not (grown & patch).any()  # the still dark patch is far from the box
    finder = find_effects(inputs.frames, obj)  # what the weight-free finder adds on the same frames
    assert not (grown & ~(shadow | finder.masks)).any()  # nothing else: the box found again added nothing
    assert inputs.effect_source == source  # only the segmenter found it, or both did
    row = store(job, inputs, engine.run(inputs.frames, inputs.masks), cat, engine, seed=0, run_id=None).row
    assert row["effect_source"] == source and row["effect_area"] == pytest.approx(grown.mean())
    assert json.loads(row["params_json"])["pipeline"]["effect_segmenter"] == "dark-hue"


@pytest.mark.parametrize("case", ["off", "unlabelled", "not asked"])
def test_the_segmenter_is_not_asked_without_effect_masks_a_label_or_a_spec(tmp_path, case: str) -> None:
    frames, obj, shadow, _ = _clip()
    cat = Catalog(str(tmp_path / "catalog"))
    seg = DarkHueSegmenter()
    effects = EffectSegmenter(segmenter=seg)
    fields = {"off": {"effect_masks": "off", "label": LABEL},
              "unlabelled": {"effect_masks": "auto"},
              "not asked": {"effect_masks": "auto", "label": LABEL}}[case]  # fmt: skip
    planned = with_effect_segmenter(_job(cat, frames, obj, **fields), effects.name)
    assert planned.effect_segmenter == (None if case != "not asked" else effects.name)
    job = planned if case != "not asked" else planned.model_copy(update={"effect_segmenter": None})
    inputs = load(job, cat, PropagationEngine(), effect_segmenter=effects)
    assert seg.asked == []
    assert inputs.effect_source in (("off",) if case == "off" else EFFECT_SOURCES)  # the finder's alone


def test_a_job_asking_a_segmenter_the_render_has_not_loaded_fails_naming_it(tmp_path) -> None:
    frames, obj, _, _ = _clip()
    cat = Catalog(str(tmp_path / "catalog"))
    job = _job(cat, frames, obj, effect_masks="auto", label=LABEL, effect_segmenter="sam3:/m/sam3",
               effect_phrases=list(EFFECT_PHRASES))  # fmt: skip
    for loaded in (None, EffectSegmenter(segmenter=DarkHueSegmenter())):
        with pytest.raises(InputError) as err:
            load(job, cat, PropagationEngine(), effect_segmenter=loaded)
        assert err.value.reason == "effect_segmenter_not_loaded" and "sam3:/m/sam3" in str(err.value)


# -------------------------------------------------------------------------------------------------- loading
def test_loading_follows_the_config_and_an_unloadable_spec_names_the_spec_and_the_path(tmp_path) -> None:
    missing = tmp_path / "no-sam3-here"
    spec = f"sam3:{missing}"
    assert EffectSegmenter.load(RenderConfig()) is None
    assert EffectSegmenter.load(RenderConfig(effect_segmenter=spec, effect_masks="off")) is None  # nothing loaded
    with pytest.raises(InputError) as err:
        EffectSegmenter.load(RenderConfig(effect_segmenter=spec))
    assert err.value.reason == "effect_segmenter_not_loaded" and str(missing) in str(err.value)
    with pytest.raises(ValueError, match="open-vocabulary"):
        EffectSegmenter("sam:/m/sam_vit_b.pth")
    with pytest.raises(ValueError, match="only one"):
        EffectSegmenter(spec, finder=PhraseFinder(segmenter=DarkHueSegmenter()))


def test_a_finder_of_the_same_spec_is_shared_and_a_different_one_is_not() -> None:
    seg = DarkHueSegmenter()
    gate_finder = PhraseFinder(segmenter=seg)
    gate_finder.name = "sam3:/m"  # as built from that spec
    shared = EffectSegmenter.load(RenderConfig(effect_segmenter="sam3:/m"), share=gate_finder)
    assert shared is not None and shared.finder is gate_finder and seg.loads == 1
    with pytest.raises(InputError, match="effect_segmenter_not_loaded|cannot be loaded"):
        EffectSegmenter.load(RenderConfig(effect_segmenter="sam3:/elsewhere"), share=gate_finder)


# ------------------------------------------------------------------------------ a real segmenter, end to end
@pytest.fixture(scope="module")
def tiny_sam3(tmp_path_factory: pytest.TempPathFactory) -> str:
    from tests.tasks.annotate import tiny_models

    return f"sam3:{tiny_models.build_sam3_video(tmp_path_factory.mktemp('models') / 'sam3')}#max_objects=2"


def test_a_real_segmenter_runs_the_route_in_batches_with_one_load_shared_with_the_gate(
    tmp_path, tiny_sam3, monkeypatch
) -> None:
    """The tiny random SAM3 through ``prepare`` (as both executors and the render flow call it) and two batches of
    ``PairMaker.make``: the models load once for the gate and the effects together, every render records a route
    and the spec, and whatever it finds never covers the object."""
    import torch
    import transformers

    from flows.executors import prepare

    loads: list[str] = []
    original = transformers.Sam3VideoModel.from_pretrained

    def counting(*args, **kwargs):
        loads.append("sam3")
        return original(*args, **kwargs)

    monkeypatch.setattr(transformers.Sam3VideoModel, "from_pretrained", counting)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        frames, obj, _, _ = _clip()
        cat = Catalog(str(tmp_path / "catalog"))
        render = RenderConfig(engine="propagation", effect_segmenter=tiny_sam3, dilation_radius=0)
        score = ScoreConfig(workers=0, previews=False, reseg_segmenter=tiny_sam3)
        maker = prepare(PropagationEngine(), render, score, cat)
        assert maker.effects is not None and maker.effects.finder is maker.scorers.reseg.finder
        jobs = [_job(cat, frames, obj, instruction_id=f"i{k}", effect_masks="auto", label=LABEL) for k in range(2)]
        for job in jobs:  # two batches; the jobs carry no spec: the render's config adds it
            out = maker.make([job], cat, run_id="r")
            assert out.counts["renders"] == 1 and not out.failures, out.failures
        assert loads == ["sam3"]
        rows = cat.query("SELECT effect_source, effect_area, params_json FROM renders").to_pylist()
        assert len(rows) == 2
        for row in rows:
            source = row["effect_source"]  # the route: the segmenter, the finder or both
            assert source == "segmenter" or source.removeprefix("segmenter+") in EFFECT_SOURCES, source
            assert 0.0 <= row["effect_area"] < 1.0
            assert json.loads(row["params_json"])["pipeline"]["effect_segmenter"] == tiny_sam3
        # vpf reproduce rebuilds the job from the render's recorded parameters, spec and phrases included
        from flows.cli_reproduce import reproduce_pair
        from tasks.steps.record import record_tables

        record_tables(cat, {
            "clips": [{"clip_id": "c", "source_id": "s", "start_frame": 0, "end_frame": T, "frame_stride": 1,
                       "num_frames": T, "video_uri": jobs[0].clip_video_uri, "width": CW, "height": CH, "fps": 8.0}],
            "objects": [{"object_id": "o", "clip_id": "c", "mask_source": "provided", "mask_uri": jobs[0].mask_uri,
                         "qa_status": "ok", "label": LABEL}],
            "instructions": [{"instruction_id": "i0", "object_id": "o", "clip_id": "c", "edit_type": "remove",
                              "instruction": "Remove the box.", "proposer": "template"}],
        })  # fmt: skip
        [pair] = cat.query("SELECT pair_id FROM pairs p JOIN renders r USING (render_id) WHERE r.instruction_id = 'i0'"
                           " AND p.edit_type = 'remove'").to_pylist()  # fmt: skip
        again = reproduce_pair(cat, pair["pair_id"], scratch=tmp_path / "scratch")
        assert again.render_id_reproduced and again.mask_identical and again.match, again
        found = maker.effects.find(frames, obj, LABEL, EFFECT_PHRASES)
        assert found.phrases == ["shadow of box", "reflection of box"]
        assert not (found.masks & obj).any() and found.area == pytest.approx(found.masks.mean())
    finally:
        torch.set_num_threads(threads)


def test_a_real_detect_track_segmenter_finds_effects_that_never_cover_the_object(tmp_path_factory) -> None:
    """The tiny random Grounding DINO + SAM2 video (threshold 0: it finds boxes anywhere) through the route: asked
    both phrases, whatever it keeps lies outside the object, and the area is its share."""
    import torch

    from tests.tasks.annotate import tiny_models

    root = tmp_path_factory.mktemp("models")
    gdino, sam2 = tiny_models.build_grounding_dino(root / "gdino"), tiny_models.build_sam2_video(root / "sam2")
    effects = EffectSegmenter(f"detect+track:{gdino}#tracker=sam2:{sam2}&threshold=0&max_objects=3")
    frames, obj, _, _ = _clip()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        found = effects.find(frames, obj, LABEL, EFFECT_PHRASES)
    finally:
        torch.set_num_threads(threads)
    assert found.phrases == ["shadow of box", "reflection of box"] and found.instances <= 3
    assert found.masks.shape == obj.shape and not (found.masks & obj).any()
    assert found.area == pytest.approx(found.masks.mean()) and found.kept <= found.instances
