"""Throughput of the annotation stage: the segmenters at real model sizes on CUDA, and the CPU cost of the glue.

1. Glue (CPU, always): the work ingest adds around the models per clip on the synthetic scenes (clip measures,
   object selection, track bookkeeping, vocabulary building), in milliseconds per clip and frames per second.
2. Segmenters (CUDA): ``detect+track`` (Grounding DINO + SAM2 video), OWLv2 and ``sam3`` at their released
   architectures with random weights, frames/s after one warm-up clip: cost per frame, not quality.

    .venv/bin/python bench/annotate.py [--json] [--glue-only] [--clips 3 --frames 49 --height 480 --width 720]

Without CUDA it prints the glue figures and exits 2; ``--scale tiny`` checks the script on CPU. See docs/annotation.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from tasks.synthetic import CAMERAS, make_scene  # noqa: E402


PHRASES = ["horse", "ball", "star", "person", "car", "dog"]
# random weights score below the released thresholds: detect everything, no hot-start delay, a bounded object count
SAM3_RANDOM = {"score_threshold_detection": 0.0, "new_det_thresh": 0.0, "hotstart_delay": 0, "max_num_objects": 8}


# --------------------------------------------------------------------------------------------------------- glue
class OracleTracker:
    """The scene's true masks for the objects whose first-frame boxes are given (no model)."""

    name = "oracle"

    def __init__(self, truth: np.ndarray):
        self.truth = truth

    def setup(self) -> None:
        pass

    def track(self, frames: np.ndarray, boxes: list) -> np.ndarray:
        start = self.truth.shape[1] - len(frames)
        return self.truth[: len(boxes), start:]


def bench_glue(frames: int, height: int, width: int, repeat: int) -> dict[str, Any]:
    from tasks.annotate.detect import Detection
    from tasks.annotate.segmenters import track_detections
    from tasks.annotate.selection import SelectionOptions, clip_measures, select_clip, select_object
    from tasks.annotate.vocab import Vocabulary
    from tasks.masks import mask_bbox

    options = SelectionOptions()
    vocabulary = Vocabulary(PHRASES, from_caption=True)
    best: dict[str, float] = {}
    for camera in CAMERAS:
        scene = make_scene(camera, num_frames=frames, height=height, width=width, seed=0)
        truth = scene.object_masks()
        detections = {0: [Detection(0, tuple(float(v) for v in mask_bbox(m[0]) or (0, 0, 1, 1)), 0.9, "horse")
                          for m in truth]}  # fmt: skip
        parts = {
            "clip_measures": lambda: select_clip(clip_measures(scene.frames), options),
            "object_selection": lambda: [select_object(m, options, score=0.9) for m in truth],
            "track_bookkeeping": lambda: track_detections(scene.frames, detections, OracleTracker(truth)),
            "vocabulary": lambda: vocabulary.for_clip(scene.caption),
        }
        for name, fn in parts.items():
            times = []
            for _ in range(repeat):
                started = time.perf_counter()
                fn()
                times.append(time.perf_counter() - started)
            best[name] = best.get(name, 0.0) + min(times) / len(CAMERAS)
    total = sum(best.values())
    return {
        "glue_ms_per_clip": total * 1000,
        "glue_fps": frames / total,
        **{f"glue_{k}_ms": v * 1000 for k, v in best.items()},
    }


# --------------------------------------------------------------------------------------------------------- models
def _bert_tokenizer(folder: Path) -> Any:
    """A BERT word-piece tokenizer of bert-base's size (30522 ids): the phrases, then filler tokens."""
    from transformers import BertTokenizer

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", *PHRASES]
    words += [f"tok{i}" for i in range(30522 - len(words))]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    return BertTokenizer(str(folder / "vocab.txt"))


