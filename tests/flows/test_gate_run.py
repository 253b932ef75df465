"""A real ``build_pairs`` run with the default accept rule: engines that do not remove the object make only rejected
pairs, each naming the check it failed; the propagation engine's pairs pass."""

from __future__ import annotations

import numpy as np
import pytest

from catalog.store import Catalog
from flows.build_pairs import build_pairs
from flows.executors import LocalExecutor
from tasks.config import RunConfig
from tasks.engines.base import Inpainted, InpaintEngine
from tests.flows.conftest import TINY


class _Unedited(InpaintEngine):
    """Returns the clip as it came: the object is still there."""

    engine_id = "test-unedited"
    edit_types = frozenset({"remove"})

    @property
    def version(self) -> str:
        return "1"

    def fill(self, frames, masks, *, prompt, edit_type, seed, first_frame) -> Inpainted:
        return Inpainted(frames.copy())


class _Black(_Unedited):
    """Fills the hole with black."""

    engine_id = "test-black"

    def fill(self, frames, masks, *, prompt, edit_type, seed, first_frame) -> Inpainted:
        return Inpainted(np.zeros_like(frames))


def _run(tmp_path, manifest, engine, monkeypatch, geometry: dict | None = None) -> list[dict]:
    executor = LocalExecutor(engine) if isinstance(engine, InpaintEngine) else None  # None: the configured engine
    name = engine if isinstance(engine, str) else "propagation"
    catalog = str(tmp_path / "catalog")
    config = RunConfig(
        source=str(manifest), catalog=catalog, render={"engine": name}, geometry=geometry or TINY, gallery=False
    )
    summary = build_pairs(config, executor=executor)
    assert summary.status == "completed", summary
    return (
        Catalog(catalog).query("SELECT edit_type, decision, decision_reason, engine, psnr_bg FROM pairs").to_pylist()
    )


@pytest.mark.parametrize(
    "engine, checks",
    [
        (_Unedited(), ("hole_change", "object_match")),
        (_Black(), ("ring_colour_gap", "seam_error")),
        ("null", ("ring_texture_ratio", "seam_error", "ring_colour_gap")),  # the null engine's flat colour
    ],
    ids=["unedited", "black", "flat"],
)
def test_default_rule_rejects_engines_that_do_not_remove(tiny_samples, tmp_path, monkeypatch, engine, checks) -> None:
    manifest, n_objects = tiny_samples
    pairs = _run(tmp_path, manifest, engine, monkeypatch)
    assert len(pairs) == 2 * n_objects and {p["edit_type"] for p in pairs} == {"remove", "add"}
    for pair in pairs:
        assert pair["decision"] == "rejected", pair
        assert any(check in pair["decision_reason"] for check in checks), pair


def test_propagation_pairs_pass_and_add_pairs_share_the_removal_verdict(tmp_path, monkeypatch) -> None:
    # 144x216: the smallest clips whose dilation band (5 px) leaves the seam check real background to look at
    from tasks.synthetic import write_samples

    geometry = {**TINY, "height": 144, "width": 216}
    manifest = write_samples(tmp_path / "samples", cameras=("static", "pan"), write_background=False, **geometry)
    n_objects = len(manifest.read_text().strip().splitlines()) - 1
    pairs = _run(tmp_path, manifest, "propagation", monkeypatch, geometry)
    assert len(pairs) == 2 * n_objects
    for pair in pairs:
        # scored on the stored, decoded clips: the background carries codec loss, never the 100 dB cap
        assert 30 < pair["psnr_bg"] < 60, pair
        if pair["edit_type"] == "remove":
            assert (pair["decision"], pair["decision_reason"]) == ("accepted", "all checks passed"), pair
        else:  # the same verdict, unless its own check (the object visible in enough frames) fails
            assert pair["decision"] == "accepted" or pair["decision_reason"].startswith("object_frames_ratio"), pair
