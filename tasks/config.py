"""The configuration of one factory run: one pydantic model per part, validated once, passed down whole.

``RunConfig`` is built by ``vpf run`` (its options are derived from these fields), by the ``build-pairs`` flow's
``config`` parameter and by ``prefect.yaml``. Every default and choice list of a run is written here and nowhere
else. Each step takes its part (``GeometryConfig``, ``AnnotateConfig``, ``RenderConfig``, ``ScoreConfig``); the
render flow, which may run on another machine, receives ``RenderConfig`` and ``ScoreConfig`` as JSON.

This module sits at the bottom of ``tasks/``: it imports no step and no scorer; of ``catalog/`` only the redaction rule.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tasks.accept import AcceptRule
from tasks.engines.registry import ENGINE_NAMES
from tasks.types import EditType, Geometry, ResizeMode


EngineName = Literal[ENGINE_NAMES]  # type: ignore[valid-type]  # the registry holds the one list
EffectMasksMode = Literal["auto", "all", "off"]  # side-effect-aware masks (tasks/effects.py)
EFFECT_PHRASES = ("shadow of {label}", "reflection of {label}")  # the open-vocabulary route (tasks/effect_segments.py)


def _vocab_spec(value: str | None, role: str) -> str | None:
    """``value`` when it is None or a well-formed open-vocabulary segmenter spec; else ``ValueError`` naming ``role``."""
    from tasks.annotate.specs import is_vocab_segmenter, parse_segmenter_spec

    if value is None:
        return value
    if not is_vocab_segmenter(value):
        raise ValueError(f"{value!r}: {role} needs an open-vocabulary detect+track:… or sam3:…")
    parse_segmenter_spec(value)
    return value


class GeometryConfig(BaseModel):
    """Clip geometry: the model's default is 49 frames at 8 fps, 480×720 (docs/method.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_frames: int = Field(49, ge=2, description="frames per clip")
    height: int = Field(480, ge=16, description="pixels; even (H.264)")
    width: int = Field(720, ge=16, description="pixels; even (H.264)")
    fps: float = Field(8.0, gt=0, description="frames per second of the normalised clip")
    resize_mode: ResizeMode = Field(
        "resize",
        description="resize: scale each frame to the geometry (aspect may change); crop: scale and centre-crop",
    )

    @field_validator("height", "width")
    @classmethod
    def _even(cls, value: int) -> int:
        if value % 2:
            raise ValueError(f"{value} is odd: width and height must be even (H.264)")
        return value

    def to_geometry(self) -> Geometry:
        return Geometry(self.num_frames, self.fps, self.height, self.width, self.resize_mode)


