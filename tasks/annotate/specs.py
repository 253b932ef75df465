"""Run options of the annotation stage: segmenter specs, vocabulary, captioner/tagger, and the no-mask check.

Segmenter specs (``--segmenter``; the options of ``detect+track`` and ``sam3``: :func:`parse_segmenter_spec`)::

    provided                                       masks that came with the sources (manifest or sibling files)
    sam:CHECKPOINT[#auto=1&labels=car,dog…]        segment-anything (see parse_sam_spec)
    detect+track:DETECTOR#tracker=sam2:PATH[&…]    open-vocabulary detector + SAM2 video propagation
    detect+track:DETECTOR#tracker=sam:CKPT[&…]     … + segment-anything frame-to-frame tracking (fallback)
    sam3:PATH[#threshold=0.5&max_objects=5]        SAM3 video: noun phrases in, tracked instance masks out

:func:`check_annotation` checks a run's annotation options (specs, option ranges, model folders and their model
types, the vocabulary file) without loading any weight, before anything is written: an :class:`AnnotationSpecError`
names the option at fault. :func:`annotation_identity` is what an open-vocabulary segmenter's objects are keyed by.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tasks.errors import InputError
from tasks.types import SourceItem


if TYPE_CHECKING:
    from tasks.config import RunConfig

log = logging.getLogger(__name__)


SEGMENTER_CHOICES = (
    "--segmenter detect+track:DETECTOR#tracker=sam2:SAM2_PATH (open-vocabulary boxes tracked by SAM2), "
    "--segmenter sam3:SAM3_PATH (text-prompted video segmentation) or --segmenter sam:CHECKPOINT#auto=1 "
    "(segment-anything), each with --vocab FILE for the object names (sam: labels its automatic objects with the "
    "file's phrases in order)"
)
SEGMENTER_KINDS = (
    "provided, sam:CHECKPOINT[#model_type=…&auto=1], detect+track:DETECTOR#tracker=sam2:PATH|sam:CHECKPOINT[&…] "
    "or sam3:PATH[#threshold=…&max_objects=…]"
)
"""Every segmenter spec kind, as messages list them."""
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


DTYPES = ("float32", "bfloat16", "float16")
_DEVICE = re.compile(r"^(cpu|mps|meta|(cuda|xpu|npu|hpu)(:\d+)?)$")
_RANGES: dict[str, tuple[float, float]] = {
    "threshold": (0.0, 1.0),
    "nms_iou": (0.0, 1.0),
    "match_iou": (0.0, 1.0),
    "max_objects": (1, float("inf")),
    "keyframe_every": (0, float("inf")),
    "batch_size": (1, float("inf")),
}
"""Inclusive bounds of the numeric segmenter options (a threshold of 0 keeps every box)."""
IDENTITY_IGNORED = frozenset({"device", "batch_size"})
"""Options that change where and how fast a segmenter runs, not what it finds: left out of its identity."""


class NoMasksError(ValueError):
    """No source has masks and no segmenter was chosen: the run stops before ingesting (exit code 2)."""


class AnnotationSpecError(ValueError):
    """A run's annotation option is wrong (a spec, an option's range, a model folder, the vocabulary file): found
    before anything is written; ``vpf run`` says it in one line and exits 2. ``option`` is the CLI option."""

    def __init__(self, option: str, message: str):
        self.option = option
        super().__init__(f"{option}: {message}")


def is_vocab_segmenter(spec: str) -> bool:
    """True for the segmenters that need a vocabulary (``detect+track:`` and ``sam3:``)."""
    return spec.startswith(("detect+track:", "sam3:"))


def parse_segmenter_spec(spec: str) -> tuple[str, str, dict[str, Any]]:
    """``detect+track:…`` / ``sam3:…`` → ``(kind, path, options)``; ``ValueError`` saying what is wrong (syntax,
    an unknown option, a value out of its range: :data:`_RANGES`, :data:`DTYPES`, a device name).

    ``detect+track`` options: ``tracker`` (required), ``threshold`` (detector score, default 0.3), ``nms_iou``,
    ``max_objects`` (default 5), ``keyframe_every`` (detect every N frames, 0 = first frame only), ``match_iou``,
    ``batch_size``, ``device``, ``dtype``. ``sam3`` options: ``threshold``, ``max_objects``, ``device``, ``dtype``.
    Paths are local folders or fsspec URLs of ``save_pretrained`` checkpoints.
    """
    kind, sep, rest = spec.partition(":")
    if kind not in _OPTIONS or not sep:
        raise ValueError(f"segmenter {spec!r}: unknown kind; expected {SEGMENTER_KINDS}")
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
    for key, value in options.items():
        if key in _RANGES:
            low, high = _RANGES[key]
            if not low <= value <= high:
                bounds = f"in [{low:g}, {high:g}]" if high != float("inf") else f">= {low:g}"
                raise ValueError(f"segmenter {spec!r}: option {key}={value:g}: expected a value {bounds}")
    if options.get("dtype", "float32") not in DTYPES:
        raise ValueError(f"segmenter {spec!r}: option dtype={options['dtype']!r}: expected one of {', '.join(DTYPES)}")
    if "device" in options and not _DEVICE.match(options["device"]):
        raise ValueError(f"segmenter {spec!r}: option device={options['device']!r}: expected cpu, cuda, cuda:N or mps")
    return kind, path, options


SAM_SPEC_OPTIONS = {"model_type": str, "auto": bool, "max_auto_objects": int, "min_iou": float, "labels": list}


def parse_sam_spec(spec: str) -> dict[str, Any]:
    """``sam:CHECKPOINT[#key=value&…]`` → ``SamSegmenter`` keyword arguments.

    Options: ``model_type`` (vit_b | vit_l | vit_h; default: read from the released file names
    ``sam_vit_h_4b8939.pth`` etc., else vit_b), ``auto`` (1/0: automatic masks for clips without a box),
    ``max_auto_objects``, ``min_iou`` (continuity check), ``labels`` (comma-separated names for automatic objects;
    without it, a run's ``--vocab`` file gives them, in order: ``tasks.steps.ingest.make_annotators``).
    Example: ``sam:s3://models/sam_vit_h_4b8939.pth#auto=1&labels=car,person``.
    """
    if not (spec.startswith("sam:") and len(spec) > 4):
        raise ValueError(f"segmenter {spec!r}: unknown kind; expected {SEGMENTER_KINDS}")
    checkpoint, _, fragment = spec[4:].partition("#")
    if not checkpoint:
        raise ValueError(f"segmenter {spec!r}: the checkpoint path or URL is empty")
    options: dict[str, Any] = {"checkpoint": checkpoint}
    name = checkpoint.rsplit("/", 1)[-1].lower()
    for model_type in ("vit_h", "vit_l", "vit_b"):
        if model_type in name:
            options["model_type"] = model_type
            break
    for part in filter(None, fragment.split("&")):
        key, sep, value = part.partition("=")
        if not sep or key not in SAM_SPEC_OPTIONS:
            raise ValueError(f"segmenter {spec!r}: unknown option {part!r}; options are {sorted(SAM_SPEC_OPTIONS)}")
        kind = SAM_SPEC_OPTIONS[key]
        try:
            if kind is bool:
                if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError(value)
                options[key] = value.lower() in ("1", "true", "yes")
            elif kind is list:
                options[key] = [v.strip() for v in value.split(",") if v.strip()]
            else:
                options[key] = kind(value)
        except ValueError:
            raise ValueError(f"segmenter {spec!r}: option {key}={value!r} is not a valid {kind.__name__}") from None
    return options


def build_segmenter(spec: str, vocabulary: Any, *, storage_options: Mapping[str, Any] | None = None) -> Any:
    """The ``detect+track`` or ``sam3`` segmenter of ``spec`` (models load in its ``setup()``); its ``identity``
    (computed here, from the model folders' ``config.json`` and file listings) is :func:`annotation_identity` of ``spec`` and ``vocabulary``."""
    segmenter = _build_segmenter(spec, vocabulary, storage_options=storage_options)
    segmenter.spec = spec
    segmenter.identity = annotation_identity(spec, vocabulary, storage_options)
    return segmenter


def _build_segmenter(spec: str, vocabulary: Any, *, storage_options: Mapping[str, Any] | None = None) -> Any:
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
    """The run's :class:`tasks.annotate.vocab.Vocabulary` (``--vocab FILE``, caption nouns, VLM tags). Without a
    file and without a tagger, its fixed phrases are the built-in :data:`tasks.annotate.vocab.DEFAULT_VOCABULARY`."""
    from tasks.annotate.vocab import DEFAULT_VOCABULARY, Vocabulary, read_vocab_file

    if vocab_file:
        phrases, source = read_vocab_file(vocab_file, storage_options=storage_options), "file"
    elif tagger is None:
        phrases, source = list(DEFAULT_VOCABULARY), "builtin"
    else:
        phrases, source = [], "file"
    return Vocabulary(phrases, from_caption=from_caption, tagger=tagger, max_phrases=max_phrases,
                      source=source)  # type: ignore[arg-type]  # fmt: skip


def annotation_identity(spec: str, vocabulary: Any, storage_options: Mapping[str, Any] | None = None) -> str:
    """A short hash of what an open-vocabulary segmenter's objects depend on: its kind and options (not
    :data:`IDENTITY_IGNORED`, not the paths), the content identity of each model folder
    (:func:`tasks.annotate.loading.model_fingerprint`: ``config.json`` and the files' names, sizes and mtimes) and
    the vocabulary's :attr:`~tasks.annotate.vocab.Vocabulary.identity`. A model moved with its files keeps it."""
    from tasks.annotate.loading import model_fingerprint

    kind, path, options = parse_segmenter_spec(spec)
    models = {"model": model_fingerprint(path, storage_options)}
    if kind == "detect+track":
        tracker_kind, tracker_path = options["tracker"].split(":", 1)
        options["tracker"] = tracker_kind
        models["tracker"] = model_fingerprint(tracker_path, storage_options)
    document = {
        "kind": kind,
        "options": {k: v for k, v in sorted(options.items()) if k not in IDENTITY_IGNORED},
        "models": models,
        "vocabulary": vocabulary.identity if vocabulary is not None else None,
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()[:16]


def sam_identity(options: Mapping[str, Any], storage_options: Mapping[str, Any] | None = None) -> str:
    """A short hash of what a ``sam:`` segmenter's objects depend on: its options as ``SamSegmenter`` takes them
    (``labels`` included, whether they came from the spec or from ``--vocab``; not :data:`IDENTITY_IGNORED`, not the
    checkpoint's path) and the checkpoint's content identity (:func:`tasks.annotate.loading.model_fingerprint`)."""
    from tasks.annotate.loading import model_fingerprint

    document = {
        "kind": "sam",
        "options": {k: v for k, v in sorted(options.items()) if k not in IDENTITY_IGNORED | {"checkpoint"}},
        "model": model_fingerprint(str(options["checkpoint"]), storage_options),
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()[:16]


def check_annotation(config: RunConfig) -> None:
    """Check ``config``'s annotation options before a run writes anything, reading only ``config.json`` files and
    the vocabulary file (no weight is loaded, no model runs); raise :class:`AnnotationSpecError` naming the option.

    Checked: the segmenter specs (``--segmenter``, ``--reseg-segmenter``, ``--effect-segmenter``) and their option
    ranges (``threshold``/``nms_iou``/``match_iou`` in [0, 1], ``max_objects``/``batch_size`` >= 1,
    ``keyframe_every`` >= 0, ``dtype`` in :data:`DTYPES`, a device name); each model folder exists, has a ``config.json`` and is of the model type its role needs (detector: Grounding DINO /
    OWLv2 / OWL-ViT; ``tracker=sam2:`` SAM2 video; ``sam3:`` SAM3 video; tagger, captioner and judge
    ``transformers:`` folders a vision-language model; ``--aesthetic-clip``/``--clip-weights`` CLIP); a ``sam:``
    checkpoint and the aesthetic head exist; the vocabulary file is readable UTF-8 and every phrase passes the label
    rule. Remote URLs are checked through fsspec where it answers (``config.json`` present, its model type); when it
    cannot be reached, the check is skipped with a log line (the load reports it then).
    """
    options = config.storage_options
    spec = config.segmenter
    if is_vocab_segmenter(spec):
        _check_vocab_segmenter(spec, "--segmenter", options)
    elif spec != "provided":
        _check_file(_parsed(lambda: parse_sam_spec(spec), "--segmenter")["checkpoint"], "--segmenter", options)
    reseg = config.score.reseg_segmenter
    if reseg and reseg != spec:
        _check_vocab_segmenter(reseg, "--reseg-segmenter", options)
    effects = config.render.effect_segmenter
    if effects and effects not in (spec, reseg):
        _check_vocab_segmenter(effects, "--effect-segmenter", options)
    annotate = config.annotate
    if annotate.vocab:
        check_vocab_file(annotate.vocab, storage_options=options)
    for option, vlm in (("--tagger", annotate.tagger), ("--captioner", annotate.captioner),
                        ("--judge", config.score.judge)):  # fmt: skip
        if vlm and vlm.startswith("transformers:"):
            _check_model(vlm.split(":", 1)[1], None, option, options, vision=True)
    if config.proposer.startswith("transformers:"):
        _check_model(config.proposer.split(":", 1)[1], None, "--proposer", options)
    if annotate.aesthetic_clip:
        _check_model(annotate.aesthetic_clip, "clip", "--aesthetic-clip", options)
    if annotate.aesthetic_head:
        _check_file(annotate.aesthetic_head, "--aesthetic-head", options)
    if config.score.clip_weights:
        _check_model(config.score.clip_weights, "clip", "--clip-weights", options)


def check_vocab_file(uri: str, *, storage_options: Mapping[str, Any] | None = None, option: str = "--vocab") -> None:
    """The vocabulary file at ``uri`` is readable UTF-8 with at least one phrase, and every phrase passes the label
    rule (:func:`tasks.annotate.vocab.merge_vocab`); else :class:`AnnotationSpecError` naming the refused ones."""
    from tasks.annotate.vocab import merge_vocab, read_vocab_file

    try:
        phrases = read_vocab_file(uri, storage_options=storage_options)
    except ValueError as exc:
        raise AnnotationSpecError(option, str(exc)) from None
    _, refused = merge_vocab([("file", phrases)])
    if refused:
        names = ", ".join(repr(phrase[:60]) for phrase, _ in refused)
        raise AnnotationSpecError(option, f"vocabulary file {uri}: refused phrase(s) {names} ({refused[0][1]})")


def _parsed(parse: Any, option: str) -> Any:
    try:
        return parse()
    except ValueError as exc:
        raise AnnotationSpecError(option, str(exc)) from None


def _check_vocab_segmenter(spec: str, option: str, storage_options: Mapping[str, Any] | None) -> None:
    kind, path, options = _parsed(lambda: parse_segmenter_spec(spec), option)
    if kind == "sam3":
        _check_model(path, "sam3 video", option, storage_options)
        return
    _check_model(path, "detector", option, storage_options)
    tracker_kind, tracker_path = options["tracker"].split(":", 1)
    if tracker_kind == "sam2":
        _check_model(tracker_path, "sam2 video tracker", option, storage_options, what="tracker=sam2:")
    else:
        _check_file(tracker_path, option, storage_options, what="tracker=sam:")


def _check_model(uri: str, role: str | None, option: str, storage_options: Mapping[str, Any] | None, *,
                 vision: bool = False, what: str = "") -> None:  # fmt: skip
    """The saved model at ``uri`` exists, has a ``config.json`` and (``role``) the model type of that role;
    ``vision``: a vision-language model (its config has a ``vision_config``)."""
    from tasks.annotate.loading import check_model_type, is_remote, not_a_vlm, read_model_config

    where = f"{what or role or ('vision-language model' if vision else 'model')} {uri}"
    try:
        config = read_model_config(uri, storage_options)
    except InputError as exc:
        raise AnnotationSpecError(option, f"{where}: {exc.message}") from None
    except ValueError as exc:
        raise AnnotationSpecError(option, str(exc)) from None
    except Exception as exc:  # noqa: BLE001  (a remote store that does not answer: the load will say it)
        if not is_remote(uri):
            raise AnnotationSpecError(option, f"{where}: cannot be read ({type(exc).__name__}: {exc})") from None
        log.warning("%s %s: not checked before the run (%s: %s)", option, uri, type(exc).__name__, exc)
        return
    if role is not None:
        try:
            check_model_type(config, role, where)
        except ValueError as exc:
            raise AnnotationSpecError(option, str(exc)) from None
    if vision and (problem := not_a_vlm(config, where)):
        raise AnnotationSpecError(option, problem)


def _check_file(uri: str, option: str, storage_options: Mapping[str, Any] | None, *, what: str = "") -> None:
    """A checkpoint file exists at ``uri`` (remote: where fsspec answers)."""
    import fsspec

    from tasks.annotate.loading import is_remote

    where = f"{what or 'file'} {uri}"
    try:
        fs, path = fsspec.core.url_to_fs(str(uri), **(dict(storage_options or {}) if is_remote(uri) else {}))
        exists = fs.isfile(path)
    except Exception as exc:  # noqa: BLE001
        if not is_remote(uri):
            raise AnnotationSpecError(option, f"{where}: cannot be read ({type(exc).__name__}: {exc})") from None
        log.warning("%s %s: not checked before the run (%s: %s)", option, uri, type(exc).__name__, exc)
        return
    if not exists:
        raise AnnotationSpecError(option, f"{where}: no such file")


def check_masks_or_segmenter(items: Sequence[SourceItem], segmenter_spec: str) -> None:
    """Raise :class:`NoMasksError` when there are items, none has masks and the segmenter is ``provided``."""
    if segmenter_spec != "provided" or not items or any(item.mask_uri for item in items):
        return
    raise NoMasksError(
        f"none of the {len(items)} sources has masks (no mask_uri in a manifest, no <stem>_masks.npz, <stem>.npz, "
        f"all_masks.npz or PNG folder next to the videos) and no segmenter was chosen; use {SEGMENTER_CHOICES}"
    )
