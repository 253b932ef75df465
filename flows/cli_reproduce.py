"""``vpf reproduce PAIR_ID``: make a pair's render again from what the catalog records, and compare.

The pair's rows name everything a render depends on: clip and object mask (content-addressed media), instruction,
engine, version, parameters (``renders.params_json``) and seed. ``reproduce_pair`` rebuilds the job with the plan
step, the engine with the registry, renders it with the render step into a scratch catalog holding copies of the
inputs, and compares: CPU engines must give a bit-identical mp4, GPU engines decoded frames within ``min_psnr`` dB.
Renders recorded before the engine's and the pipeline's parameters were kept apart (flat ``params_json``) name only
the pipeline's dilation; their engine is rebuilt with its default for an option of the same name, and the report
says so. Exit codes: 0 the pair reproduces; 1 it does not (or rendering failed); 2 no catalog, no such pair.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import tempfile
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from pydantic import BaseModel, ConfigDict

from catalog.store import Catalog
from flows.options import CatalogOption, open_catalog


EXIT_MISMATCH = 1
EXIT_USAGE = 2
CPU_ENGINES = frozenset({"propagation", "cv2-inpaint", "null"})
DEFAULT_MIN_PSNR = 30.0

PAIR_SQL = """
SELECT p.pair_id, p.edit_type AS pair_edit_type, p.src_video_uri, p.tgt_video_uri, p.mask_uri AS pair_mask_uri,
       r.render_id, r.instruction_id, r.engine, r.engine_version, r.params_json, r.seed, r.generation, r.video_uri,
       r.mask_uri
