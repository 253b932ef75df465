"""``vpf bench quality``: the ground-truth inpainting benchmark (tasks/quality_bench.py) from the command line."""

from __future__ import annotations

import json
from typing import Annotated

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
        scenes: Annotated[str, typer.Option(help="Comma-separated cameras: static, pan, zoom.")] = "static,pan,zoom",
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
        from tasks.synthetic import CAMERAS

        if engine not in ENGINE_NAMES:
            typer.echo(f"error: unknown engine {engine!r}; known: {', '.join(ENGINE_NAMES)}", err=True)
            raise typer.Exit(2)
        chosen = [s.strip() for s in scenes.split(",") if s.strip()]
        bad = [s for s in chosen if s not in CAMERAS]
        if bad or not chosen:
            typer.echo(f"error: --scenes must name some of {', '.join(CAMERAS)}, got {scenes!r}", err=True)
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

    app.add_typer(bench, name="bench")
