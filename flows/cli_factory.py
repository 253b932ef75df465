"""``vpf run``, ``vpf status`` and ``vpf demo``: the factory from the command line.

Exit codes: 0 completed; 1 error (the run failed); 2 usage error; 3 completed with failures (failures are rows in
the catalog's ``failures`` table: ``vpf status`` lists them).
"""

from __future__ import annotations

import json
import sys
import time
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from flows.options import CatalogOption, open_catalog


if TYPE_CHECKING:
    from flows.build_pairs import RunSummary
    from tasks.config import RunConfig


EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_COMPLETED_WITH_FAILURES = 3
STATUS_EXIT = {"completed": EXIT_OK, "completed_with_failures": EXIT_COMPLETED_WITH_FAILURES, "failed": EXIT_ERROR}

console = Console(stderr=True)


class EngineChoice(str, Enum):
    auto = "auto"
    propagation = "propagation"
    videopainter = "videopainter"
    null = "null"
    sleep = "sleep"
    cv2_inpaint = "cv2-inpaint"


class TaskRunnerChoice(str, Enum):
    default = "default"
    dask = "dask"
    ray = "ray"


EngineOpt = Annotated[
    EngineChoice,
    typer.Option("--engine", help="auto: VideoPainter with weights and CUDA, else the CPU propagation engine."),
]
ProposerOpt = Annotated[str, typer.Option("--proposer", help="template | transformers:PATH | openai:URL")]
SegmenterOpt = Annotated[
    str,
    typer.Option(
        "--segmenter",
        help="provided (manifest masks or masks next to the videos) | sam:CHECKPOINT[#model_type=vit_h&auto=1] "
        "(segment-anything) | detect+track:DETECTOR#tracker=sam2:PATH[&threshold=0.3&keyframe_every=8] "
        "(Grounding DINO/OWLv2 + SAM2 video) | sam3:PATH[#threshold=0.5] (SAM3 video); paths or URLs. The last two "
        "also re-segment each render for the quality gate (--set render.reseg_segmenter=null: off)",
    ),
]
FramesOpt = Annotated[int, typer.Option("--frames", min=2, help="frames per clip")]
HeightOpt = Annotated[int, typer.Option("--height", min=16, help="clip height in pixels (even)")]
WidthOpt = Annotated[int, typer.Option("--width", min=16, help="clip width in pixels (even)")]
FpsOpt = Annotated[float, typer.Option("--fps", min=0.1, help="frames per second of the normalised clips")]


def _summary_table(summary: RunSummary) -> Table:
    table = Table(caption=f"{summary.status} in {summary.elapsed_s:.1f}s", caption_justify="left", min_width=40)
    table.add_column("what")
    table.add_column("count", justify="right")
    for key in "items clips objects instructions renders pairs accepted skipped already_done failures".split():
        if key in summary.counts:
            table.add_row(key, str(summary.counts[key]))
    for reason, n in sorted(summary.failures_by_reason.items()):
        table.add_row(f"  {reason}", str(n), style="yellow")
    return table


def run_factory(config: RunConfig, *, task_runner: str = "default", workers: int | None = None) -> RunSummary:
    """Run ``build_pairs`` with ``config`` in this process (Prefect ephemeral mode
    unless ``PREFECT_API_URL`` is set) with a progress display; returns its ``RunSummary``.

    ``task_runner``/``workers``: where ingest runs (threads here, or a local Dask or Ray cluster, one batch in flight
    per worker process).
    """
    from flows.build_pairs import build_pairs
    from flows.progress import observe

    flow = build_pairs
    if task_runner != "default":
        from flows.runners import local_workers, make_task_runner

        flow = build_pairs.with_options(task_runner=make_task_runner(task_runner, workers=workers))
        config = config.model_copy(update={"ingest_in_flight": local_workers(workers)})
    with observe(console):
        return flow(config=config)


OPTION_OF_FIELD = {
    "source": "SOURCE",
    "catalog": "--catalog",
    "limit": "--limit",
    "roots": "--root",
    "geometry": "--frames/--height/--width/--fps",
    "segmenter": "--segmenter",
    "proposer": "--proposer",
    "edit_types": "--edit-type",
    "engine": "--engine",
    "engine_options": "--engine-option",
    "seed": "--seed",
    "accept_rule": "--accept",
    "judge": "--judge",
    "clip_weights": "--clip-weights",
    "previews": "--previews",
    "rerender": "--rerender",
    "batch_size": "--batch-size",
    "render_deployment": "--render-deployment",
    "gallery": "--gallery",
    "vocab": "--vocab",
    "captioner": "--captioner",
    "tagger": "--tagger",
    "select": "--select",
}