def real_models(work: Path) -> dict[str, Any]:
    """Random models and processors with the architectures of the released checkpoints."""
    import transformers as tf

    from tests.tasks.annotate.tiny_models import _clip_tokenizer  # a character-level CLIP tokenizer

    swin_b = tf.SwinConfig(embed_dim=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32], window_size=12,
                           image_size=384, out_features=["stage2", "stage3", "stage4"])  # fmt: skip
    gdino = tf.GroundingDinoConfig(backbone_config=swin_b)  # bert-base text encoder, 900 queries, d_model 256
    hiera_l = {"model_type": "sam2_hiera_det_model", "hidden_size": 144, "blocks_per_stage": [2, 6, 36, 4],
               "embed_dim_per_stage": [144, 288, 576, 1152], "num_attention_heads_per_stage": [2, 4, 8, 16],
               "window_size_per_stage": [8, 4, 16, 8], "global_attention_blocks": [23, 33, 43],
               "window_positional_embedding_background_size": [7, 7]}  # fmt: skip
    sam2 = tf.Sam2VideoConfig(
        vision_config={
            "model_type": "sam2_vision_model",
            "backbone_config": hiera_l,
            "backbone_channel_list": [1152, 576, 288, 144],
        }  # fmt: skip
    )
    tokenizer, _ = _clip_tokenizer(32)
    return {
        "gdino": (tf.GroundingDinoForObjectDetection, gdino,
                  tf.GroundingDinoProcessor(image_processor=tf.GroundingDinoImageProcessor(),
                                            tokenizer=_bert_tokenizer(work / "bert"))),  # fmt: skip
        "owlv2": (tf.Owlv2ForObjectDetection, tf.Owlv2Config(),
                  tf.Owlv2Processor(image_processor=tf.Owlv2ImageProcessor(), tokenizer=_clip_tokenizer(16)[0])),
        "sam2": (tf.Sam2VideoModel, sam2, tf.Sam2VideoProcessor(image_processor=tf.Sam2ImageProcessor(),
                                                                video_processor=tf.Sam2VideoVideoProcessor())),
        "sam3": (tf.Sam3VideoModel, tf.Sam3VideoConfig(**SAM3_RANDOM),
                 tf.Sam3VideoProcessor(image_processor=tf.Sam3ImageProcessor(),
                                       video_processor=tf.Sam2VideoVideoProcessor(size={"height": 1008, "width": 1008}),
                                       tokenizer=tokenizer)),
    }  # fmt: skip


def tiny_models(work: Path) -> dict[str, Path]:
    from tests.tasks.annotate import tiny_models as tiny

    return {
        "gdino": tiny.build_grounding_dino(work / "gdino"),
        "owlv2": tiny.build_owlv2(work / "owlv2"),
        "sam2": tiny.build_sam2_video(work / "sam2"),
        "sam3": tiny.build_sam3_video(work / "sam3"),
    }


