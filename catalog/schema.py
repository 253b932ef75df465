"""The catalog's tables: one explicit pyarrow schema per table, defined once, imported by writers and readers.

Every table has an id column (``<table singular>_id``), a ``created_at`` timestamp and the ``run_id`` that wrote the
row. Views keep the latest row per id, so rewriting a row with the same id replaces it instead of duplicating it.
Media columns (``*_uri``) hold catalog-relative paths of content-addressed files (``media/<aa>/<sha256>.<ext>``).

Bump ``SCHEMA_VERSION`` whenever a column is added, removed or changes type; it is written into every fragment's
Parquet metadata (``vpf.schema_version``). Readers union fragments by column name, so adding a nullable column is
backwards compatible.
"""

from __future__ import annotations

import pyarrow as pa


# 2: objects.dilation_px (a kernel side) became dilation_radius; 3: sources.license, attribution;
# 4: objects.caption, objects.row_key, renders.generation, clips.plan_id, clips.plan_clips;
# 5: clips/objects annotation and selection columns; 6: the pair-quality gate's columns replace pairs.lpips /
# clip_sim / clip_sim_masked; 7: stage_timings; 8: pairs.reseg_iou_src, reseg_iou_tgt (the gate's re-segmentation check);
# 9: runs.heartbeat_at, runs.heartbeat_s (a running run's sign of life);
# 10: reviews (people's verdicts on pairs), decisions (pairs re-decided under another accept rule); objects.prompt_frame,
# first_frame (objects that enter the clip); renders.effect_area, effect_source (effect-aware masks); pairs.effect_residual,
# object_ring_colour_gap, object_texture_ratio, bad_frame_share (the gate's effect, object-pixel and per-frame checks)
SCHEMA_VERSION = 10

EDIT_TYPES = ("remove", "add", "replace", "attribute")
DECISIONS = ("accepted", "rejected")

_TS = pa.timestamp("us", tz="UTC")


def _f(name: str, type_: pa.DataType, required: bool = False) -> pa.Field:
    return pa.field(name, type_, nullable=not required)


SOURCES = pa.schema(
    [
        _f("source_id", pa.string(), True),
        _f("uri", pa.string(), True),
        _f("size_bytes", pa.int64()),
        _f("codec", pa.string()),
        _f("width", pa.int32()),
        _f("height", pa.int32()),
        _f("fps", pa.float64()),
        _f("num_frames", pa.int64()),
        _f("duration_s", pa.float64()),
        _f("rotation", pa.int32()),
        _f("manifest_uri", pa.string()),
        _f("caption", pa.string()),
        _f("license", pa.string()),  # from the manifest, e.g. "CC-BY-4.0"; null = unknown
        _f("attribution", pa.string()),  # from the manifest: who to credit, as the licence asks
        _f("created_at", _TS, True),
        _f("run_id", pa.string()),
    ]
)

CLIPS = pa.schema(
    [
        _f("clip_id", pa.string(), True),
        _f("source_id", pa.string(), True),
        _f("start_frame", pa.int64(), True),  # native-fps frame index, inclusive
        _f("end_frame", pa.int64(), True),  # native-fps frame index, exclusive
        _f("frame_stride", pa.int32(), True),
        _f("num_frames", pa.int32(), True),  # frames in the normalised clip
        _f("fps", pa.float64(), True),  # fps of the normalised clip
        _f("width", pa.int32(), True),
        _f("height", pa.int32(), True),
        _f("resize_mode", pa.string()),  # "resize" | "crop"
        _f("scene_index", pa.int32()),
        _f("caption", pa.string()),
        _f("video_uri", pa.string(), True),  # normalised clip, H.264 mp4
        _f("plan_id", pa.string()),  # ids.make_id("plan", …): source, frame range, geometry and scene settings
        _f("plan_clips", pa.int32()),  # how many clips that plan cuts: all present = a rerun skips scene detection
        _f("caption_model", pa.string()),  # the vision-language model that wrote the caption (None: from the source)
        _f("motion", pa.float64()),  # mean optical-flow magnitude, px/frame at the clip's resolution
        _f("frame_diff", pa.float64()),  # largest share of pixels changing by > 10 grey levels between frames (static)
        _f("sharpness", pa.float64()),  # mean variance of the Laplacian (blur check)
        _f("brightness", pa.float64()),  # mean grey level, 0-255
        _f("aesthetic", pa.float64()),  # aesthetic score, only with a CLIP + aesthetic head configured
        _f("selection", pa.string()),  # "ok" | "rejected" (clip filters of tasks/annotate/selection.py)
        _f("selection_reasons", pa.list_(pa.string())),  # every reason the clip was rejected
        _f("created_at", _TS, True),
        _f("run_id", pa.string()),
    ]
)

