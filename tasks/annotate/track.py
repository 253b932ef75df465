"""Video trackers: box prompts on a clip's first frame → one mask per object through the clip.

- :class:`Sam2VideoTracker`: SAM2's video model (``Sam2VideoModel`` + ``Sam2VideoProcessor``): the boxes prompt
  frame 0 and the masks are propagated with the model's memory (every frame attends to the memory of earlier
  frames' masks), not by re-prompting each frame.
- :class:`SamFrameTracker`: segment-anything (the ``sam:`` checkpoints of :class:`tasks.segment.SamSegmenter`),
  each frame prompted with the previous frame's mask box; frames after a loss stay empty.

Both implement :class:`VideoTracker`. The bookkeeping that decides which detections start new tracks lives in
:mod:`tasks.annotate.segmenters`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from tasks.annotate.loading import load_pretrained, torch_dtype, under_load_lock
from tasks.annotate.stop import check_stop


Box = Sequence[float]


class VideoTracker(Protocol):
    """Tracks box-prompted objects through frames. ``setup()`` loads the model once."""

    name: str

    def setup(self) -> None: ...

    def track(self, frames: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
        """Masks ``(len(boxes), T, H, W)`` bool for ``frames`` ``(T, H, W, 3)`` uint8, each object prompted by its
        ``(x0, y0, x1, y1)`` pixel box on ``frames[0]``."""
        ...


class Sam2VideoTracker:
    """SAM2 video propagation from a local checkpoint folder (e.g. a copy of ``facebook/sam2.1-hiera-large``).

    Args:
        path: the folder (``Sam2VideoModel`` weights + ``Sam2VideoProcessor``) or an fsspec URL of one.
        device, dtype: where and in which precision the model runs.
    """

    name = "sam2"

    def __init__(
        self,
        path: str,
        *,
        device: str | None = None,
        dtype: str = "float32",
        storage_options: Mapping[str, Any] | None = None,
    ):
        torch_dtype(dtype)
        self.path = str(path)
        self.device = device
        self.dtype = dtype
        self.storage_options = dict(storage_options or {})
        self.model: Any = None
        self.processor: Any = None

    @property
    def model_id(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    @under_load_lock
    def setup(self) -> None:
        if self.model is not None:
            return
        from transformers import Sam2VideoModel

        self.model, self.processor, self.device = load_pretrained(
            Sam2VideoModel, self.path, storage_options=self.storage_options, device=self.device, dtype=self.dtype,
            role="sam2 video tracker",
        )  # fmt: skip

    def track(self, frames: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
        import torch

        self.setup()
        num_frames, height, width = frames.shape[:3]
        masks = np.zeros((len(boxes), num_frames, height, width), bool)
        if not len(boxes):
            return masks
        session = self.processor.init_video_session(
            video=frames, inference_device=self.device, dtype=torch_dtype(self.dtype)
        )
        obj_ids = list(range(1, len(boxes) + 1))
        self.processor.add_inputs_to_inference_session(
            session, frame_idx=0, obj_ids=obj_ids, input_boxes=[[[float(v) for v in b] for b in boxes]]
        )
        row = {obj: i for i, obj in enumerate(obj_ids)}
        with torch.inference_mode():
            self.model(inference_session=session, frame_idx=0)
            for out in self.model.propagate_in_video_iterator(session, start_frame_idx=0):
                check_stop(f"sam2 tracking, frame {out.frame_idx}")
                pred = self.processor.post_process_masks(
                    [out.pred_masks.float()], original_sizes=[[height, width]], binarize=True
                )[0]  # (objects, 1, H, W)
                ids = list(getattr(out, "object_ids", None) or session.obj_ids)
                for k, obj in enumerate(ids):
                    masks[row[obj], out.frame_idx] = pred[k, 0].cpu().numpy().astype(bool)
        return masks


class SamFrameTracker:
    """segment-anything prompted frame by frame (the fallback tracker): wraps a :class:`tasks.segment.SamSegmenter`,
    whose continuity check ends a track at the first frame whose mask is empty or jumps (IoU below ``min_iou``)."""

    name = "sam"

    def __init__(self, segmenter: Any):
        self.segmenter = segmenter

    @property
    def model_id(self) -> str:
        return str(self.segmenter.checkpoint or "sam").rstrip("/").rsplit("/", 1)[-1]

    def setup(self) -> None:
        self.segmenter.setup()

    def track(self, frames: np.ndarray, boxes: Sequence[Box]) -> np.ndarray:
        out = np.zeros((len(boxes), *frames.shape[:3]), bool)
        for i, box in enumerate(boxes):
            out[i], _ = self.segmenter.track(frames, box=[float(v) for v in box])
        return out
