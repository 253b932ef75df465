"""The gate's re-segmentation check (``reseg_iou_src`` / ``reseg_iou_tgt``): the unedited clip is found again and
rejected, a clean removal leaves nothing to find, ``add`` pairs need the object found in their target, absent
without a segmenter, one model load per scorer, unloadable models fail naming the path.

The decisions are proved with a small real phrase segmenter (hue thresholding) on synthetic scenes whose object is
painted in a hue the background stills do not hold: a tiny random detector finds nothing deterministic. The real
``detect+track`` and ``sam3`` segmenters run through the same scorer with tiny random models."""

from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np
import pytest

from tasks import gate
from tasks.accept import AcceptRule
from tasks.annotate.segmenters import Track
from tasks.contracts import PhraseSegmenter
from tasks.errors import InputError
from tasks.masks import default_dilation_radius, dilate_masks
from tasks.quality_bench import _stored, gate_candidates
from tasks.synthetic import make_scene


SIZE = {"num_frames": 25, "height": 144, "width": 216}
MAGENTA = 150  # OpenCV hue (degrees / 2)


class HueSegmenter:
    """Finds a phrase as the saturated, bright pixels of its hue (``hues``: phrase → OpenCV hue), cleaned by a
    morphological opening; one instance per phrase found. Counts its loads."""

    name = "hue"

    def __init__(self, hues: dict[str, int], tolerance: int = 12) -> None:
        self.hues = hues
        self.tolerance = tolerance
        self.loads = 0
        self._kernel: np.ndarray | None = None

    def setup(self) -> None:
        if self._kernel is None:
            self.loads += 1
            self._kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))

    def track(self, frames: np.ndarray, phrases) -> list[Track]:
        self.setup()
        out = []
        for phrase in phrases:
            if phrase not in self.hues:
                continue
            masks = np.zeros(frames.shape[:3], bool)
            for t, frame in enumerate(frames):
                h, s, v = cv2.split(cv2.cvtColor(frame, cv2.COLOR_RGB2HSV))
                hit = (np.abs(h.astype(int) - self.hues[phrase]) <= self.tolerance) & (s > 120) & (v > 80)
                masks[t] = cv2.morphologyEx(hit.astype(np.uint8), cv2.MORPH_OPEN, self._kernel) > 0
            if masks.any():
                first = int(np.flatnonzero(masks.any(axis=(1, 2)))[0])
                ys, xs = np.nonzero(masks[first])
                box = (float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1))
                out.append(Track(phrase, float(masks.mean()), first, box, masks))
        return out


def _painted(scene):
    """The scene with its object painted magenta, keeping the object's own texture in the brightness."""
    luma = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in scene.frames]).astype(np.float32)
    paint = np.stack([150 + 0.4 * luma, 20 + 0.1 * luma, 150 + 0.4 * luma], axis=-1).clip(0, 255).astype(np.uint8)
    frames = np.where(scene.masks[..., None], paint, scene.frames)
    return dataclasses.replace(scene, frames=frames)


class Painted:
    """A painted scene stored as the factory stores it, with its gate candidates."""

    def __init__(self, kind: str, seed: int) -> None:
        self.scene = _painted(make_scene(kind, seed=seed, num_objects=1, background="coffee", **SIZE))
        self.label = self.scene.labels[0]
        self.source = _stored(self.scene.frames, 8.0)
        self.hole = dilate_masks(self.scene.masks, default_dilation_radius(SIZE["width"]))
        candidates = gate_candidates(self.scene, self.source, self.hole, seed=seed)
        self.targets = {k: _stored(v, 8.0) for k, v in candidates.items()}

    def score(self, kind: str, **kwargs) -> dict:
        return gate.score_render(self.source, self.targets[kind], self.hole, object_masks=self.scene.masks,
                                 label=self.label, **kwargs)  # fmt: skip


@pytest.fixture(scope="module")
def painted() -> list[Painted]:
    return [Painted("pan", 0), Painted("handheld", 1)]


@pytest.fixture()
def reseg(painted) -> gate.ResegScorer:
    return gate.ResegScorer(segmenter=HueSegmenter({p.label: MAGENTA for p in painted}))


