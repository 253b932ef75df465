"""The optional judge stage inside scoring: each pair judged from its own direction, scores stored, rule applied."""

from __future__ import annotations

import base64
import dataclasses
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from catalog.store import Catalog
from tasks.accept import AcceptRule
from tasks.config import ScoreConfig
from tasks.judge import get_judge
from tasks.masks import encode_masks_npz
from tasks.steps.plan import RenderJob
from tasks.steps.render import Rendered
from tasks.steps.score import Scorers, score
from tasks.video_io import encode_mp4
from tests.tasks.proposers.conftest import build_tiny_lm
from tests.tasks.proposers.llm_server import TinyChatServer


# the quality gate's checks off: this test is about the judge (the gate has its own tests in tests/tasks/test_gate.py)
GATE_OFF = {f.name: None for f in dataclasses.fields(AcceptRule) if f.name.startswith(("min_", "max_"))}
VERDICT = {"compliance": 2, "consistency": 2, "quality": 2, "reason": "The dog is gone; the lawn is smeared."}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    torch.manual_seed(0)
    model = build_tiny_lm(tmp_path_factory.mktemp("lm") / "tiny-llama")
    with TinyChatServer(model, force_text=json.dumps(VERDICT)) as server:
        yield server


def _rendered(cat: Catalog) -> Rendered:
    """A render stored in ``cat`` as the render stage stores it (the score stage reads the edited clip back)."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (9, 32, 48, 3), dtype=np.uint8)  # 9 frames of 48x32
    masks = np.zeros((9, 32, 48), dtype=bool)
    masks[:, 8:20, 12:30] = True
    edited = frames.copy()
    edited[masks] = 90  # the filled hole; the background is untouched
    video_uri = cat.put_media(encode_mp4(edited, 8.0), "mp4")
    mask_uri = cat.put_media(encode_masks_npz(masks), "npz")
    job = RenderJob(
        instruction_id="instruction_r",
        object_id="object_1",
        clip_id="clip_1",
        edit_type="remove",
        instruction="Remove the dog.",
        instruction_long="Remove the dog from the lawn and fill the lawn behind it.",
        clip_video_uri="media/aa/clip.mp4",
        mask_uri=mask_uri,
        fps=8.0,
        add_instruction_id="instruction_a",
        add_instruction="Add a dog.",
        add_instruction_long="Add a small brown dog standing on the lawn in the middle of the frame.",
    )
    render_row = {
        "render_id": "render_1",
        "instruction_id": "instruction_r",
        "clip_id": "clip_1",
        "object_id": "object_1",
        "engine": "propagation",
        "video_uri": video_uri,
        "mask_uri": mask_uri,
    }
    return Rendered(job, render_row, frames, edited, masks, masks)


def _first_image(body: dict) -> np.ndarray:
    parts = [p for p in body["messages"][-1]["content"] if p["type"] == "image_url"]
    data = parts[0]["image_url"]["url"].split(",", 1)[1]
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))))


@pytest.mark.parametrize("min_quality, decision", [(3, "rejected"), (2, "accepted")])
def test_every_pair_is_judged_in_its_own_direction(server, tmp_path, min_quality, decision) -> None:
    cat = Catalog(str(tmp_path / "catalog"))
    judge = get_judge(f"openai:{server.url}#tiny", cache_url=cat.url, num_frames=2, image_size=48, timeout_s=300.0)
    judge.setup()
    rendered = _rendered(cat)
    before = len(server.bodies)
    config = ScoreConfig(accept_rule={**GATE_OFF, "min_judge_quality": min_quality}, previews=False)
    out = score(rendered, cat, config, Scorers(judge=judge), run_id="run_1")
    pairs = {p["edit_type"]: p for p in out.rows["pairs"]}
    assert set(pairs) == {"remove", "add"} and out.counts["judged"] == 2
    for pair in pairs.values():
        assert (pair["judge_compliance"], pair["judge_consistency"], pair["judge_quality"]) == (2, 2, 2)
        assert pair["judge_reason"] == VERDICT["reason"] and pair["judge_model"] == "openai:tiny"
        assert pair["decision"] == decision
    if decision == "rejected":
        assert "judge_quality" in pairs["remove"]["decision_reason"]
        # The judge saw the remove pair as original → inpainted and the add pair as inpainted → original.
        bodies = server.bodies[before:]
        assert len(bodies) == 2
        firsts = {json.dumps(b["messages"][-1]["content"][0]["text"]): _first_image(b) for b in bodies}
        remove_first = next(img for text, img in firsts.items() if "Remove the dog" in text)
        add_first = next(img for text, img in firsts.items() if "Add a small brown dog" in text)
        assert remove_first[16, 20].tolist() != [90, 90, 90]  # original pixel inside the hole
        assert np.abs(add_first[16, 20].astype(int) - 90).max() <= 8  # the inpainted fill, as stored (H.264)
