"""Segmenters: where an object's masks come from (the protocol is ``tasks.contracts.Segmenter``).

:class:`ProvidedSegmenter` reads the masks that came with the source item and resamples them to the clip exactly as
the video was resampled. :class:`SamSegmenter` runs segment-anything from a box (or point) prompt on the item's
first clip, frame by frame, each frame prompted with the previous mask's box; an object whose mask vanishes or
drops below ``min_iou`` is lost (``object_lost``); with ``auto=True`` clips without a prompt get automatic masks.
:class:`BaseSegmenter` holds what both share.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import fsspec
import numpy as np

from catalog.ids import object_id as make_object_id
from catalog.ids import sha256_bytes
from tasks.annotate.stop import check_stop
from tasks.errors import InputError
from tasks.masks import (
    MaskBounds,
    MaskRequest,
    encode_masks_npz,
    load_mask_frames,
    mask_bbox,
    require_label,
    resample_masks,
    select_label,
)
from tasks.types import Clip, Failure, ObjectMask, SourceItem, VideoInfo
from tasks.video_io import fit_box


if TYPE_CHECKING:
    from segment_anything.modeling import Sam


def make_object(clip: Clip, masks: np.ndarray, *, label: str | None, mask_source: str, **fields: Any) -> ObjectMask:
    """An :class:`ObjectMask` for ``masks`` ``(T, H, W)`` bool with its deterministic id (clip + mask bytes)."""
    masks = np.ascontiguousarray(masks, dtype=bool)
    digest = sha256_bytes(encode_masks_npz(masks))
    return ObjectMask(
        object_id=make_object_id(clip.clip_id, digest),
        clip_id=clip.clip_id,
        masks=masks,
        label=label,
        mask_source=mask_source,
        **fields,
    )


class BaseSegmenter:
    """Turns a clip into its objects. ``setup()`` loads heavy state once per batch; ``segment()`` is per clip."""

    name: str = "segmenter"

    def setup(self) -> None:
        """Load models; called once before the first clip."""

    def segment(self, clip: Clip, *, video: VideoInfo | None = None) -> list[ObjectMask]:
        """The objects of ``clip`` (masks ``(clip frames, height, width)`` bool). ``video`` is the source's
        :class:`VideoInfo` (needed to map source coordinates/sizes to the clip). Raises ``InputError``."""
        raise NotImplementedError

    def drain_failures(self) -> list[Failure]:
        """Problems met while segmenting that are not the clip's failure (refused vocabulary tags, …), collected
        since the last call; the caller records them."""
        return []


class ProvidedSegmenter(BaseSegmenter):
    """Masks provided with the source item (``mask_uri`` + optional ``mask_id``), see :mod:`tasks.masks`.

    Only the clip's frames of a mask are read, after its declared frames and size were checked against the probed
    video (:class:`tasks.masks.MaskBounds`), and every file is checked against the item's ``roots`` when opened.
    """

    name = "provided"

    def __init__(self, storage_options: Mapping[str, Any] | None = None):
        self.storage_options = dict(storage_options or {})
        self._cache: tuple[tuple, np.ndarray, int | None] | None = None

    def _load(self, item: SourceItem, frames: range, request: MaskRequest) -> tuple[np.ndarray, int | None]:
        """``(the clip's frames of the mask, id still to select)``. The frames of an ``.npz`` label map are cached
        with every label, so the rows of one VPData clip (one per object) read them once; other formats are cached
        per object."""
        uri = str(item.mask_uri)
        label_map = uri.lower().endswith(".npz")
        key = (uri, None if label_map else item.mask_id, frames, request)
        if self._cache is None or self._cache[0] != key:
            self._cache = None  # release the previous frames before loading the next
            array, mask_id = load_mask_frames(uri, frames, mask_id=None if label_map else item.mask_id,
                                              request=request)  # fmt: skip
            self._cache = (key, array, mask_id)
        return self._cache[1], item.mask_id if label_map else self._cache[2]

    def segment(self, clip: Clip, *, video: VideoInfo | None = None) -> list[ObjectMask]:
        item = clip.item
        if item is None or not item.mask_uri:
            raise InputError(clip.source_uri, "no_mask", "no mask_uri was provided for this source")
        bounds = MaskBounds.of_video(video) if video is not None else None
        request = MaskRequest(item.roots, bounds, self.storage_options)
        num_frames, height, width = len(clip.frames), clip.frames.shape[1], clip.frames.shape[2]
        frames = range(clip.start_frame, clip.end_frame, clip.frame_stride)[:num_frames]
        array, mask_id = self._load(item, frames, request)
        if mask_id is None and array.dtype != bool:
            # a label map without an id (a sibling mask file found next to the video): one object per label
            ids = [int(v) for v in np.unique(array) if v != 0]
            if not ids:
                raise InputError(item.mask_uri, "empty_mask", "the label map is empty on this clip's frames")
        else:
            ids = [mask_id]
        objects = []
        for label_id in ids:
            if label_id is not None and array.dtype != bool and not np.any(array == label_id):
                require_label(item.mask_uri, label_id, request=request)  # absent from the map, or these frames
                selected = np.zeros(array.shape, bool)
            else:
                selected = select_label(array, label_id, item.mask_uri)
            resampled = resample_masks(
                selected,
                range(len(frames)),
                height=height,
                width=width,
                resize_mode=clip.resize_mode,
                video_size=(video.height, video.width) if video is not None else None,
                rotation=video.rotation if video is not None else 0,
                uri=item.mask_uri,
            )
            objects.append(make_object(clip, resampled, label=item.label, mask_source="provided", mask_id=label_id))
        return objects


# --------------------------------------------------------------------------------------------------------- SAM
@dataclass(frozen=True)
class SamConfig:
    """Architecture of a segment-anything model, for checkpoints whose size is not one of the registry's.

    ``vit_b`` is ``SamConfig(encoder_embed_dim=768, encoder_depth=12, encoder_num_heads=12,
    encoder_global_attn_indexes=(2, 5, 8, 11))`` with the other defaults.
    """

    img_size: int = 1024
    patch_size: int = 16
    encoder_embed_dim: int = 768
    encoder_depth: int = 12
    encoder_num_heads: int = 12
    encoder_window_size: int = 14
    encoder_global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    prompt_embed_dim: int = 256  # also the image encoder's output channels and the decoder width
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    iou_head_hidden_dim: int = 256

    def build(self) -> "Sam":
        """A randomly initialised ``Sam`` of this architecture."""
        from functools import partial

        import torch
        from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

        grid = self.img_size // self.patch_size
        return Sam(
            image_encoder=ImageEncoderViT(
                img_size=self.img_size,
                patch_size=self.patch_size,
                embed_dim=self.encoder_embed_dim,
                depth=self.encoder_depth,
                num_heads=self.encoder_num_heads,
                mlp_ratio=4.0,
                out_chans=self.prompt_embed_dim,
                qkv_bias=True,
                norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
                use_rel_pos=True,
                window_size=self.encoder_window_size,
                global_attn_indexes=self.encoder_global_attn_indexes,
            ),
            prompt_encoder=PromptEncoder(
                embed_dim=self.prompt_embed_dim,
                image_embedding_size=(grid, grid),
                input_image_size=(self.img_size, self.img_size),
                mask_in_chans=16,
            ),
            mask_decoder=MaskDecoder(
                num_multimask_outputs=3,
                transformer=TwoWayTransformer(
                    depth=self.decoder_depth,
                    embedding_dim=self.prompt_embed_dim,
                    mlp_dim=self.decoder_mlp_dim,
                    num_heads=self.decoder_num_heads,
                ),
                transformer_dim=self.prompt_embed_dim,
                iou_head_depth=3,
                iou_head_hidden_dim=self.iou_head_hidden_dim,
            ),
        )


def load_sam(
    checkpoint: str | None = None,
    *,
    model_type: str = "vit_b",
    config: SamConfig | None = None,
    sam: "Sam | None" = None,
    storage_options: Mapping[str, Any] | None = None,
    device: str = "cpu",
) -> "Sam":
    """Build a ``Sam`` (``sam`` as given, else from ``config``, else ``segment_anything.sam_model_registry[model_type]``)
    and load ``checkpoint`` (a state dict saved with ``torch.save``; local path or fsspec URL) into it strictly.

    Raises ``ValueError`` for an unknown ``model_type`` and ``InputError`` (``not_found``/``bad_checkpoint``) for a
    checkpoint that is missing or does not fit the architecture.
    """
    import torch
    from segment_anything import sam_model_registry

    if sam is None:
        if config is not None:
            sam = config.build()
        else:
            if model_type not in sam_model_registry:
                raise ValueError(f"unknown SAM model_type {model_type!r}; known: {sorted(sam_model_registry)}")
            sam = sam_model_registry[model_type](checkpoint=None)
    if checkpoint is not None:
        try:
            with fsspec.open(str(checkpoint), "rb", **dict(storage_options or {})) as f:
                state = torch.load(f, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise InputError(str(checkpoint), "not_found", "SAM checkpoint not found") from None
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]
        try:
            sam.load_state_dict(state, strict=True)
        except (RuntimeError, TypeError) as exc:
            raise InputError(str(checkpoint), "bad_checkpoint", f"does not fit the SAM architecture ({exc})") from None
    return sam.to(device).eval()


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two ``(H, W)`` bool masks (1.0 when both are empty)."""
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


class SamSegmenter(BaseSegmenter):
    """segment-anything with box/point prompts propagated frame to frame, optional automatic masks.

    Args:
        checkpoint: a state dict file (path or fsspec URL), loaded in :meth:`setup`; ``None`` with ``sam`` given.
        model_type: registry architecture (``vit_b``, ``vit_l``, ``vit_h``) when neither ``config`` nor ``sam``.
        config: architecture for non-registry checkpoints.
        sam: a prebuilt ``Sam`` (its weights are kept unless ``checkpoint`` is given).
        min_iou: continuity threshold between consecutive frames' masks.
        box_margin: the previous mask's box is grown by this fraction of its size on each side, to follow motion.
        auto: segment clips without a prompt with ``SamAutomaticMaskGenerator`` on the first frame.
        max_auto_objects: keep at most this many automatic objects (highest predicted IoU first).
        auto_options: keyword arguments for ``SamAutomaticMaskGenerator`` (``points_per_side``, thresholds…).
        labels: labels for automatic objects, in order (default ``"object"``).
    """

    name = "sam"
    identity: str | None = None  # what its objects depend on (tasks.annotate.specs.sam_identity), set by its builder

    def __init__(
        self,
        checkpoint: str | None = None,
        *,
        model_type: str = "vit_b",
        config: SamConfig | None = None,
        sam: "Sam | None" = None,
        device: str | None = None,
        min_iou: float = 0.5,
        box_margin: float = 0.1,
        auto: bool = False,
        max_auto_objects: int = 3,
        auto_options: Mapping[str, Any] | None = None,
        labels: Sequence[str] | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ):
        if checkpoint is None and sam is None:
            raise ValueError("SamSegmenter needs a checkpoint (path or URL) or a prebuilt `sam` module")
        if not 0.0 <= min_iou <= 1.0:
            raise ValueError(f"min_iou must be in [0, 1], got {min_iou}")
        self.checkpoint = checkpoint
        self.model_type = model_type
        self.config = config
        self.device = device
        self.min_iou = min_iou
        self.box_margin = box_margin
        self.auto = auto
        self.max_auto_objects = max_auto_objects
        self.auto_options = dict(auto_options or {})
        self.labels = list(labels or [])
        self.storage_options = dict(storage_options or {})
        self.sam = sam
        self.predictor = None
        self._ready = False

    def setup(self) -> None:
        """Load the model once (idempotent)."""
        if self._ready:
            return
        import torch
        from segment_anything import SamPredictor

        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.sam = load_sam(
            self.checkpoint,
            model_type=self.model_type,
            config=self.config,
            sam=self.sam,
            storage_options=self.storage_options,
            device=device,
        )
        self.predictor = SamPredictor(self.sam)
        self._ready = True

    # ------------------------------------------------------------------ tracking
    def _predict(self, image: np.ndarray, *, box: np.ndarray | None, points: np.ndarray | None,
                 point_labels: np.ndarray | None) -> np.ndarray:  # fmt: skip
        import torch

        self.predictor.set_image(image)
        with torch.inference_mode():
            masks, scores, _ = self.predictor.predict(
                point_coords=points, point_labels=point_labels, box=box, multimask_output=True
            )
        return masks[int(np.argmax(scores))].astype(bool)

    def _grow(self, box: list[int], height: int, width: int) -> np.ndarray:
        x0, y0, x1, y1 = box
        mx, my = (x1 - x0) * self.box_margin, (y1 - y0) * self.box_margin
        return np.array([max(0, x0 - mx), max(0, y0 - my), min(width, x1 + mx), min(height, y1 + my)], np.float32)

    def track(
        self,
        frames: np.ndarray,
        *,
        box: Sequence[float] | None = None,
        points: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
    ) -> tuple[np.ndarray, int | None]:
        """Segment one object through ``frames`` ``(T, H, W, 3)`` uint8 from a first-frame ``box`` ``(x0, y0, x1,
        y1)`` and/or ``points`` ``(N, 2)`` (x, y) with ``point_labels`` ``(N,)`` (1 = object, 0 = background).

        Returns ``(masks (T, H, W) bool, lost)``: ``lost`` is the first frame where the object was lost (its mask is
        empty or its IoU with the previous mask is below ``min_iou``); frames from there on are left empty.
        """
        self.setup()
        if box is None and points is None:
            raise ValueError("track needs a box or points prompt")
        num_frames, height, width, _ = frames.shape
        masks = np.zeros((num_frames, height, width), dtype=bool)
        prompt_box = None if box is None else np.asarray(box, dtype=np.float32)
        if points is not None:
            points = np.asarray(points, dtype=np.float32)
            point_labels = np.ones(len(points), np.int64) if point_labels is None else np.asarray(point_labels)
        for t in range(num_frames):
            check_stop(f"sam tracking, frame {t}")
            if t == 0:
                mask = self._predict(frames[0], box=prompt_box, points=points, point_labels=point_labels)
            else:
                previous_box = mask_bbox(masks[t - 1])
                mask = self._predict(
                    frames[t], box=self._grow(previous_box, height, width), points=None, point_labels=None
                )
            if not mask.any() or (t and mask_iou(masks[t - 1], mask) < self.min_iou):
                return masks, t
            masks[t] = mask
        return masks, None

    def _auto_prompts(self, first_frame: np.ndarray) -> list[list[int]]:
        """Boxes ``[x0, y0, x1, y1]`` of the best automatic masks on the first frame."""
        from segment_anything import SamAutomaticMaskGenerator

        generator = SamAutomaticMaskGenerator(self.sam, **self.auto_options)
        proposals = generator.generate(first_frame)
        proposals.sort(key=lambda p: p["predicted_iou"], reverse=True)
        boxes = []
        for proposal in proposals[: self.max_auto_objects]:
            x, y, w, h = proposal["bbox"]
            boxes.append([int(x), int(y), int(x + w), int(y + h)])
        return boxes

    def segment(self, clip: Clip, *, video: VideoInfo | None = None) -> list[ObjectMask]:
        self.setup()
        item = clip.item
        num_frames, height, width, _ = clip.frames.shape
        item_start = 0
        if item is not None:
            if item.start_s is not None and video is not None:
                item_start = round(item.start_s * video.fps)
            else:
                item_start = item.start_frame or 0
        prompted = item is not None and item.box is not None and clip.start_frame <= item_start
        if prompted:
            if video is None:
                raise ValueError("SamSegmenter.segment needs `video` to map the item's box onto the clip")
            boxes = [fit_box(item.box, video.height, video.width, height, width, clip.resize_mode)]
            source: Literal["sam", "sam-auto"] = "sam"
            labels = [item.label]
        elif self.auto:
            boxes = self._auto_prompts(clip.frames[0])
            source = "sam-auto"
            default = item.label if item is not None and item.label else "object"
            labels = [self.labels[i] if i < len(self.labels) else default for i in range(len(boxes))]
            if not boxes:
                raise InputError(clip.clip_id, "no_objects", "automatic mask generation found no object")
        else:
            raise InputError(
                clip.clip_id, "no_prompt", "no box prompt for this clip and automatic mask generation is off"
            )
        objects = []
        for box, label in zip(boxes, labels):
            masks, lost = self.track(clip.frames, box=box)
            objects.append(
                make_object(
                    clip,
                    masks,
                    label=label,
                    mask_source=source,
                    qa_ok=lost is None,
                    qa_reason=None if lost is None else "object_lost",
                    stats={} if lost is None else {"lost_frame": lost},
                )
            )
        return objects
