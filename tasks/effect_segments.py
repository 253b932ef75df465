"""Side effects of an object found by name: an open-vocabulary segmenter is asked for "shadow of <label>" and
"reflection of <label>", and what it finds next to the object becomes part of the removal's mask.

This is the second route of side-effect-aware masks (the first, weight-free, is ``tasks.effects``; docs/effects.md,
"The open-vocabulary route"). Three parts:

- :class:`PhraseFinder`: an open-vocabulary ``detect+track:…`` or ``sam3:…`` segmenter (``tasks.annotate.specs``)
  run on whole clips with the phrases of each call, its models loaded once (``setup()``), calls from several threads
  taking turns. The gate's re-segmentation check (``tasks.gate.ResegScorer``) runs on one too.
- :func:`effect_from_instances` (pure numpy): the instances found → the effect's mask. Per frame an instance is kept
  when it is near the object (touching it, or within ``REACH_SHARE`` of the frame's short side of its mask) and is not
  the object found again (IoU with the object's mask below ``MAX_OBJECT_IOU`` and at most ``MAX_INSIDE_SHARE`` of its
  area inside it); the union of the kept instances minus the object's mask is the effect.
- :class:`EffectSegmenter`: the two together for one render, built once per run (in-process) or per render batch
  (a render deployment) by :meth:`EffectSegmenter.load`; :func:`combine` joins its mask with the weight-free
  finder's and names the route for ``renders.effect_source``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from tasks.errors import InputError


if TYPE_CHECKING:
    from tasks.config import RenderConfig
    from tasks.effects import EffectMasks


REACH_SHARE = 0.1  # an instance is near the object within this share of the frame's short side of its mask
MAX_OBJECT_IOU = 0.5  # an instance overlapping the object's mask this much (IoU) is the object found again
MAX_INSIDE_SHARE = 0.5  # ... and so is one with more than this share of its pixels inside the object's mask
SEGMENTER_SOURCE = "segmenter"  # renders.effect_source when only the segmenter found the effect


class PhraseFinder:
    """An open-vocabulary segmenter that finds given noun phrases in whole clips, loaded once.

    Build one per run or batch: the models load on the first :meth:`setup` (or :meth:`track`), once; calls from
    several threads take turns on the one model.

    Args:
        spec: a ``detect+track:…`` or ``sam3:…`` segmenter spec (``tasks.annotate.specs``), built here.
        segmenter: or a ``tasks.contracts.PhraseSegmenter`` already built (``setup()`` and ``track(frames, phrases)``).
        storage_options: fsspec options of model URLs in ``spec``.
        role: what the segmenter is for, as errors name it (``"reseg segmenter"``).
        not_loaded: the ``InputError`` reason when its models cannot be loaded (``"reseg_not_loaded"``).
        models: the models as the load error names them (``"the gate's re-segmentation models"``).

    Raises:
        ValueError: both or neither of ``spec`` and ``segmenter``, or ``spec`` is not an open-vocabulary spec.
    """

    def __init__(
        self,
        spec: str | None = None,
        *,
        segmenter: Any = None,
        storage_options: Mapping[str, Any] | None = None,
        role: str = "phrase segmenter",
        not_loaded: str = "phrase_segmenter_not_loaded",
        models: str = "the phrase segmenter's models",
    ) -> None:
        if (spec is None) == (segmenter is None):
            raise ValueError(f"{role}: give a segmenter spec or a segmenter, not both or neither")
        if spec is not None:
            from tasks.annotate.specs import build_segmenter, is_vocab_segmenter
            from tasks.annotate.vocab import Vocabulary

            if not is_vocab_segmenter(spec):
                raise ValueError(f"{role} {spec!r}: expected an open-vocabulary detect+track:… or sam3:… spec")
            # the phrases are passed with each call; this vocabulary is never asked
            segmenter = build_segmenter(spec, Vocabulary(from_caption=True), storage_options=storage_options)
        self.name: str = spec or getattr(segmenter, "name", type(segmenter).__name__)
        self.segmenter = segmenter
        self.role, self.not_loaded, self.models = role, not_loaded, models
        self._lock = threading.Lock()
        self._ready = False

    def setup(self) -> None:
        """Load the segmenter's models (idempotent). Raises ``InputError`` (reason ``not_loaded``) naming the spec and
        the path at fault."""
        with self._lock:
            if self._ready:
                return
            try:
                self.segmenter.setup()
            except Exception as exc:
                raise InputError(self.name, self.not_loaded, f"{self.models} cannot be loaded ({exc})") from exc
            self._ready = True

    @property
    def ready(self) -> bool:
        """Whether the models are loaded."""
        return self._ready

    def track(self, frames: np.ndarray, phrases: Sequence[str]) -> list[tuple[str, np.ndarray]]:
        """Every instance of ``phrases`` found in ``frames`` `(num_frames, height, width, 3)` uint8, as ``(the phrase
        it was found for, masks (num_frames, height, width) bool)``; an empty list when nothing is found.

        Raises:
            ValueError: the segmenter returned masks of another shape than the clip's.
        """
        self.setup()
        with self._lock:
            tracks = self.segmenter.track(frames, list(phrases))
        found = [(str(getattr(t, "label", "")), np.asarray(t.masks, dtype=bool)) for t in tracks]
        for _, masks in found:
            if masks.shape != frames.shape[:3]:
                raise ValueError(f"{self.role} {self.name}: masks of shape {masks.shape} for frames {frames.shape}")
        return found


def effect_from_instances(
    instances: np.ndarray | Sequence[np.ndarray],
    object_masks: np.ndarray,
    *,
    reach_share: float = REACH_SHARE,
    max_object_iou: float = MAX_OBJECT_IOU,
    max_inside_share: float = MAX_INSIDE_SHARE,
) -> tuple[np.ndarray, np.ndarray]:
    """The side effect's mask from the instances an open-vocabulary segmenter found for it.

    Per frame, an instance's pixels are kept when they are near the object (their nearest pixel within
    ``reach_share`` of the frame's short side of the object's mask: touching it counts) and are not the object found
    again (IoU with the object's mask below ``max_object_iou`` and at most ``max_inside_share`` of them inside it).
    In a frame without the object nothing is near it and nothing is kept.

    Args:
        instances (`np.ndarray` of shape `(num_instances, num_frames, height, width)`, bool, or a sequence of
            `(num_frames, height, width)` arrays): what the segmenter found.
        object_masks (`np.ndarray` of shape `(num_frames, height, width)`, bool): the object itself.

    Returns:
        ``(effect, kept)``: the union of the kept instances minus the object's mask, `(num_frames, height, width)`
        bool; per instance, the number of frames in which it was kept, `(num_instances,)` int.

    Raises:
        ValueError: an instance's shape differs from ``object_masks``' or the thresholds are out of range.
    """
    objects = np.asarray(object_masks, dtype=bool)
    if objects.ndim != 3:
        raise ValueError(f"object_masks: expected (num_frames, height, width), got shape {objects.shape}")
    if not 0 <= reach_share <= 1 or not 0 < max_object_iou <= 1 or not 0 <= max_inside_share <= 1:
        raise ValueError(
            f"thresholds out of range: reach_share={reach_share}, max_object_iou={max_object_iou}, "
            f"max_inside_share={max_inside_share}"
        )
    found = [np.asarray(m, dtype=bool) for m in instances]
    for i, m in enumerate(found):
        if m.shape != objects.shape:
            raise ValueError(f"instance {i}: shape {m.shape} does not match object_masks {objects.shape}")
    num_frames, height, width = objects.shape
    reach = reach_share * min(height, width)
    effect = np.zeros_like(objects)
    kept = np.zeros(len(found), dtype=np.int64)
    for t in range(num_frames):
        obj = objects[t]
        if not obj.any():
            continue
        distance: np.ndarray | None = None  # pixels → distance to the object's mask, computed on first need
        for i, m in enumerate(found):
            inst = m[t]
            area = np.count_nonzero(inst)
            if area == 0:
                continue
            inside = np.count_nonzero(inst & obj)
            if inside / np.count_nonzero(inst | obj) >= max_object_iou or inside / area > max_inside_share:
                continue  # the object itself (or mostly it)
            if inside == 0:
                if distance is None:
                    distance = cv2.distanceTransform((~obj).view(np.uint8), cv2.DIST_L2, 5)
                if float(distance[inst].min()) > reach:
                    continue  # too far from the object to be its effect
            effect[t] |= inst
            kept[i] += 1
        effect[t] &= ~obj
    return effect, kept


@dataclass
class SegmentedEffects:
    """What :meth:`EffectSegmenter.find` found for one object: ``masks`` `(num_frames, height, width)` bool, never
    inside the object; ``area``: their share of the clip's pixels; ``phrases``: what the segmenter was asked;
    ``instances``: instances found; ``kept``: instances kept in at least one frame."""

    masks: np.ndarray
    area: float
    phrases: list[str]
    instances: int
    kept: int


def effect_phrases(templates: Sequence[str], label: str) -> list[str]:
    """The phrases for an object named ``label``: each template with ``{label}`` filled in, duplicates dropped."""
    return list(dict.fromkeys(t.format(label=label) for t in templates))


class EffectSegmenter:
    """The open-vocabulary route of side-effect-aware masks: a :class:`PhraseFinder` asked for an object's effects by
    name, its instances turned into the effect's mask by :func:`effect_from_instances`.

    Build one per run or render batch (:meth:`load`); the models load once, in :meth:`setup`.

    Args:
        spec: a ``detect+track:…`` or ``sam3:…`` segmenter spec (``RenderConfig.effect_segmenter``).
        segmenter: or a ``tasks.contracts.PhraseSegmenter`` already built.
        storage_options: fsspec options of model URLs in ``spec``.
        finder: or a :class:`PhraseFinder` to share (the gate's, when both name the same spec: one copy of the
            models, calls taking turns).
    """

    def __init__(
        self,
        spec: str | None = None,
        *,
        segmenter: Any = None,
        storage_options: Mapping[str, Any] | None = None,
        finder: PhraseFinder | None = None,
    ) -> None:
        if finder is not None and (spec is not None or segmenter is not None):
            raise ValueError("effect segmenter: give a spec, a segmenter or a finder to share, only one")
        self.finder = finder or PhraseFinder(
            spec,
            segmenter=segmenter,
            storage_options=storage_options,
            role="effect segmenter",
            not_loaded="effect_segmenter_not_loaded",
            models="the side-effect segmenter's models",
        )
        self.name = self.finder.name

    @classmethod
    def load(
        cls,
        config: RenderConfig,
        storage_options: Mapping[str, Any] | None = None,
        *,
        share: PhraseFinder | None = None,
    ) -> EffectSegmenter | None:
        """The segmenter of ``config.effect_segmenter`` with its models loaded, or None when it is unset or
        ``config.effect_masks`` is ``off`` (then neither route runs). ``share``: a finder already built (the gate's
        re-segmentation one), used when it is of the same spec. Raises ``InputError`` (``effect_segmenter_not_loaded``)
        naming the spec and the path when the models cannot be loaded."""
        if not config.effect_segmenter or config.effect_masks == "off":
            return None
        if share is not None and share.name == config.effect_segmenter:
            effects = cls(finder=share)
        else:
            effects = cls(config.effect_segmenter, storage_options=storage_options)
        effects.setup()
        return effects

    def setup(self) -> None:
        """Load the models (idempotent)."""
        self.finder.setup()

    def find(
        self, frames: np.ndarray, object_masks: np.ndarray, label: str, templates: Sequence[str]
    ) -> SegmentedEffects:
        """The side effects of the object ``object_masks`` `(num_frames, height, width)` bool named ``label`` in
        ``frames`` `(num_frames, height, width, 3)` uint8, asked for with ``templates`` (``"shadow of {label}"``)."""
        if not label:
            raise ValueError("effect segmenter: an object label is needed to ask for its side effects")
        phrases = effect_phrases(templates, label)
        found = self.finder.track(frames, phrases)
        masks, kept = effect_from_instances([m for _, m in found], object_masks)
        return SegmentedEffects(masks, float(masks.mean()), phrases, len(found), int(np.count_nonzero(kept)))


def combine(finder: EffectMasks, segmented: SegmentedEffects | None) -> tuple[np.ndarray, float, str]:
    """The effect of both routes: ``(masks (num_frames, height, width) bool: their union, area: its share of the
    clip's pixels, source)``. ``source`` is ``segmenter`` when only the segmenter found something,
    ``segmenter+<finder source>`` when both did, else the finder's source (``tasks.effects.EFFECT_SOURCES``)."""
    if segmented is None:
        return finder.masks, finder.area, finder.source
    union = finder.masks | segmented.masks
    source: str = finder.source
    if segmented.masks.any():
        source = f"{SEGMENTER_SOURCE}+{finder.source}" if finder.masks.any() else SEGMENTER_SOURCE
    return union, float(union.mean()), source
