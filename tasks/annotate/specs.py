"""Run options of the annotation stage: segmenter specs, vocabulary, captioner/tagger, and the no-mask check.

Segmenter specs (``--segmenter``)::

    provided                                       masks that came with the sources (manifest or sibling files)
    sam:CHECKPOINT[#auto=1&labels=car,dog…]        segment-anything (see tasks.steps.parse_sam_spec)
    detect+track:DETECTOR#tracker=sam2:PATH[&…]    open-vocabulary detector + SAM2 video propagation
    detect+track:DETECTOR#tracker=sam:CKPT[&…]     … + segment-anything frame-to-frame tracking (fallback)
    sam3:PATH[#threshold=0.5&max_objects=5]        SAM3 video: noun phrases in, tracked instance masks out

``detect+track`` options: ``tracker`` (required), ``threshold`` (detector score, default 0.3), ``nms_iou``,
``max_objects`` (default 5), ``keyframe_every`` (detect every N frames, 0 = first frame only), ``match_iou``,
``batch_size``, ``device``, ``dtype``. ``sam3`` options: ``threshold``, ``max_objects``, ``device``, ``dtype``.
Paths are local folders or fsspec URLs of ``save_pretrained`` checkpoints.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tasks.types import SourceItem


SEGMENTER_CHOICES = (
    "--segmenter detect+track:DETECTOR#tracker=sam2:SAM2_PATH (open-vocabulary boxes tracked by SAM2), "
    "--segmenter sam3:SAM3_PATH (text-prompted video segmentation) or --segmenter sam:CHECKPOINT#auto=1 "
    "(segment-anything), each with --vocab FILE for the object names"
)
_OPTIONS: dict[str, dict[str, type]] = {
    "detect+track": {
        "tracker": str,
        "threshold": float,
        "nms_iou": float,
        "max_objects": int,
        "keyframe_every": int,
        "match_iou": float,
        "batch_size": int,
        "device": str,
        "dtype": str,
    },  # fmt: skip
    "sam3": {"threshold": float, "max_objects": int, "device": str, "dtype": str},
}


class NoMasksError(ValueError):
    """No source has masks and no segmenter was chosen: the run stops before ingesting (exit code 2)."""


def is_vocab_segmenter(spec: str) -> bool:
    """True for the segmenters that need a vocabulary (``detect+track:`` and ``sam3:``)."""
    return spec.startswith(("detect+track:", "sam3:"))


def parse_segmenter_spec(spec: str) -> tuple[str, str, dict[str, Any]]:
    """``detect+track:…`` / ``sam3:…`` → ``(kind, path, options)``; ``ValueError`` saying what is wrong."""
    kind, sep, rest = spec.partition(":")
    if kind not in _OPTIONS or not sep:
        raise ValueError(f"segmenter {spec!r}: expected provided, sam:…, detect+track:… or sam3:…")
    path, _, fragment = rest.partition("#")
    if not path:
        raise ValueError(f"segmenter {spec!r}: the model path or URL is empty")
    options: dict[str, Any] = {}
    for part in filter(None, fragment.split("&")):
        key, eq, value = part.partition("=")
        if not eq or key not in _OPTIONS[kind]:
            raise ValueError(f"segmenter {spec!r}: unknown option {part!r}; options are {sorted(_OPTIONS[kind])}")
        try:
            options[key] = _OPTIONS[kind][key](value)
        except ValueError:
            raise ValueError(f"segmenter {spec!r}: option {key}={value!r} is not a valid {_OPTIONS[kind][key].__name__}"
                             ) from None  # fmt: skip
    if kind == "detect+track":
        tracker = options.get("tracker", "")
        if not tracker.startswith(("sam2:", "sam:")) or len(tracker.split(":", 1)[1]) == 0:
            raise ValueError(f"segmenter {spec!r}: needs tracker=sam2:PATH (SAM2 video) or tracker=sam:CHECKPOINT")
    return kind, path, options


def build_segmenter(spec: str, vocabulary: Any, *, storage_options: Mapping[str, Any] | None = None) -> Any:
    """The ``detect+track`` or ``sam3`` segmenter of ``spec`` (models load in its ``setup()``)."""
    from tasks.annotate.detect import ZeroShotDetector
    from tasks.annotate.segmenters import DetectTrackSegmenter, Sam3Segmenter
    from tasks.annotate.track import Sam2VideoTracker, SamFrameTracker

    kind, path, options = parse_segmenter_spec(spec)
    device, dtype = options.pop("device", None), options.pop("dtype", "float32")
    if kind == "sam3":
        return Sam3Segmenter(path, vocabulary, device=device, dtype=dtype, storage_options=storage_options, **options)
    tracker_spec = options.pop("tracker")
    tracker_kind, tracker_path = tracker_spec.split(":", 1)
    if tracker_kind == "sam2":
        tracker: Any = Sam2VideoTracker(tracker_path, device=device, dtype=dtype, storage_options=storage_options)
    else:
        from tasks.segment import SamSegmenter

        name = tracker_path.rsplit("/", 1)[-1].lower()
        model_type = next((t for t in ("vit_h", "vit_l", "vit_b") if t in name), "vit_b")
        tracker = SamFrameTracker(SamSegmenter(tracker_path, model_type=model_type, device=device,
                                               storage_options=storage_options))  # fmt: skip
    detector_keys = ("threshold", "nms_iou", "batch_size")
    detector = ZeroShotDetector(path, device=device, dtype=dtype, storage_options=storage_options,
                                **{k: options.pop(k) for k in detector_keys if k in options})  # fmt: skip
    return DetectTrackSegmenter(detector, tracker, vocabulary, **options)


def make_vocabulary(
    vocab_file: str | None = None,
    *,
    from_caption: bool = True,
    tagger: Any = None,
    storage_options: Mapping[str, Any] | None = None,
    max_phrases: int = 32,
) -> Any:
    """The run's :class:`tasks.annotate.vocab.Vocabulary` (``--vocab FILE``, caption nouns, VLM tags)."""
    from tasks.annotate.vocab import Vocabulary, read_vocab_file

    phrases = read_vocab_file(vocab_file, storage_options=storage_options) if vocab_file else []
    return Vocabulary(phrases, from_caption=from_caption, tagger=tagger, max_phrases=max_phrases)


def check_masks_or_segmenter(items: Sequence[SourceItem], segmenter_spec: str) -> None:
    """Raise :class:`NoMasksError` when there are items, none has masks and the segmenter is ``provided``."""
    if segmenter_spec != "provided" or not items or any(item.mask_uri for item in items):
        return
    raise NoMasksError(
        f"none of the {len(items)} sources has masks (no mask_uri in a manifest, no <stem>_masks.npz, <stem>.npz, "
        f"all_masks.npz or PNG folder next to the videos) and no segmenter was chosen; use {SEGMENTER_CHOICES}"
    )
