"""The configuration of one factory run: one pydantic model, validated once, passed down whole.

``RunConfig`` is built by ``vpf run`` (from its options), by the ``build-pairs`` flow's single ``config`` parameter
(the Prefect UI renders its schema) and by ``prefect.yaml`` (``parameters: {config: {...}}``). Every stage reads the
settings it needs from it; nothing re-validates them downstream. The render flow, which may run on another machine,
receives only its part, ``RenderConfig``, as JSON.

Adding a setting: add a field here (with its description and bounds), read it where it is used, test it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from catalog.store import default_root
from tasks.annotate.selection import SelectionOptions
from tasks.gate import AcceptRule
from tasks.types import EditType, Geometry, ResizeMode


EngineName = Literal["auto", "propagation", "videopainter", "null", "cv2-inpaint", "sleep"]

SAM_SPEC_OPTIONS = {"model_type": str, "auto": bool, "max_auto_objects": int, "min_iou": float, "labels": list}


def parse_sam_spec(spec: str) -> dict[str, Any]:
    """``sam:CHECKPOINT[#key=value&…]`` → ``SamSegmenter`` keyword arguments.

    Options: ``model_type`` (vit_b | vit_l | vit_h; default: read from the released file names
    ``sam_vit_h_4b8939.pth`` etc., else vit_b), ``auto`` (1/0: automatic masks for clips without a box),
    ``max_auto_objects``, ``min_iou`` (continuity check), ``labels`` (comma-separated names for automatic objects).
    Example: ``sam:s3://models/sam_vit_h_4b8939.pth#auto=1&labels=car,person``.
    """
    if not (spec.startswith("sam:") and len(spec) > 4):
        raise ValueError(f"segmenter {spec!r}: expected 'provided' or 'sam:CHECKPOINT[#model_type=…&auto=1]'")
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


class GeometryConfig(BaseModel):
    """Clip geometry: the model's default is 49 frames at 8 fps, 480×720 (docs/method.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_frames: int = Field(49, ge=2, description="frames per clip")
    height: int = Field(480, ge=16, description="pixels; even (H.264)")
    width: int = Field(720, ge=16, description="pixels; even (H.264)")
    fps: float = Field(8.0, gt=0, description="frames per second of the normalised clip")
    resize_mode: ResizeMode = "resize"

    @field_validator("height", "width")
    @classmethod
    def _even(cls, value: int) -> int:
        if value % 2:
            raise ValueError(f"{value} is odd: width and height must be even (H.264)")
        return value

    def to_geometry(self) -> Geometry:
        return Geometry(self.num_frames, self.fps, self.height, self.width, self.resize_mode)


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
    """The render flow's part of a run: engine, seed, scoring and previews. JSON, so it travels to GPU workers."""

    model_config = ConfigDict(extra="forbid")

    engine: EngineName = Field("auto", description="auto: VideoPainter with weights and CUDA, else the CPU engine")
    engine_options: dict[str, Any] = Field(
        default_factory=dict, description="keyword arguments of the engine, e.g. {'checkpoint': 's3://…'}"
    )
    seed: int = Field(0, description="seed of stochastic engines (hashed into render ids) and of proposers")
    accept_rule: AcceptRule = Field(
        default_factory=AcceptRule, description="thresholds a pair must meet (min_judge_* use the judge)"
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
    gpu_slots: int = Field(1, ge=1, description="slots of the per-worker limit gpu:<worker id> when it is created")
    score_workers: int | None = Field(
        None,
        ge=0,
        description="threads that store, score, judge and record each render while the next one renders "
        "(None: one per core; 0: one job after another, no overlap)",
    )
    rerender: bool = Field(
        False,
        description="render every job again even when its pairs exist: a new generation named after the run "
        "(part of the render ids, recorded in renders.generation); earlier generations stay in the catalog",
    )

    def generation(self, run_id: str | None) -> str | None:
        """The render generation of a run: its ``run_id`` with ``rerender``, else None (renders are reused)."""
        if not self.rerender:
            return None
        if not run_id:
            raise ValueError("rerender: a new render generation is named after the run; run_id is missing")
        return run_id

    def finish_workers(self) -> int:
        """``score_workers``, or one thread per core when unset."""
        import os

        return self.score_workers if self.score_workers is not None else max(1, os.cpu_count() or 1)

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
        from tasks.annotate.specs import is_vocab_segmenter, parse_segmenter_spec

        if value is None:
            return value
        if not is_vocab_segmenter(value):
            raise ValueError(f"{value!r}: the re-segmentation check needs an open-vocabulary detect+track:… or sam3:…")
        parse_segmenter_spec(value)
        return value

    @field_validator("judge")
    @classmethod
    def _judge_spec(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("transformers:", "openai:")):
            raise ValueError(f"{value!r}: expected openai:URL#MODEL or transformers:PATH")
        return value


class RunConfig(BaseModel):
    """Everything one ``build-pairs`` run needs (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    # input
    source: str = Field(description="a folder, glob, manifest (CSV/JSONL/Parquet) or VPData CSV; any fsspec URL")
    limit: int | None = Field(None, ge=1, description="process only the first N items")
    roots: list[str] | None = Field(None, description="allowed roots for source paths (anything outside fails)")
    # storage
    catalog: str = Field(default_factory=default_root, description="catalog root URL ($VPF_CATALOG, ./vpf-data)")
    storage_options: dict[str, Any] | None = Field(
        None, description="fsspec options of the sources and the catalog; never recorded in the runs table"
    )
    # clips and objects
    geometry: GeometryConfig = Field(default_factory=GeometryConfig)
    segmenter: str = Field(
        "provided",
        description="provided (masks from the manifest or next to the videos), sam:CHECKPOINT[#options], "
        "detect+track:DETECTOR#tracker=sam2:PATH[&options] or sam3:PATH[#options]",
    )
    annotate: AnnotateConfig = Field(default_factory=AnnotateConfig)
    dilation_radius: int | None = Field(
        None,
        ge=0,
        description="mask dilation before inpainting, a radius in pixels (square kernel of side 2r+1); "
        "default: 16 px at 720 px wide, in proportion",
    )
    # instructions
    proposer: str = Field("template", description="template, transformers:PATH or openai:URL")
    edit_types: list[EditType] = Field(
        default_factory=lambda: ["remove", "add"],
        min_length=1,
        description="instructions to propose per object; add pairs come from removal renders",
    )
    # render, score
    render: RenderConfig = Field(default_factory=RenderConfig)
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
        from tasks.annotate.specs import is_vocab_segmenter, parse_segmenter_spec

        if is_vocab_segmenter(value):
            parse_segmenter_spec(value)
        elif value != "provided":
            parse_sam_spec(value)
        return value

    @model_validator(mode="after")
    def _reseg_with_the_run_segmenter(self) -> "RunConfig":
        """The gate re-segments with the run's own open-vocabulary segmenter unless ``render.reseg_segmenter`` was
        set (to another spec, or to None: off)."""
        from tasks.annotate.specs import is_vocab_segmenter

        if "reseg_segmenter" not in self.render.model_fields_set and is_vocab_segmenter(self.segmenter):
            self.render.reseg_segmenter = self.segmenter
        return self

    def recorded(self) -> dict[str, Any]:
        """The settings as recorded in ``runs.parameters_json`` (no storage options: they may hold credentials)."""
        return self.model_dump(mode="json", exclude={"storage_options"})
