"""Ingest: probe, split, normalise, annotate and select a batch of items; every clip's rows recorded as it is done."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from catalog.store import Catalog
from tasks.config import GeometryConfig, RunConfig
from tasks.contracts import Segmenter
from tasks.steps.outputs import StepOutput
from tasks.timings import StageTimer, use_timer
from tasks.types import SourceItem


@dataclass
class Annotators:
    """The models a run's ingest uses: the ``segmenter`` for items without masks and the ``annotation``
    (``tasks.ingest.Annotation``: captioner, selection thresholds, aesthetic scorer). Loaded in their ``setup()``."""

    segmenter: Segmenter
    annotation: Any


def make_annotators(config: RunConfig, catalog: Catalog) -> Annotators:
    """The annotators of ``config.segmenter`` and ``config.annotate``; a vision-language model named both captioner
    and tagger is built once; its answers are cached under the catalog root. With ``sam:``, the ``--vocab`` file's
    phrases label the automatic objects in order (its ``#labels=`` option, when given, wins)."""
    from tasks.annotate.caption import make_vlm
    from tasks.annotate.selection import AestheticScorer
    from tasks.annotate.specs import (
        build_segmenter,
        is_vocab_segmenter,
        make_vocabulary,
        parse_sam_spec,
        sam_identity,
    )
    from tasks.annotate.vocab import read_vocab_file
    from tasks.ingest import Annotation
    from tasks.segment import ProvidedSegmenter, SamSegmenter

    annotate, spec, options = config.annotate, config.segmenter, catalog.storage_options
    vlms: dict[str, Any] = {}

    def vlm(vlm_spec: str | None) -> Any:
        if vlm_spec is not None and vlm_spec not in vlms:
            vlms[vlm_spec] = make_vlm(vlm_spec, cache_url=catalog.url, storage_options=catalog.storage_options)
        return vlms.get(vlm_spec) if vlm_spec else None

    aesthetic = None
    if annotate.aesthetic_clip is not None:
        aesthetic = AestheticScorer(annotate.aesthetic_clip, annotate.aesthetic_head)
    annotation = Annotation(captioner=vlm(annotate.captioner), selection=annotate.select, aesthetic=aesthetic)
    if is_vocab_segmenter(spec):
        vocabulary = make_vocabulary(
            annotate.vocab, from_caption=annotate.vocab_from_caption, tagger=vlm(annotate.tagger),
            storage_options=options,
        )  # fmt: skip
        segmenter: Segmenter = build_segmenter(spec, vocabulary, storage_options=options)
    elif spec == "provided":
        segmenter = ProvidedSegmenter(options)
    else:  # sam: --vocab names the automatic objects, in order, unless the spec gives #labels=…
        sam_options = parse_sam_spec(spec)
        if annotate.vocab and "labels" not in sam_options:
            sam_options["labels"] = read_vocab_file(annotate.vocab, storage_options=options)
        segmenter = SamSegmenter(**sam_options, storage_options=options)
        segmenter.identity = sam_identity(sam_options, options)  # other options or labels: annotate again
    return Annotators(segmenter, annotation)


def ingest(
    items: Sequence[SourceItem], catalog: Catalog, geometry: GeometryConfig, annotators: Annotators, *, run_id: str
) -> StepOutput:
    """Ingest a batch (``tasks.ingest.ingest_batch``) into clips of ``geometry``, recording each clip's ``sources``,
    ``clips`` and ``objects`` rows and failures as it is done. Returns those rows (also the ones a resumed clip
    already had), the failures, counts and the step's timer."""
    from tasks.ingest import IngestOptions, ingest_batch

    timer = StageTimer()  # returned with the output: ingest may run in another process (Dask, Ray)
    with use_timer(timer), timer.span("ingest", items=len(items)):
        result = ingest_batch(
            list(items), catalog, geometry=geometry.to_geometry(), segmenter=annotators.segmenter,
            run_id=run_id, annotation=annotators.annotation,
            options=IngestOptions(storage_options=catalog.storage_options, record=True),
        )  # fmt: skip
    out = StepOutput(rows={k: list(v) for k, v in result.rows.items()}, failures=list(result.failures), timer=timer)
    out.add("items", len(items))
    out.add("clips", len({row["clip_id"] for row in out.rows.get("clips", [])}))
    out.add("objects", len({row["object_id"] for row in out.rows.get("objects", [])}))
    if result.skipped_clips:
        out.add("clips_already_done", result.skipped_clips)
    return out
