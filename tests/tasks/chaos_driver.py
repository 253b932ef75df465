"""The factory's stages in one plain process, for kill -9 trials (tests/tasks/test_kill_and_resume.py).

``pipeline`` runs what ``build_pairs`` runs, batch by batch (discover, ingest recording each clip, propose, plan,
render, score and record the pending jobs one by one as the render flow does, compact), with the null engine and no Prefect, so a trial
costs a process start and a few tiny clips.

``python -m tests.tasks.chaos_driver MANIFEST CATALOG POINT`` runs it and SIGKILLs itself at ``POINT``:

- ``ingest:N``: when ingest starts encoding its N-th clip (clips before it are recorded, this one is not);
- ``render:N``: inside the engine, rendering the N-th job (the jobs before it are recorded);
- ``write:N``: in the middle of the N-th atomic catalog write (media or fragment): the temporary file is written and
  synced, not yet renamed into place;
- ``compact:N``: in the N-th compaction, after its merged fragment is written, before the merged ones are deleted;
- ``none``: no kill (the caller kills at a random time).
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from tasks.types import Geometry


GEOMETRY = Geometry(num_frames=17, fps=8.0, height=64, width=96)
BATCH_SIZE = 1  # two batches of one clip: kills can land between batches and in each batch's compaction


def pipeline(
    manifest: str, catalog: str, run_id: str = "run_chaos", *, compact: bool = True, batch_size: int = BATCH_SIZE
) -> dict[str, int]:
    from catalog.store import Catalog
    from tasks.config import RenderConfig, RunConfig, ScoreConfig
    from tasks.engines.registry import get_engine
    from tasks.produce import PairMaker
    from tasks.proposers import get_proposer
    from tasks.steps import discover, ingest, plan, propose, record
    from tasks.steps.score import Scorers

    cat = Catalog(catalog)
    config = RunConfig(source=manifest, catalog=catalog, geometry=GEOMETRY.as_dict())
    items, failures = discover.discover(config)
    record.record_failures(cat, failures, run_id)
    annotators = ingest.make_annotators(config, cat)
    proposer = get_proposer("template", cache_url=cat.full_url("cache/proposals"))
    proposer.setup()
    engine = get_engine("null")
    engine.setup()
    # what the render flow runs: each render recorded (media, renders row, pairs) before the next one starts
    maker = PairMaker(engine, Scorers(), RenderConfig(), ScoreConfig(workers=0))
    counts = {"renders": 0, "already_done": 0}
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        ingested = ingest.ingest(
            batch, cat, config.geometry, annotators, run_id=run_id
        )  # records its rows clip by clip
        objects, clips = ingested.rows.get("objects", []), ingested.rows.get("clips", [])
        proposed = propose.propose(objects, clips, proposer, edit_types=["remove", "add"], seed=0, run_id=run_id)
        instructions = proposed.rows["instructions"]
        record.record_tables(cat, {"instructions": instructions})
        jobs = plan.plan(instructions, objects, clips, dilation_radius=None, effect_masks=config.render.effect_masks)
        made = maker.make(jobs, cat, run_id=run_id)
        counts["renders"] += made.counts["renders"]
        counts["already_done"] += made.counts["already_done"]
        if compact:
            cat.compact(small_bytes=1 << 30)
    return counts


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def arm(point: str) -> None:
    """Make this process SIGKILL itself at ``point`` (see the module docstring)."""
    if point == "none":
        return
    kind, _, nth = point.partition(":")
    target = int(nth)
    calls = {"n": 0}

    def hit() -> None:
        calls["n"] += 1
        if calls["n"] == target:
            _die()

    if kind == "ingest":
        import tasks.ingest

        encode = tasks.ingest.encode_mp4

        def encoding(*args, **kwargs):
            hit()
            return encode(*args, **kwargs)

        tasks.ingest.encode_mp4 = encoding
    elif kind == "render":
        from tasks.engines.null import NullEngine

        fill = NullEngine.fill

        def filling(self, *args, **kwargs):
            hit()
            return fill(self, *args, **kwargs)

        NullEngine.fill = filling
    elif kind == "write":
        import catalog.storage

        replace = os.replace

        class _Os:  # catalog.storage's view of os: the rename of its N-th atomic write never happens
            def __getattr__(self, name: str) -> Any:
                return getattr(os, name)

            @staticmethod
            def replace(src: str, dst: str) -> None:
                hit()
                replace(src, dst)

        catalog.storage.os = _Os()
    elif kind == "compact":
        from catalog.store import Catalog

        write = Catalog._write_fragment

        def writing(self, table: str, arrow: Any, *, unique: bool, stamp: str | None = None) -> str:
            path = write(self, table, arrow, unique=unique, stamp=stamp)
            if stamp is not None:  # only compaction passes the stamp of the fragments it merges
                hit()
            return path

        Catalog._write_fragment = writing
    else:
        raise ValueError(f"unknown kill point {point!r}")


if __name__ == "__main__":
    manifest_arg, catalog_arg, point_arg = sys.argv[1:4]
    arm(point_arg)
    pipeline(manifest_arg, catalog_arg)