class SelectionOptions(BaseModel):
    """Thresholds of the clip and object filters (``None``: that check is off). Run option ``--select KEY=VALUE``.

    The clip filters (frame difference, motion, sharpness, brightness, aesthetic) apply by default to clips whose
    objects a segmenter makes; to rows with provided masks only when set explicitly (``model_fields_set``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # objects
    min_area: float | None = Field(0.01, ge=0, le=1, description="smallest mask area ratio on any frame")
    max_area: float | None = Field(0.90, ge=0, le=1, description="largest mask area ratio on any frame")
    max_area_change: float | None = Field(0.20, gt=0, description="largest relative area change between frames")
    max_entry_frame: int | None = Field(
        None, ge=0, description="latest clip frame an object may first appear on (0: visible on the first frame)"
    )
    min_track_iou: float | None = Field(None, ge=0, le=1, description="lowest IoU between consecutive frames")
    max_lost_frames: int | None = Field(None, ge=0, description="most empty frames after the first visible one")
    max_reappearances: int | None = Field(0, ge=0, description="most times an object may come back after a loss")
    min_side_px: int | None = Field(8, ge=0, description="smallest box side at the model's resolution, pixels")
    min_score: float | None = Field(None, ge=0, le=1, description="lowest detector score")
    # clips
    min_frame_diff: float | None = Field(
        1e-4, ge=0, le=1, description="static-clip check: least fraction of pixels changing between two frames"
    )
    min_motion: float | None = Field(None, ge=0, description="lowest mean optical-flow magnitude, px/frame")
    max_motion: float | None = Field(None, ge=0, description="highest mean optical-flow magnitude, px/frame")
    min_sharpness: float | None = Field(None, ge=0, description="lowest mean variance of the Laplacian")
    min_brightness: float | None = Field(10.0, ge=0, le=255, description="lowest mean grey level")
    max_brightness: float | None = Field(245.0, ge=0, le=255, description="highest mean grey level")
    min_aesthetic: float | None = Field(None, description="lowest aesthetic score (needs an aesthetic scorer)")

    @model_validator(mode="after")
    def _ordered(self) -> "SelectionOptions":
        if self.min_area is not None and self.max_area is not None and self.min_area > self.max_area:
            raise ValueError(f"min_area {self.min_area} > max_area {self.max_area}")
        for lo, hi in (("min_motion", "max_motion"), ("min_brightness", "max_brightness")):
            a, b = getattr(self, lo), getattr(self, hi)
            if a is not None and b is not None and a > b:
                raise ValueError(f"{lo} {a} > {hi} {b}")
        return self


class AnnotateConfig(BaseModel):
    """Annotating raw footage (tasks/annotate): the vocabulary of the open-vocabulary segmenters, captions for clips
    without one, and the selection thresholds applied to every clip and object."""

    model_config = ConfigDict(extra="forbid")

    vocab: str | None = Field(None, description="a file of noun phrases, one a line (detect+track, sam3 labels)")
    vocab_from_caption: bool = Field(True, description="add the nouns of each clip's caption to its vocabulary")
    tagger: str | None = Field(
        None, description="a vision-language model listing each clip's objects: transformers:PATH or openai:URL#MODEL"
    )
    captioner: str | None = Field(
        None, description="a vision-language model captioning clips without a caption: transformers:PATH or openai:…"
    )
    select: SelectionOptions = Field(
        default_factory=SelectionOptions, description="clip and object selection thresholds (None turns one off)"
    )
    aesthetic_clip: str | None = Field(None, description="local CLIP folder of the aesthetic score")
    aesthetic_head: str | None = Field(None, description="the aesthetic head (torch state dict of Linear layers)")

    @field_validator("tagger", "captioner")
    @classmethod
    def _vlm_spec(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("transformers:", "openai:")):
            raise ValueError(f"{value!r}: expected transformers:PATH or openai:URL#MODEL")
        return value

    @model_validator(mode="after")
    def _aesthetic_pair(self) -> "AnnotateConfig":
        if (self.aesthetic_clip is None) != (self.aesthetic_head is None):
            raise ValueError("aesthetic_clip and aesthetic_head go together (a CLIP folder and its aesthetic head)")
        if self.select.min_aesthetic is not None and self.aesthetic_clip is None:
            raise ValueError("select.min_aesthetic needs aesthetic_clip and aesthetic_head")
        return self


class RenderConfig(BaseModel):
    """How each job is rendered: the engine, its options, the seed, the mask (dilation, side effects), the render
    generation and the GPU slot."""

    model_config = ConfigDict(extra="forbid")

    engine: EngineName = Field("auto", description="auto: VideoPainter with weights and CUDA, else the CPU engine")
    engine_options: dict[str, Any] = Field(
        default_factory=dict,
        description="keyword arguments of the engine, e.g. base=/models/CogVideoX-5b-I2V branch=… id_lora=… "
        "(VideoPainter; also $VPF_VIDEOPAINTER_BASE/_BRANCH/_ID_LORA/_FLUX_FILL) or seconds=5 (sleep)",
    )
    seed: int = Field(0, description="seed of stochastic engines (hashed into render ids) and of proposers")
    dilation_radius: int | None = Field(
        None,
        ge=0,
        description="mask dilation before inpainting, a radius in pixels (square kernel of side 2r+1); "
        "default: 16 px at 720 px wide, in proportion",
    )
    effect_masks: EffectMasksMode = Field(
        "auto",
        description="auto: grow each removal's mask to the object's shadow or reflection before dilation, found "
        "without weights (tasks/effects.py: against a median background on still cameras, against local views on "
        "moving ones; docs/effects.md); all: the same (kept for recorded runs); off: the object only",
    )
    effect_segmenter: str | None = Field(
        None,
        description="open-vocabulary segmenter (detect+track:… or sam3:…) asked for each labelled removal's side "
        "effects by name (--effect-phrases), grown into its mask with the weight-free finder's unless effect_masks "
        "is off (tasks/effect_segments.py), loaded once per run or render batch; default: the run's --segmenter "
        "when it is one of these (null turns it off)",
    )
    effect_phrases: list[str] = Field(
        default_factory=lambda: list(EFFECT_PHRASES),
        min_length=1,
        description="what effect_segmenter is asked for, templates with {label} (the object's name)",
    )
    gpu_slots: int = Field(1, ge=1, description="slots of the per-worker limit gpu:<worker id> when it is created")
    rerender: bool = Field(
        False,
        description="render every job again even when its pairs exist: a new generation named after the run "
        "(part of the render ids, recorded in renders.generation); earlier generations stay in the catalog. New "
        "weights or engine options render again without it",
    )

    def generation(self, run_id: str | None) -> str | None:
        """The render generation of a run: its ``run_id`` with ``rerender``, else None (renders are reused)."""
        if not self.rerender:
            return None
        if not run_id:
            raise ValueError("rerender: a new render generation is named after the run; run_id is missing")
        return run_id

    @field_validator("effect_segmenter")
    @classmethod
    def _effect_spec(cls, value: str | None) -> str | None:
        return _vocab_spec(value, "the side-effect segmenter")

    @field_validator("effect_phrases")
    @classmethod
    def _effect_templates(cls, value: list[str]) -> list[str]:
        for template in value:
            try:
                filled = template.format(label="x")
            except (KeyError, IndexError, ValueError):
                raise ValueError(f"{template!r}: a phrase template may name only {{label}}") from None
            if "{label}" not in template or not filled.strip():
                raise ValueError(f"{template!r}: a phrase template must contain {{label}} (the object's name)")
        return value


class ScoreConfig(BaseModel):
    """How each render is scored and decided: the accept rule, the optional weighted checks and judge, previews."""

    model_config = ConfigDict(extra="forbid")

    accept_rule: AcceptRule = Field(
        default_factory=AcceptRule, description="thresholds a pair must meet (min_judge_* use the judge)"
    )
    accept_file: str | None = Field(
        None,
        exclude=True,  # read once, where the configuration is built: the rule it gives is in accept_rule
        description="accept-rule file, JSON or YAML of accept-rule fields (vpf gate calibrate writes one); --accept "
        "KEY=VALUE applies on top",
    )
    judge: str | None = Field(
        None, description="optional pair judge: openai:URL#MODEL or transformers:PATH of a vision-language model"
    )
    clip_weights: str | None = Field(
        None,
        description="local CLIP folder (transformers): the quality gate's CLIP label check, loaded once per batch",
    )
    reseg_segmenter: str | None = Field(
        None,
        description="open-vocabulary segmenter (detect+track:… or sam3:…) that looks for each removed object's label "
        "in the stored source and edited clip: the gate's reseg_iou_src/reseg_iou_tgt check, loaded once per batch; "
        "default: the run's --segmenter when it is one of these (null turns the check off)",
    )
    previews: bool = Field(True, description="store a side-by-side preview mp4 and a contact sheet per pair")
    workers: int | None = Field(
        None,
        ge=0,
        description="threads that store, score, judge and record each render while the next one renders "
        "(None: one per core; 0: one job after another, no overlap)",
    )

    def threads(self) -> int:
        """``workers``, or one thread per core when unset."""
        import os

        return self.workers if self.workers is not None else max(1, os.cpu_count() or 1)

    @field_validator("accept_rule", mode="before")
    @classmethod
    def _known_rule_keys(cls, value: Any) -> Any:
        if isinstance(value, dict):
            unknown = set(value) - {f.name for f in dataclasses.fields(AcceptRule)}
            if unknown:
                raise ValueError(f"unknown accept-rule key(s) {sorted(unknown)}")
        return value

    @field_validator("reseg_segmenter")
    @classmethod
    def _reseg_spec(cls, value: str | None) -> str | None:
        return _vocab_spec(value, "the re-segmentation check")

    @field_validator("judge")
    @classmethod
    def _judge_spec(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("transformers:", "openai:")):
            raise ValueError(f"{value!r}: expected openai:URL#MODEL or transformers:PATH")
        return value

    @field_validator("accept_file")
    @classmethod
    def _accept_file_readable(cls, value: str | None) -> str | None:
        from tasks.accept import load_accept_rule_fields

        if value is not None:
            load_accept_rule_fields(value)  # AcceptRuleFileError (a ValueError) names the file and the problem
        return value

    @model_validator(mode="before")
    @classmethod
    def _rule_from_file(cls, data: Any) -> Any:
        """``accept_file``'s fields under the ``accept_rule`` given: a mapping's keys (what ``--accept`` set), or a
        rule's fields that differ from the defaults. A file that cannot be read is left to ``accept_file``'s own
        validator, which names it."""
        from tasks.accept import AcceptRuleFileError, load_accept_rule_fields

        if not isinstance(data, dict) or data.get("accept_file") is None:
            return data
        given = data.get("accept_rule") or {}
        if isinstance(given, AcceptRule):
            default = AcceptRule()
            given = {
                f.name: getattr(given, f.name)
                for f in dataclasses.fields(AcceptRule)
                if getattr(given, f.name) != getattr(default, f.name)
            }
        if not isinstance(given, dict):
            return data  # not a rule: accept_rule's validation says so
        try:
            from_file = load_accept_rule_fields(str(data["accept_file"]))
        except AcceptRuleFileError:
            return data
        return {**data, "accept_rule": {**from_file, **given}}


class RunConfig(BaseModel):
    """Everything one ``build-pairs`` run needs (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    # input
    source: str = Field(description="a folder, glob, manifest (CSV/JSONL/Parquet) or VPData CSV; any fsspec URL")
    limit: int | None = Field(None, ge=1, description="process only the first N items")
    roots: list[str] | None = Field(None, description="allowed roots for source paths (anything outside fails)")
    # storage
    catalog: str | None = Field(
        None, description="catalog root URL (None: $VPF_CATALOG on the machine that runs the flow, else ./vpf-data)"
    )
    storage_options: dict[str, Any] | None = Field(
        None, description="fsspec options of the sources and the catalog; never recorded in the runs table"
    )
    # clips and objects
    geometry: GeometryConfig = Field(default_factory=GeometryConfig)
    segmenter: str = Field(
        "provided",
        description="provided (masks from the manifest or next to the videos) | sam:CHECKPOINT[#model_type=vit_h&auto=1] "
        "(segment-anything) | detect+track:DETECTOR#tracker=sam2:PATH[&threshold=0.3&keyframe_every=8] (Grounding "
        "DINO/OWLv2 + SAM2 video) | sam3:PATH[#threshold=0.5] (SAM3 video); paths or URLs. The last two also "
        "re-segment each render for the quality gate (--reseg-segmenter to choose another, "
        "--set score.reseg_segmenter=null: off) and find removals' shadows and reflections by name "
        "(--effect-segmenter, --set render.effect_segmenter=null: off)",
    )
    annotate: AnnotateConfig = Field(default_factory=AnnotateConfig)
    # instructions
    proposer: str = Field("template", description="template, transformers:PATH or openai:URL")
    edit_types: list[EditType] = Field(
        default_factory=lambda: ["remove", "add"],
        min_length=1,
        description="instructions to propose per object; add pairs come from removal renders",
    )
    # render, score
    render: RenderConfig = Field(default_factory=RenderConfig)
    score: ScoreConfig = Field(default_factory=ScoreConfig)
    # batching and placement
    batch_size: int = Field(16, ge=1, description="items per ingest/propose task and jobs per render batch")
    ingest_in_flight: int | None = Field(
        None,
        ge=1,
        description="batches ingested ahead on the flow's task runner (the worker count with Dask/Ray); default 2 "
        "when no model annotates (provided masks), else 1 (threads would take turns on one model)",
    )
    render_deployment: str | None = Field(
        None, description="hand render batches to this deployment (e.g. render/render) instead of rendering here"
    )
    render_in_flight: int = Field(
        4,
        ge=1,
        description="render batches handed to render_deployment at once (the dispatch pool: one waiting thread each)",
    )
    # outputs
    gallery: bool = Field(True, description="build a static gallery of the run's pairs (local catalogs)")
    max_failure_ratio: float | None = Field(
        None,
        ge=0,
        le=1,
        description="mark the run failed when its failures outnumber this share of its items (None: never)",
    )

    def ingest_ahead(self) -> int:
        """``ingest_in_flight``, or its default: 2 batches when no model annotates (provided masks, no captioner or
        aesthetic score), else 1 (ingest threads would share one model)."""
        if self.ingest_in_flight is not None:
            return self.ingest_in_flight
        a = self.annotate
        models = self.segmenter != "provided" or a.captioner or a.tagger or a.aesthetic_clip
        return 1 if models else 2

    @field_validator("proposer")
    @classmethod
    def _proposer_spec(cls, value: str) -> str:
        if not (value == "template" or value.startswith(("transformers:", "openai:"))):
            raise ValueError(f"{value!r}: expected template, transformers:PATH or openai:URL")
        return value

    @field_validator("segmenter")
    @classmethod
    def _segmenter_spec(cls, value: str) -> str:
        from tasks.annotate.specs import is_vocab_segmenter, parse_sam_spec, parse_segmenter_spec

        if is_vocab_segmenter(value):
            parse_segmenter_spec(value)
        elif value != "provided":
            parse_sam_spec(value)  # imported with the two above
        return value

    @model_validator(mode="after")
    def _the_run_segmenter_by_default(self) -> "RunConfig":
        """The gate re-segments (``score.reseg_segmenter``) and side effects are asked by name
        (``render.effect_segmenter``) with the run's own open-vocabulary segmenter, unless that field was set (to
        another spec, or to None: off)."""
        from tasks.annotate.specs import is_vocab_segmenter

        if is_vocab_segmenter(self.segmenter):
            for part, field in ((self.score, "reseg_segmenter"), (self.render, "effect_segmenter")):
                if field not in part.model_fields_set:
                    setattr(part, field, self.segmenter)
        return self

    def recorded(self) -> dict[str, Any]:
        """The settings as recorded in ``runs.parameters_json`` and shown to Prefect: no storage options (they may
        hold credentials) and every credential in the other settings redacted (``catalog.redact.redact_value``: a key
        in a model URL, a token parameter, an ``engine_options`` entry named like a secret)."""
        from catalog.redact import redact_value  # the one redaction rule; a standard-library module of catalog/

        return redact_value(self.model_dump(mode="json", exclude={"storage_options"}))