def build_config(*overrides: tuple[str, Any], **settings: Any) -> RunConfig:
    """``tasks.config.RunConfig(**settings)`` with ``overrides`` (dotted keys, e.g. ``("render.seed", 3)``) set on
    top; a validation error becomes a usage error naming the option."""
    from pydantic import ValidationError

    from tasks.config import RunConfig

    for dotted, value in overrides:
        *parents, key = dotted.split(".")
        target = settings
        for part in parents:
            target = target.setdefault(part, {})
            if not isinstance(target, dict):
                raise typer.BadParameter(f"{dotted}: {part} is not a group of settings", param_hint="--set")
        target[key] = value
    try:
        return RunConfig(**settings)
    except ValidationError as exc:
        error = exc.errors()[0]
        names = [str(part) for part in error["loc"] if str(part) in OPTION_OF_FIELD]
        hint = OPTION_OF_FIELD[names[-1]] if names else "--set"
        raise typer.BadParameter(error["msg"].removeprefix("Value error, "), param_hint=hint) from None


def parse_key_values(pairs: list[str] | None, option: str) -> dict[str, Any]:
    """``["base=/models/cog", "steps=30"]`` → ``{"base": "/models/cog", "steps": 30}`` (values parsed as JSON when
    they are JSON, else kept as strings)."""
    parsed: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{pair!r}: expected KEY=VALUE", param_hint=option)
        try:
            parsed[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key.strip()] = value
    return parsed