def bench_models(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import torch

    from tasks.annotate.detect import ZeroShotDetector
    from tasks.annotate.segmenters import DetectTrackSegmenter, Sam3Segmenter
    from tasks.annotate.track import Sam2VideoTracker
    from tasks.annotate.vocab import Vocabulary
    from tasks.types import Clip

    dtype = getattr(torch, args.dtype)
    vocabulary = Vocabulary(PHRASES[:3], from_caption=False)
    detector = {name: ZeroShotDetector("bench", threshold=0.0, max_detections=args.objects, device=args.device,
                                       dtype=args.dtype, batch_size=8) for name in ("gdino", "owlv2")}  # fmt: skip
    tracker = Sam2VideoTracker("bench", device=args.device, dtype=args.dtype)
    sam3 = Sam3Segmenter("bench", vocabulary, threshold=0.0, max_objects=args.objects, device=args.device,
                         dtype=args.dtype)  # fmt: skip
    if args.scale == "tiny":
        folders = tiny_models(work)
        for name in ("gdino", "owlv2"):
            detector[name].path = str(folders[name])
        tracker.path, sam3.path = str(folders["sam2"]), str(folders["sam3"])
    else:  # build on the device, inject: saving gigabytes of random weights would only measure the disk
        for name, (cls, config, processor) in real_models(work).items():
            with torch.device(args.device):
                model = cls(config).to(dtype).eval()
            target = {"gdino": detector["gdino"], "owlv2": detector["owlv2"], "sam2": tracker, "sam3": sam3}[name]
            target.model, target.processor = model, processor
            if name in detector:
                target.family = "grounding-dino" if name == "gdino" else "owl"
    segmenters = {
        "detect_track": DetectTrackSegmenter(
            detector["gdino"], tracker, vocabulary, max_objects=args.objects, keyframe_every=args.keyframe_every
        ),  # fmt: skip
        "sam3": sam3,
    }
    scenes = [make_scene(c, num_frames=args.frames, height=args.height, width=args.width, seed=0) for c in CAMERAS]
    clips = [Clip(f"clip_{i}", "src", "mem://x", 0, args.frames, 1, 8.0, scenes[i % len(scenes)].frames)
             for i in range(args.clips + 1)]  # fmt: skip
    out: dict[str, Any] = {}

    def timed(fn: Any) -> float:
        fn(clips[0])  # warm-up (kernels, caches)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        started = time.perf_counter()
        for clip in clips[1:]:
            fn(clip)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        return args.clips * args.frames / (time.perf_counter() - started)

    for name, segmenter in segmenters.items():
        out[f"{name}_fps"] = timed(lambda clip, s=segmenter: s.segment(clip))
    out["owlv2_detect_fps"] = timed(lambda clip: detector["owlv2"].detect(clip.frames, PHRASES[:3]))
    out["gdino_detect_fps"] = timed(lambda clip: detector["gdino"].detect(clip.frames, PHRASES[:3]))
    if args.device.startswith("cuda"):
        out["peak_gpu_gb"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", action="store_true", help="end with one JSON line of the figures")
    parser.add_argument("--glue-only", action="store_true", help="only the CPU glue figures (no CUDA needed)")
    parser.add_argument("--frames", type=int, default=49)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=720)
    parser.add_argument("--clips", type=int, default=3, help="timed clips per segmenter (after one warm-up)")
    parser.add_argument("--objects", type=int, default=3, help="objects tracked per clip")
    parser.add_argument("--keyframe-every", type=int, default=16, help="detect+track: detector every N frames")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--scale", default="real", choices=["real", "tiny"], help="tiny: check the script on CPU")
    parser.add_argument("--repeat", type=int, default=3, help="glue: best of N")
    args = parser.parse_args()

    figures: dict[str, Any] = {"frames": args.frames, "height": args.height, "width": args.width}
    figures.update(bench_glue(args.frames, args.height, args.width, args.repeat))
    print(f"annotation glue on the synthetic scenes, {args.frames} frames at {args.height}x{args.width} (CPU)")
    for key, value in figures.items():
        if key.startswith("glue_"):
            print(f"  {key:32s} {value:10.1f}")
    code = 0
    if not args.glue_only:
        import torch

        if args.device.startswith("cuda") and not torch.cuda.is_available():
            print("no CUDA device: the segmenter figures need one (--glue-only for the CPU part)", file=sys.stderr)
            code = 2
        else:
            import tempfile

            with tempfile.TemporaryDirectory() as work:
                models = bench_models(args, Path(work))
            figures.update(models, dtype=args.dtype, clips=args.clips, objects=args.objects, scale=args.scale,
                           device=args.device, keyframe_every=args.keyframe_every)  # fmt: skip
            print(f"segmenters ({args.scale} size, random weights, {args.dtype} on {args.device}), frames/s")
            for key, value in models.items():
                print(f"  {key:32s} {value:10.2f}")
    if args.json:
        print(json.dumps(figures))
    sys.exit(code)


if __name__ == "__main__":
    main()