OBJECTS = pa.schema(
    [
        _f("object_id", pa.string(), True),
        _f("clip_id", pa.string(), True),
        _f("label", pa.string()),
        _f("mask_source", pa.string(), True),  # "provided" | "sam" | "sam-auto" | "detect+track" | "sam3"
        _f("mask_id", pa.int64()),  # label of a VPData label map, when provided that way
        _f("mask_uri", pa.string(), True),  # (frames, height, width) bool masks, npz
        _f("dilation_radius", pa.int32()),  # pixels; 0: the run's default
        _f("area_ratio_mean", pa.float64()),
        _f("area_ratio_min", pa.float64()),
        _f("area_ratio_max", pa.float64()),
        _f("max_area_change", pa.float64()),
        _f("bbox", pa.list_(pa.int32())),  # x0, y0, x1, y1 on the first frame
        _f("qa_status", pa.string(), True),  # "ok" | "rejected"
        _f("qa_reason", pa.string()),  # the first of selection_reasons
        _f("caption", pa.string()),  # the caption of the manifest row that asked for this object
        _f("row_key", pa.string()),  # ids.row_key of that row: what it asked (caption, label, box, mask id, segmenter)
        _f("selection_reasons", pa.list_(pa.string())),  # every reason the object was rejected (mask QA, track...)
        _f("score", pa.float64()),  # the detector's score (detect+track, sam3)
        _f("vocab_source", pa.string()),  # where the label's phrase came from: "file" | "caption" | "vlm"
        _f("track_iou_min", pa.float64()),  # lowest IoU between consecutive frames showing the object
        _f("track_lost_frames", pa.int32()),  # empty frames after the first visible one
        _f("track_reappearances", pa.int32()),  # times the object came back after being lost
        _f("min_side_px", pa.int32()),  # smallest box side over the visible frames, clip pixels
        _f("prompt_frame", pa.int32()),  # clip frame whose detection started the track (detect+track, sam3)
        _f("first_frame", pa.int32()),  # first clip frame showing the object: frames before it are absent (empty)
        _f("created_at", _TS, True),
        _f("run_id", pa.string()),
    ]
)

INSTRUCTIONS = pa.schema(
    [
        _f("instruction_id", pa.string(), True),
        _f("object_id", pa.string(), True),
        _f("clip_id", pa.string(), True),
        _f("edit_type", pa.string(), True),
        _f("instruction", pa.string(), True),  # short imperative
        _f("instruction_long", pa.string()),  # long, specific
        _f("source_caption", pa.string()),
        _f("target_caption", pa.string()),  # clip caption rewritten for the edit (the inpainting prompt)
        _f("region_caption", pa.string()),  # what fills the region, <= 20 words
        _f("label", pa.string()),
        _f("proposer", pa.string(), True),
        _f("prompt_version", pa.string()),
        _f("created_at", _TS, True),
        _f("run_id", pa.string()),
    ]
)

RENDERS = pa.schema(
    [
        _f("render_id", pa.string(), True),
        _f("instruction_id", pa.string(), True),
        _f("clip_id", pa.string(), True),
        _f("object_id", pa.string(), True),
        _f("engine", pa.string(), True),
        _f("engine_version", pa.string(), True),
        _f("params_json", pa.string()),
        _f("seed", pa.int64()),
        _f("generation", pa.string()),  # set by `vpf run --rerender`: a deliberate new render (part of the id)
        _f("video_uri", pa.string(), True),  # the edited clip, H.264 mp4
        _f("mask_uri", pa.string()),  # the dilated mask actually inpainted
        _f("effect_area", pa.float64()),  # share of the clip's pixels of the object's side effects
        _f("effect_source", pa.string()),  # how: tasks/effects.py's source, "segmenter[+…]" or "off"
        _f("device", pa.string()),
        _f("elapsed_s", pa.float64()),
        _f("created_at", _TS, True),
        _f("run_id", pa.string()),
    ]
)