FROM pairs p JOIN renders r USING (render_id)
WHERE p.pair_id = ?
"""


class ReproduceError(ValueError):
    """The pair cannot be re-rendered: missing rows or media, parameters the engine does not take."""


class NoSuchPair(ReproduceError):
    """The catalog has no pair (with its render) of that id."""


class Reproduction(BaseModel):
    """What ``reproduce_pair`` found. ``match`` is the verdict; the rest says why."""

    model_config = ConfigDict(ser_json_inf_nan="strings")  # identical frames: PSNR "Infinity" in JSON

    pair_id: str
    render_id: str
    engine: str
    engine_version_recorded: str
    engine_version_here: str
    seed: int
    criterion: str
    render_id_reproduced: bool
    stored_video_intact: bool  # the stored mp4's sha256 still matches its content-addressed name
    bytes_identical: bool
    mask_identical: bool
    psnr_db: float | None  # decoded reproduced frames vs decoded stored frames (inf when equal)
    max_abs_diff: int | None
    match: bool
    note: str | None = None  # what could not be rebuilt as recorded, and what was assumed instead
    scratch: str


def recorded_params(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any], str | None]:
    """``(engine parameters, pipeline parameters, note)`` of a render's ``params_json``. A flat record (renders made
    before the two were kept apart) holds the engine's parameters with the pipeline's ``dilation_radius`` written
    over the engine's option of that name: the note says the engine's own value was not recorded."""
    if set(params) == {"engine", "pipeline"}:
        return dict(params["engine"]), dict(params["pipeline"]), None
    engine = {k: v for k, v in params.items() if k != "dilation_radius"}
    pipeline = {"dilation_radius": params.get("dilation_radius")}
    note = (
        "recorded before engine and pipeline parameters were kept apart: dilation_radius is the pipeline's; "
        "an engine option of that name was not recorded and takes its default"
    )
    return engine, pipeline, note


def legacy_render_id(job: Any, engine: Any, seed: int, generation: str | None) -> str:
    """The id a render with a flat ``params_json`` was given: the engine's parameters with the pipeline's dilation
    written over them, hashed together."""
    from catalog import ids

    flat = {**engine.params(), "dilation_radius": job.dilation_radius}
    return ids.render_id(
        job.instruction_id, engine.engine_id, flat, seed, version=engine.version, generation=generation
    )


def _engine_options(engine: str, params: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """The recorded engine parameters its constructor takes, plus ``extra`` (e.g. checkpoint paths, which the
    catalog records as the engine version, not as paths)."""
    from tasks.engines.registry import engine_class

    accepted = set(inspect.signature(engine_class(engine).__init__).parameters) - {"self"}
    options = {k: v for k, v in params.items() if k in accepted and v is not None}
    return {**options, **extra}


def _decode(data: bytes) -> np.ndarray:
    import io

    import av

    with av.open(io.BytesIO(data)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def _psnr(a: np.ndarray, b: np.ndarray) -> tuple[float | None, int | None]:
    if a.shape != b.shape:
        return None, None
    diff = np.abs(a.astype(np.int16) - b.astype(np.int16))
    mse = float(np.mean(diff.astype(np.float64) ** 2))
    return (math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)), int(diff.max())


def verdict(
    engine: str, bytes_identical: bool, mask_identical: bool, psnr: float | None, min_psnr: float
) -> tuple[str, bool]:
    """``(criterion, match)``: CPU engines must give the same mp4 bytes; GPU engines decoded frames within
    ``min_psnr`` dB. Either way the inpainted mask must be the same bytes (it is computed on the CPU)."""
    if engine in CPU_ENGINES:
        return "bit-identical mp4 (CPU engine)", bytes_identical and mask_identical
    criterion = f"decoded frames within PSNR >= {min_psnr:g} dB (GPU engine)"
    return criterion, psnr is not None and psnr >= min_psnr and mask_identical


def reproduce_pair(
    catalog: Catalog,
    pair_id: str,
    *,
    scratch: str | Path | None = None,
    engine_options: dict[str, Any] | None = None,
    min_psnr: float = DEFAULT_MIN_PSNR,
) -> Reproduction:
    """Re-render the render behind ``pair_id`` into ``scratch`` (a fresh temporary folder by default) and compare it
    with the stored media (see module docstring). Raises ``ReproduceError`` when it cannot be re-rendered."""
    from catalog.ids import sha256_bytes
    from tasks.config import EFFECT_PHRASES
    from tasks.engines.registry import get_engine
    from tasks.steps.plan import plan
    from tasks.steps.render import render_id_of, render_jobs

    found = catalog.query(PAIR_SQL, [pair_id]).to_pylist()
    if not found:
        raise NoSuchPair(f"no pair {pair_id!r} (with its render) in the catalog at {catalog.url}")
    pair = found[0]
    con = catalog.connect()
    try:

        def row(table: str, key: str, value: str) -> dict[str, Any]:
            rows = con.sql(f"SELECT * FROM {table} WHERE {key} = ?", params=[value]).to_arrow_table().to_pylist()
            if not rows:
                raise ReproduceError(f"pair {pair_id}: its render names {key}={value}, which {table} lacks")
            return rows[0]

        instruction = row("instructions", "instruction_id", pair["instruction_id"])
        obj = row("objects", "object_id", instruction["object_id"])
        clip = row("clips", "clip_id", instruction["clip_id"])
    finally:
        con.close()
    engine_params, pipeline, note = recorded_params(json.loads(pair["params_json"] or "{}"))
    try:
        engine = get_engine(
            pair["engine"], **_engine_options(pair["engine"], engine_params, dict(engine_options or {}))
        )
    except (TypeError, ValueError) as exc:
        raise ReproduceError(f"pair {pair_id}: cannot rebuild engine {pair['engine']!r}: {exc}") from None
    jobs = plan(
        [instruction],
        [obj],
        [clip],
        dilation_radius=pipeline.get("dilation_radius"),
        effect_masks=pipeline.get("effect_masks", "off"),  # absent: the render grew no effect mask
        effect_segmenter=pipeline.get("effect_segmenter"),  # absent: no segmenter was asked for the effects
        effect_phrases=pipeline.get("effect_phrases") or EFFECT_PHRASES,
    )
    job = jobs[0]
    seed = int(pair["seed"] or 0)
    scratch_dir = Path(scratch) if scratch else Path(tempfile.mkdtemp(prefix=f"vpf-reproduce-{pair_id[:16]}-"))
    work = Catalog(scratch_dir)
    for uri in (clip["video_uri"], obj["mask_uri"]):  # the inputs, by content hash: same relative uri in scratch
        try:
            data = catalog.read_media(uri)
        except FileNotFoundError:
            raise ReproduceError(f"pair {pair_id}: input media {uri} is missing from the catalog") from None
        if work.put_media(data, uri.rsplit(".", 1)[-1]) != uri:
            raise ReproduceError(f"pair {pair_id}: input media {uri} no longer matches its content hash")
    engine.setup()
    effects = None
    if job.effect_segmenter:  # the open-vocabulary route of side-effect masks: its models, here
        from tasks.effect_segments import EffectSegmenter
        from tasks.errors import InputError

        try:
            effects = EffectSegmenter(job.effect_segmenter, storage_options=catalog.storage_options)
            effects.setup()
        except (InputError, ValueError) as exc:
            raise ReproduceError(f"pair {pair_id}: cannot load its side-effect segmenter: {exc}") from None
    generation = pair["generation"]  # a render made on purpose again (vpf run --rerender) keeps its generation
    rendered, out = render_jobs(
        [job], work, engine, seed=seed, run_id=None, generation=generation, effect_segmenter=effects
    )
    if not rendered:
        reasons = "; ".join(f"{f.reason}: {f.message}" for f in out.failures) or "no output"
        raise ReproduceError(f"pair {pair_id}: the render failed again: {reasons}")
    new = rendered[0].row
    new_bytes = work.read_media(new["video_uri"])
    try:
        stored = catalog.read_media(pair["video_uri"])
    except FileNotFoundError:
        raise ReproduceError(f"pair {pair_id}: stored render {pair['video_uri']} is missing") from None
    stored_mask = catalog.read_media(pair["mask_uri"]) if pair["mask_uri"] else b""
    psnr, max_diff = _psnr(_decode(new_bytes), _decode(stored))
    identical = hashlib.sha256(new_bytes).digest() == hashlib.sha256(stored).digest()
    mask_identical = work.read_media(new["mask_uri"]) == stored_mask
    criterion, match = verdict(pair["engine"], identical, mask_identical, psnr, min_psnr)
    return Reproduction(
        pair_id=pair_id,
        render_id=pair["render_id"],
        engine=pair["engine"],
        engine_version_recorded=pair["engine_version"],
        engine_version_here=engine.version,
        seed=seed,
        criterion=criterion,
        render_id_reproduced=pair["render_id"]
        == (
            render_id_of(job, engine, seed, generation)
            if note is None
            else legacy_render_id(job, engine, seed, generation)
        ),
        stored_video_intact=pair["video_uri"].rsplit("/", 1)[-1].split(".")[0] == sha256_bytes(stored),
        bytes_identical=identical,
        mask_identical=mask_identical,
        psnr_db=psnr,
        max_abs_diff=max_diff,
        match=match,
        note=note,
        scratch=str(scratch_dir),
    )


def reproduce_command(
    pair_id: Annotated[str, typer.Argument(help="The pair to make again (pairs.pair_id).")],
    catalog: CatalogOption,
    scratch: Annotated[
        Path | None, typer.Option("--scratch", help="Folder for the re-render (default: a new temporary folder).")
    ] = None,
    engine_option: Annotated[
        list[str] | None,
        typer.Option("--engine-option", help="KEY=VALUE the catalog does not record, e.g. base=/models/… (repeat)."),
    ] = None,
    min_psnr: Annotated[
        float, typer.Option("--min-psnr", help="GPU engines: the least PSNR (dB) that counts as a match.")
    ] = DEFAULT_MIN_PSNR,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON line.")] = False,
) -> None:
    """Re-run the render named by PAIR_ID's catalog row into a scratch folder and compare it with the stored media
    (bit-identical for CPU engines, within --min-psnr for GPU engines). Exit 0 match, 1 mismatch, 2 no such pair."""
    from flows.model_options import parse_key_values

    cat = open_catalog(catalog)
    try:
        report = reproduce_pair(
            cat, pair_id, scratch=scratch, engine_options=parse_key_values(engine_option, "--engine-option"),
            min_psnr=min_psnr,
        )  # fmt: skip
    except ReproduceError as exc:
        typer.echo(f"vpf reproduce: {exc}", err=True)
        raise typer.Exit(EXIT_USAGE if isinstance(exc, NoSuchPair) else EXIT_MISMATCH) from None
    if as_json:
        typer.echo(report.model_dump_json())
    else:
        for key, value in report.model_dump().items():
            typer.echo(f"{key:<24} {value}")
        typer.echo("MATCH" if report.match else "MISMATCH")
    raise typer.Exit(0 if report.match else EXIT_MISMATCH)


def register(app: typer.Typer) -> None:
    app.command("reproduce")(reproduce_command)