def run_command(
    source: Annotated[
        str, typer.Argument(help="A folder, glob, manifest (CSV/JSONL/Parquet) or VPData CSV; any fsspec URL.")
    ],
    catalog: CatalogOption,
    engine: EngineOpt = EngineChoice.auto,
    proposer: ProposerOpt = "template",
    segmenter: SegmenterOpt = "provided",
    limit: Annotated[int | None, typer.Option("--limit", min=1, help="Only the first N items.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Items per task; jobs per render flow.")] = 16,
    frames: FramesOpt = 49,
    height: HeightOpt = 480,
    width: WidthOpt = 720,
    fps: FpsOpt = 8.0,
    edit_type: Annotated[
        list[str] | None, typer.Option("--edit-type", help="Edit types to propose (repeat); default remove + add.")
    ] = None,
    render_deployment: Annotated[
        str | None,
        typer.Option("--render-deployment", help="Send render batches to this deployment, e.g. render/gpu."),
    ] = None,
    root: Annotated[
        list[str] | None, typer.Option("--root", help="Allowed root for source files (repeat); others fail.")
    ] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    previews: Annotated[bool, typer.Option("--previews/--no-previews", help="Write preview videos.")] = True,
    gallery: Annotated[
        bool, typer.Option("--gallery/--no-gallery", help="Build a gallery of the run's pairs (local catalogs).")
    ] = True,
    rerender: Annotated[
        bool,
        typer.Option(
            "--rerender",
            help="Render again even the jobs whose pairs exist: a new generation named after this run (earlier "
            "ones stay; renders.generation tells them apart). New weights re-render without it.",
        ),
    ] = False,
    task_runner: Annotated[
        TaskRunnerChoice,
        typer.Option(
            "--task-runner",
            help="Where ingest (decode, scene split, masks) runs: threads here, or a local "
            "Dask or Ray cluster (one batch per worker process).",
        ),
    ] = TaskRunnerChoice.default,
    workers: Annotated[
        int | None, typer.Option("--workers", min=1, help="Worker processes of --task-runner dask|ray.")
    ] = None,
    engine_option: Annotated[
        list[str] | None,
        typer.Option(
            "--engine-option",
            help="KEY=VALUE for the engine (repeat), e.g. base=/models/CogVideoX-5b-I2V branch=… id_lora=… "
            "(VideoPainter; also $VPF_VIDEOPAINTER_BASE/_BRANCH/_ID_LORA/_FLUX_FILL).",
        ),
    ] = None,
    accept: Annotated[
        list[str] | None,
        typer.Option(
            "--accept", help="KEY=VALUE of the accept rule (repeat), e.g. min_psnr_bg=28 min_judge_quality=3."
        ),
    ] = None,
    clip_weights: Annotated[
        str | None,
        typer.Option(
            "--clip-weights",
            help="Local CLIP folder (transformers): the quality gate also checks that the object's label stops "
            "matching the hole (clip_label_src/clip_label_tgt).",
        ),
    ] = None,
    judge: Annotated[
        str | None,
        typer.Option(
            "--judge", help="Score pairs with a vision-language model: openai:URL#MODEL or transformers:PATH."
        ),
    ] = None,
    settings: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="KEY=VALUE of any run setting (repeat; dotted keys reach parts, e.g. max_failure_ratio=0.1 "
            "render.gpu_slots=2 dilation_radius=12); see tasks/config.py.",
        ),
    ] = None,
    vocab: Annotated[
        str | None,
        typer.Option("--vocab", help="Noun phrases to find (one a line) for detect+track and sam3; path or URL."),
    ] = None,
    captioner: Annotated[
        str | None,
        typer.Option(
            "--captioner", help="Caption clips without one with a VLM: transformers:PATH or openai:URL#MODEL."
        ),
    ] = None,
    tagger: Annotated[
        str | None,
        typer.Option("--tagger", help="Add a VLM's object tags to each clip's vocabulary: transformers:PATH|openai:…"),
    ] = None,
    select: Annotated[
        list[str] | None,
        typer.Option(
            "--select",
            help="KEY=VALUE selection threshold (repeat; null turns a check off), e.g. min_motion=0.5 "
            "min_track_iou=0.3 min_side_px=16; see tasks/annotate/selection.py.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as one JSON line on stdout.")] = False,
) -> None:
    """Make editing pairs from SOURCE into the catalog. Exit 0: completed; 3: completed with failures; 1: failed;
    2: usage error (also: no source has masks and no --segmenter was chosen)."""
    if workers is not None and task_runner is TaskRunnerChoice.default:
        raise typer.BadParameter(
            "--workers sizes a dask or ray cluster; add --task-runner dask|ray", param_hint="--workers"
        )
    config = build_config(
        *parse_key_values(settings, "--set").items(),
        source=source,
        catalog=catalog,
        limit=limit,
        roots=list(root) if root else None,
        geometry={"num_frames": frames, "height": height, "width": width, "fps": fps},
        segmenter=segmenter,
        proposer=proposer,
        **({"edit_types": list(edit_type)} if edit_type else {}),
        render={
            "engine": engine.value,
            "engine_options": parse_key_values(engine_option, "--engine-option"),
            "seed": seed,
            "accept_rule": parse_key_values(accept, "--accept"),
            "judge": judge,
            "clip_weights": clip_weights,
            "previews": previews,
            "rerender": rerender,
        },
        batch_size=batch_size,
        render_deployment=render_deployment,
        gallery=gallery,
        annotate={
            "vocab": vocab,
            "captioner": captioner,
            "tagger": tagger,
            "select": parse_key_values(select, "--select"),
        },
    )
    if config.segmenter == "provided":
        _check_masks(config)
    try:
        summary = run_factory(config, task_runner=task_runner.value, workers=workers)
    except Exception as exc:  # the runs row says "failed"; the user gets one line, not a traceback
        console.print(f"[red]vpf run failed:[/red] {type(exc).__name__}: {exc}")
        raise typer.Exit(EXIT_ERROR) from exc
    if as_json:
        typer.echo(summary.model_dump_json())
    else:
        console.print(f"run {summary.run_id}")
        console.print(_summary_table(summary))
        console.print(f"catalog: {summary.catalog}   failures: vpf status --catalog {summary.catalog}")
        if summary.gallery:
            console.print(f"gallery: {summary.gallery}")
    raise typer.Exit(STATUS_EXIT.get(summary.status, EXIT_ERROR))