PAIRS = pa.schema(
    [
        _f("pair_id", pa.string(), True),
        _f("render_id", pa.string(), True),
        _f("instruction_id", pa.string(), True),
        _f("clip_id", pa.string(), True),
        _f("object_id", pa.string(), True),
        _f("edit_type", pa.string(), True),  # direction of the pair: remove | add | replace | attribute
        _f("instruction", pa.string(), True),
        _f("instruction_long", pa.string()),
        _f("src_video_uri", pa.string(), True),
        _f("tgt_video_uri", pa.string(), True),
        _f("mask_uri", pa.string(), True),
        _f("preview_uri", pa.string()),  # side-by-side mp4
        _f("contact_sheet_uri", pa.string()),  # png
        _f("engine", pa.string(), True),
        # quality gate (tasks/gate.py), measured on the stored, decoded source and target clips.
        # background fidelity: target vs source outside the inpainted mask (encoding loss, engines that move pixels)
        _f("psnr_bg", pa.float64()),
        _f("ssim_bg", pa.float64()),
        _f("mse_bg", pa.float64()),
        _f("mae_bg", pa.float64()),
        # removal checks, no weights: each a median over frames
        _f("hole_change", pa.float64()),  # change on the object / the object's own texture
        _f("object_match", pa.float64()),  # NCC of the source object's texture with the target there
        _f("ring_colour_gap", pa.float64()),  # hole vs ring mean colour, in ring colour spreads
        _f("ring_texture_ratio", pa.float64()),  # hole texture energy / ring texture energy
        _f("seam_error", pa.float64()),  # target vs source on the background band inside the mask edge
        _f("flicker_ratio", pa.float64()),  # motion-compensated change in the hole / in the background
        _f("motion_gap", pa.float64()),  # hole vs ring median flow, full-resolution px per frame
        _f("temporal_warp_error", pa.float64()),  # the hole's warp residual, [0, 1] scale
        _f("effect_residual", pa.float64()),  # object-correlated change left around the object, grey levels
        _f("object_ring_colour_gap", pa.float64()),  # ring_colour_gap on the object's own pixels
        _f("object_texture_ratio", pa.float64()),  # fill texture on the object / what other frames show there
        _f("bad_frame_share", pa.float64()),  # share of frames whose fill jumps or shows the object again
        _f("mask_area_ratio", pa.float64()),
        _f("object_frames_ratio", pa.float64()),  # share of frames where the object is visible
        # removal checks with weights (null unless CLIP weights / a re-segmentation segmenter are configured)
        _f("clip_label_src", pa.float64()),  # CLIP similarity of the label with the hole region, before
        _f("clip_label_tgt", pa.float64()),  # ... and after
        _f("reseg_iou_src", pa.float64()),  # the label re-segmented in the source: mean best IoU with the object
        _f("reseg_iou_tgt", pa.float64()),  # ... and in the target (near 0 after a removal)
        _f("quality_flags", pa.list_(pa.string())),
        _f("metrics_json", pa.string()),
        _f("judge_compliance", pa.int32()),
        _f("judge_consistency", pa.int32()),
        _f("judge_quality", pa.int32()),
        _f("judge_reason", pa.string()),
        _f("judge_model", pa.string()),
        _f("decision", pa.string(), True),  # accepted | rejected
        _f("decision_reason", pa.string()),
        _f("created_at", _TS, True),
        _f("run_id", pa.string()),
    ]
)

RUNS = pa.schema(
    [
        _f("run_id", pa.string(), True),
        _f("flow_run_id", pa.string()),
        _f("flow_name", pa.string()),
        _f("source", pa.string()),
        # running | completed | completed_with_failures | failed; readers show a running run whose heartbeat stopped
        # as interrupted (catalog.maintenance.run_state), the rows stay as written
        _f("status", pa.string(), True),
        _f("parameters_json", pa.string()),
        _f("counts_json", pa.string()),
        _f("n_clips", pa.int64()),
        _f("n_pairs", pa.int64()),
        _f("n_failures", pa.int64()),
        _f("started_at", _TS),
        _f("finished_at", _TS),
        _f("heartbeat_at", _TS),  # a running run writes its row again every heartbeat_s seconds: its last sign of life
        _f("heartbeat_s", pa.float64()),  # the heartbeat interval of the run
        _f("vpf_version", pa.string()),
        _f("host", pa.string()),
        _f("created_at", _TS, True),
    ]
)