def test_the_test_segmenter_is_a_phrase_segmenter_that_sees_only_its_hue(painted) -> None:
    seg = HueSegmenter({"horse": MAGENTA})
    assert isinstance(seg, PhraseSegmenter)
    background = painted[0].scene.background
    assert seg.track(background, ["horse"]) == []  # the clean still holds no magenta
    assert seg.track(painted[0].scene.frames, ["car"]) == []  # a phrase it does not know


def test_the_unedited_clip_is_found_again_and_rejected_naming_reseg_iou(painted, reseg) -> None:
    # weight-free checks off: the re-segmentation check alone must refuse the unedited clip
    alone = AcceptRule(
        min_psnr_bg=None, min_hole_change=None, max_object_match=None, max_ring_colour_gap=None,
        min_ring_texture_ratio=None, max_seam_error=None, max_flicker_ratio=None, max_motion_gap=None,
        max_effect_residual=None, max_object_ring_colour_gap=None, min_object_texture_ratio=None,
        max_bad_frame_share=None,
    )  # fmt: skip
    for p in painted:
        q = p.score("original", reseg=reseg)
        assert q["reseg_iou_src"] > 0.8 and q["reseg_iou_tgt"] > 0.8, (p.scene.name, q["reseg_iou_tgt"])
        assert q["reseg_iou_tgt"] == pytest.approx(q["reseg_iou_src"], abs=0.02)  # the same clip, stored twice
        for rule in (AcceptRule(), alone):
            for direction in ("remove", "add"):
                decision, reason = rule.decide(q, direction)
                assert decision == "rejected" and "reseg_iou_tgt" in reason, reason
        decision, reason = alone.decide(q)
        assert reason == f"reseg_iou_tgt {q['reseg_iou_tgt']:.4g} > 0.3"
        details = json.loads(q["metrics_json"])["reseg"]
        assert details["segmenter"] == "hue" and details["label"] == p.label
        assert details["tgt"]["found_frames"] >= 0.9 * details["tgt"]["object_frames"]


def test_a_clean_removal_leaves_nothing_to_find_and_passes(painted, reseg) -> None:
    for p in painted:
        q = p.score("ground_truth", reseg=reseg)
        assert q["reseg_iou_tgt"] < 0.05 and q["reseg_iou_src"] > 0.8, (p.scene.name, q["reseg_iou_tgt"])
        assert AcceptRule().decide(q) == ("accepted", "all checks passed"), q
        assert AcceptRule().decide(q, "add") == ("accepted", "all checks passed")
        assert json.loads(q["metrics_json"])["reseg"]["tgt"]["instances"] == 0


def test_remnants_of_the_object_fail_the_check(painted, reseg) -> None:
    """The object back in only the first half of the frames: found there, so the mean IoU lands between."""
    p = painted[0]
    half = len(p.source) // 2
    target = p.targets["ground_truth"].copy()
    target[:half] = p.source[:half]
    q = gate.score_render(p.source, target, p.hole, object_masks=p.scene.masks, label=p.label, reseg=reseg)
    assert 0.3 < q["reseg_iou_tgt"] < q["reseg_iou_src"]
    assert "reseg_iou_tgt" in AcceptRule().decide(q)[1]


def test_an_add_pair_needs_its_object_found_in_its_target(painted) -> None:
    """A segmenter that does not see the object in the original footage: the ``add`` pair (whose target that
    footage is) is rejected for it; the ``remove`` pair passes (nothing is found after the removal either)."""
    p = painted[0]
    blind = gate.ResegScorer(segmenter=HueSegmenter({p.label: 60}))  # looks for green
    q = p.score("ground_truth", reseg=blind)
    assert q["reseg_iou_src"] == 0.0 and q["reseg_iou_tgt"] == 0.0
    assert AcceptRule().decide(q, "remove")[0] == "accepted"
    decision, reason = AcceptRule().decide(q, "add")
    assert decision == "rejected" and reason == "reseg_iou_src 0 < 0.5"
    assert AcceptRule(min_add_reseg_iou=None).decide(q, "add")[0] == "accepted"