def _check_masks(config: Any) -> None:
    """Exit 2 with one message, before any run starts, when no source has masks and no segmenter was chosen."""
    from tasks.annotate.specs import NoMasksError, check_masks_or_segmenter
    from tasks.stages import discover_stage

    items, _ = discover_stage(
        config.source, limit=config.limit, roots=config.roots, storage_options=config.storage_options
    )
    try:
        check_masks_or_segmenter(items, config.segmenter)
    except NoMasksError as exc:
        console.print(f"[red]vpf run:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(EXIT_USAGE) from None


def status_command(
    catalog: CatalogOption,
    last: Annotated[int, typer.Option("--last", min=1, help="How many runs to list.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """The last runs, row counts per table, and failures by stage and reason."""
    from flows.status import catalog_status

    open_catalog(catalog)  # exit 2 when the path holds no catalog
    try:
        report = catalog_status(catalog, last=last)
    except Exception as exc:
        console.print(f"[red]vpf status failed:[/red] {type(exc).__name__}: {exc}")
        raise typer.Exit(EXIT_ERROR) from exc
    if as_json:
        typer.echo(json.dumps(report, default=str))
        return
    out = Console()
    runs = Table(title=f"last runs in {catalog}")
    runs.add_column("run_id", overflow="fold")
    runs.add_column("status", overflow="fold")
    runs.add_column("started (UTC)")
    runs.add_column("source", overflow="fold")
    for col in ("clips", "pairs", "fails"):
        runs.add_column(col, justify="right", no_wrap=True)
    for r in report["runs"]:
        started = r["started_at"].strftime("%Y-%m-%d %H:%M") if r["started_at"] else ""
        cells = (r["run_id"], r["status"], started, r["source"], r["n_clips"], r["n_pairs"], r["n_failures"])
        runs.add_row(*(str(cell) for cell in cells))
    out.print(runs)
    rows = Table(title="rows")
    rows.add_column("table")
    rows.add_column("rows", justify="right")
    for table, n in report["rows"].items():
        rows.add_row(table, str(n))
    out.print(rows)
    fails = Table(title="failures")
    for col in ("stage", "reason", "count", "example"):
        fails.add_column(col)
    for f in report["failures"]:
        fails.add_row(f["stage"], f["reason"], str(f["count"]), f["example"])
    out.print(fails)
    if report["stages"]["rows"]:
        stages = Table(title=f"time by stage, run {report['stages']['run_id']} (busy seconds; stages overlap)")
        for col in ("stage", "batches", "items", "busy s", "CPU s"):
            stages.add_column(col, justify="left" if col == "stage" else "right")
        for s in report["stages"]["rows"]:
            stages.add_row(s["stage"], str(s["batches"]), str(s["items"]), f"{s['wall_s']:.1f}", f"{s['cpu_s']:.1f}")
        out.print(stages)


def demo_command(
    out: Annotated[Path, typer.Option("--out", help="Folder for samples, catalog and previews.")] = Path("demo-out"),
    engine: EngineOpt = EngineChoice.auto,
    frames: FramesOpt = 25,
    height: HeightOpt = 240,
    width: WidthOpt = 368,
) -> None:
    """Write samples, run the factory on them (Prefect ephemeral mode, a local catalog), print what it made."""
    started = time.perf_counter()
    out = out.resolve()
    from flows.cli_samples import write_samples

    console.rule("1. samples")
    paths = write_samples(out / "samples", num_frames=frames, height=height, width=width, real=False)
    for name, path in paths.items():
        console.print(f"{name}: {path}")
    console.rule("2. build pairs (Prefect ephemeral mode)")
    catalog = str(out / "catalog")
    config = build_config(
        source=str(paths["synthetic"]),
        catalog=catalog,
        render={"engine": engine.value},
        batch_size=4,
        geometry={"num_frames": frames, "height": height, "width": width},
    )
    summary = run_factory(config)
    console.rule("3. summary")
    stdout = Console()
    stdout.print(f"run {summary.run_id}")
    stdout.print(_summary_table(summary))
    stdout.print(f"catalog:  {catalog}")
    stdout.print("previews (side by side: original | mask | edited), e.g.:")
    for url in summary.previews[:3]:
        stdout.print(f"  {url}", soft_wrap=True)
    if summary.gallery:
        stdout.print(f"gallery of this run: {summary.gallery}", soft_wrap=True)
    stdout.print(f"browse every pair: vpf gallery --catalog {catalog} --out {out / 'gallery'} --serve", soft_wrap=True)
    console.rule("4. query it with SQL")
    from catalog.store import Catalog

    # psnr_bg: codec loss of the stored target's background; hole_change / object_match: did the object go
    query = (
        "SELECT edit_type, decision, count(*) AS pairs, round(avg(psnr_bg), 1) AS psnr_bg, "
        "round(avg(hole_change), 2) AS hole_change, round(max(object_match), 2) AS max_object_match "
        "FROM pairs GROUP BY ALL ORDER BY ALL"
    )
    stdout.print(f'$ vpf sql "{query}" --catalog {catalog}', soft_wrap=True)
    result = Catalog(catalog).query(query, read_only=True)
    table = Table()
    for name in result.column_names:
        table.add_column(name)
    for row in result.to_pylist():
        table.add_row(*[str(v) for v in row.values()])
    stdout.print(table)
    stdout.print(f"demo finished in {time.perf_counter() - started:.0f}s ({summary.status})")
    raise typer.Exit(STATUS_EXIT.get(summary.status, EXIT_ERROR))


def register(app: typer.Typer) -> None:
    """Add ``run``, ``status`` and ``demo`` to the ``vpf`` app (``samples``: flows/cli_samples.py)."""
    app.command("run")(run_command)
    app.command("status")(status_command)
    app.command("demo")(demo_command)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(EXIT_USAGE)