FAILURES = pa.schema(
    [
        _f("failure_id", pa.string(), True),  # hash of stage + item + reason: a rerun does not duplicate it
        _f("stage", pa.string(), True),  # ingest | segment | propose | render | score | record | ...
        _f("item_kind", pa.string()),  # source | clip | object | instruction | render | pair
        _f("item_id", pa.string()),  # the id (or the uri) of the item that failed
        _f("reason", pa.string(), True),  # short machine-readable code, e.g. "truncated_video"
        _f("error_type", pa.string()),  # exception class name
        _f("message", pa.string()),  # human-readable, names the input and the problem
        _f("created_at", _TS, True),
        _f("run_id", pa.string()),
    ]
)

STAGE_TIMINGS = pa.schema(
    [
        _f("timing_id", pa.string(), True),  # hash of run + batch + stage + worker: a rerun replaces, never duplicates
        _f("run_id", pa.string()),
        _f("batch", pa.string(), True),  # the batch's label, e.g. "2/5" (ingest) or "2/5.1" (render)
        # ingest | annotate | propose | render | score | encode | record (busy time, each stage counted once)
        _f("stage", pa.string(), True),
        _f("items", pa.int64()),  # items the stage handled in the batch (sources, clips, jobs, renders, rows)
        _f("wall_s", pa.float64(), True),  # busy seconds, summed over the threads that ran the stage
        _f("cpu_s", pa.float64()),  # CPU seconds of those threads over the same spans
        _f("worker", pa.string()),  # the machine or worker id that ran it
        _f("started_at", _TS),  # first span of the stage in the batch
        _f("finished_at", _TS),  # end of its last span
        _f("created_at", _TS, True),
    ]
)

REVIEW_VERDICTS = ("accepted", "rejected", "withdrawn")  # withdrawn: an undo, the pair counts as not reviewed
REVIEW_REASONS = ("object_left", "effect_left", "artefact", "flicker", "wrong_object", "bad_instruction", "other")

REVIEWS = pa.schema(
    [
        _f("review_id", pa.string(), True),  # hash of pair + reviewer + time: append-only, one row per judgement
        _f("pair_id", pa.string(), True),
        _f("reviewer", pa.string(), True),
        _f("verdict", pa.string(), True),  # one of REVIEW_VERDICTS; the latest row of a pair wins
        _f("reason", pa.string()),  # one of REVIEW_REASONS, for rejections
        _f("note", pa.string()),
        _f("created_at", _TS, True),
        _f("run_id", pa.string()),
    ]
)

DECISIONS_TABLE = pa.schema(
    [
        _f("decision_id", pa.string(), True),  # hash of pair + rule: rescoring twice under one rule adds nothing
        _f("pair_id", pa.string(), True),
        _f("decision", pa.string(), True),  # accepted | rejected
        _f("decision_reason", pa.string()),
        _f("rule_json", pa.string(), True),  # the accept rule that decided, as JSON
        _f("created_at", _TS, True),
        _f("run_id", pa.string()),
    ]
)

TABLES: dict[str, pa.Schema] = {
    "sources": SOURCES,
    "clips": CLIPS,
    "objects": OBJECTS,
    "instructions": INSTRUCTIONS,
    "renders": RENDERS,
    "pairs": PAIRS,
    "runs": RUNS,
    "failures": FAILURES,
    "stage_timings": STAGE_TIMINGS,
    "reviews": REVIEWS,
    "decisions": DECISIONS_TABLE,
}

ID_COLUMNS: dict[str, str] = {
    "sources": "source_id",
    "clips": "clip_id",
    "objects": "object_id",
    "instructions": "instruction_id",
    "renders": "render_id",
    "pairs": "pair_id",
    "runs": "run_id",
    "failures": "failure_id",
    "stage_timings": "timing_id",
    "reviews": "review_id",
    "decisions": "decision_id",
}