def test_without_a_segmenter_or_a_label_the_columns_are_absent(painted, reseg) -> None:
    p = painted[0]
    plain = p.score("original")
    assert plain["reseg_iou_src"] is None and plain["reseg_iou_tgt"] is None and not plain["reseg_configured"]
    assert json.loads(plain["metrics_json"])["absent"]["reseg_iou_tgt"] == "no re-segmentation segmenter configured"
    assert "reseg" not in AcceptRule().decide(plain)[1]  # not configured: not applied, not even as skipped
    assert "reseg" not in AcceptRule(reject_missing=True).decide(plain)[1]

    unlabelled = gate.score_render(p.source, p.targets["original"], p.hole, object_masks=p.scene.masks, reseg=reseg)
    assert unlabelled["reseg_iou_tgt"] is None and unlabelled["reseg_configured"]
    assert json.loads(unlabelled["metrics_json"])["absent"]["reseg_iou_tgt"] == "no object label"
    assert "reseg_iou_tgt absent" in AcceptRule().decide(unlabelled)[1]  # skipped, and said so
    decision, reason = AcceptRule(reject_missing=True).decide(unlabelled)
    assert decision == "rejected" and "reseg_iou_tgt absent" in reason


def test_the_scorer_loads_its_segmenter_once(painted) -> None:
    seg = HueSegmenter({p.label: MAGENTA for p in painted})
    scorer = gate.ResegScorer(segmenter=seg)
    for p in painted:
        for kind in ("original", "ground_truth"):
            p.score(kind, reseg=scorer)
    assert seg.loads == 1


def test_spec_errors_and_unloadable_models_name_the_spec_and_the_path(tmp_path) -> None:
    with pytest.raises(ValueError, match="open-vocabulary"):
        gate.ResegScorer("sam:/models/sam_vit_b.pth")
    with pytest.raises(ValueError, match="not both"):
        gate.ResegScorer("sam3:/m", segmenter=HueSegmenter({}))
    missing = tmp_path / "no-sam3-here"
    scorer = gate.ResegScorer(f"sam3:{missing}")
    with pytest.raises(InputError) as err:
        scorer.setup()
    assert str(missing) in str(err.value) and "re-segmentation" in str(err.value)


# ------------------------------------------------------------------------------------- tiny real segmenters
@pytest.fixture(scope="module")
def tiny_specs(tmp_path_factory) -> dict[str, str]:
    from tests.tasks.annotate import tiny_models

    root = tmp_path_factory.mktemp("models")
    gdino, sam2 = tiny_models.build_grounding_dino(root / "gdino"), tiny_models.build_sam2_video(root / "sam2")
    sam3 = tiny_models.build_sam3_video(root / "sam3")
    return {
        "detect+track": f"detect+track:{gdino}#tracker=sam2:{sam2}&threshold=0&max_objects=2",
        "sam3": f"sam3:{sam3}#max_objects=2",
    }


@pytest.fixture()
def one_torch_thread():
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("kind", ["detect+track", "sam3"])
def test_the_run_segmenters_rescore_with_one_load(tiny_specs, kind, monkeypatch, one_torch_thread) -> None:
    """The real open-vocabulary segmenters through the scorer: both columns filled with IoUs, the same on a second
    call, and the models loaded once for both calls."""
    import transformers

    loads: list[str] = []
    for name in ("Sam3VideoModel", "Sam2VideoModel", "AutoModelForZeroShotObjectDetection"):
        original = getattr(transformers, name).from_pretrained

        def counting(*args, _original=original, _name=name, **kwargs):
            loads.append(_name)
            return _original(*args, **kwargs)

        monkeypatch.setattr(getattr(transformers, name), "from_pretrained", counting)
    scene = make_scene("pan", num_frames=9, height=64, width=96, num_objects=1, seed=0)
    hole = dilate_masks(scene.masks, 2)
    scorer = gate.ResegScorer(tiny_specs[kind])
    first, again = (
        gate.score_render(scene.frames, target, hole, object_masks=scene.masks, label=scene.labels[0], reseg=scorer)
        for target in (scene.frames, np.where(hole[..., None], scene.background, scene.frames).astype(np.uint8))
    )
    for q in (first, again):
        assert 0.0 <= q["reseg_iou_src"] <= 1.0 and 0.0 <= q["reseg_iou_tgt"] <= 1.0
    assert again["reseg_iou_src"] == pytest.approx(first["reseg_iou_src"])  # the same source, the same model
    assert json.loads(first["metrics_json"])["reseg"]["segmenter"] == tiny_specs[kind]
    assert sorted(loads) == (["Sam3VideoModel"] if kind == "sam3" else
                             ["AutoModelForZeroShotObjectDetection", "Sam2VideoModel"])  # fmt: skip
