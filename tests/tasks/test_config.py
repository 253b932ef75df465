"""tasks/config.py: one run configuration, validated once; bad settings are rejected with the setting named."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from tasks.accept import AcceptRule
from tasks.config import GeometryConfig, RenderConfig, RunConfig, ScoreConfig


def test_defaults_describe_the_models_geometry_and_the_cpu_safe_choices(monkeypatch) -> None:
    from catalog.store import Catalog

    monkeypatch.setenv("VPF_CATALOG", "memory://vpf-config-test")
    config = RunConfig(source="clips/")
    assert config.catalog is None  # resolved where the flow runs: $VPF_CATALOG there
    assert Catalog(config.catalog).url == "memory://vpf-config-test"
    assert (config.geometry.num_frames, config.geometry.height, config.geometry.width) == (49, 480, 720)
    assert config.edit_types == ["remove", "add"] and config.render.engine == "auto"
    assert config.score.accept_rule == AcceptRule() and config.render.dilation_radius is None


@pytest.mark.parametrize(
    "settings, field",
    [
        ({"geometry": {"width": 721}}, "width"),
        ({"geometry": {"num_frames": 1}}, "num_frames"),
        ({"proposer": "gpt"}, "proposer"),
        ({"segmenter": "magic"}, "segmenter"),
        ({"segmenter": "sam:/m.pth#colour=red"}, "segmenter"),
        ({"edit_types": ["remove", "paint"]}, "edit_types"),
        ({"edit_types": []}, "edit_types"),
        ({"render": {"engine": "gpt"}}, "engine"),
        ({"score": {"judge": "magic"}}, "judge"),
        ({"score": {"reseg_segmenter": "sam:/m.pth"}}, "reseg_segmenter"),  # not an open-vocabulary segmenter
        ({"score": {"reseg_segmenter": "sam3:/m#colour=red"}}, "reseg_segmenter"),
        ({"score": {"accept_rule": {"min_psnr": 3}}}, "accept_rule"),
        ({"score": {"accept_rule": {"min_psnr_bg": "high"}}}, "accept_rule"),
        ({"batch_size": 0}, "batch_size"),
        ({"render": {"dilation_radius": -1}}, "dilation_radius"),
        ({"score": {"workers": -1}}, "workers"),
        ({"max_failure_ratio": 1.5}, "max_failure_ratio"),
        ({"colour": "red"}, "colour"),  # a misspelt or unknown setting is an error, never ignored
    ],
)
def test_bad_settings_are_rejected_naming_the_setting(settings: dict, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        RunConfig(source="clips/", catalog="memory://x", **settings)
    assert any(field in [str(part) for part in error["loc"]] for error in info.value.errors()), info.value


def test_the_render_and_score_parts_travel_as_json_and_come_back_equal() -> None:
    render = RenderConfig(engine="propagation", engine_options={"flow_scale": 0.25}, seed=7, dilation_radius=4)
    score = ScoreConfig(
        accept_rule={"min_psnr_bg": 25.0, "reject_flags": []}, judge="openai:http://localhost:1#m", previews=False
    )
    assert RenderConfig.model_validate(json.loads(json.dumps(render.model_dump(mode="json")))) == render
    again = ScoreConfig.model_validate(json.loads(json.dumps(score.model_dump(mode="json"))))
    assert again == score and again.accept_rule == AcceptRule(min_psnr_bg=25.0, reject_flags=[])


def test_engine_choices_are_the_registrys_list() -> None:
    from typing import get_args

    from tasks.engines.registry import ENGINE_NAMES

    assert get_args(RenderConfig.model_fields["engine"].annotation) == ENGINE_NAMES


def test_recorded_settings_leave_out_storage_credentials() -> None:
    config = RunConfig(source="s3://in/", catalog="s3://cat/", storage_options={"secret": "s3cr3t"}, limit=3)
    recorded = json.dumps(config.recorded())
    assert "s3cr3t" not in recorded and json.loads(recorded)["limit"] == 3


def test_geometry_config_gives_the_tasks_geometry() -> None:
    geometry = GeometryConfig(num_frames=9, height=32, width=48, fps=4.0).to_geometry()
    assert (geometry.num_frames, geometry.height, geometry.width, geometry.fps) == (9, 32, 48, 4.0)


def test_the_run_segmenter_re_segments_unless_another_or_none_is_set() -> None:
    spec = "detect+track:/m/gdino#tracker=sam2:/m/sam2&threshold=0.3"
    assert RunConfig(source="clips/", segmenter=spec).score.reseg_segmenter == spec
    assert RunConfig(source="clips/", segmenter="sam3:/m/sam3").score.reseg_segmenter == "sam3:/m/sam3"
    for segmenter in ("provided", "sam:/m/sam_vit_b.pth"):  # not open-vocabulary: nothing to re-segment with
        assert RunConfig(source="clips/", segmenter=segmenter).score.reseg_segmenter is None
    other = RunConfig(source="clips/", segmenter=spec, score={"reseg_segmenter": "sam3:/m/sam3"})
    assert other.score.reseg_segmenter == "sam3:/m/sam3"
    assert RunConfig(source="clips/", segmenter=spec, score={"reseg_segmenter": None}).score.reseg_segmenter is None
    # what travels to the render workers and what the runs table records
    config = RunConfig(source="clips/", segmenter=spec)
    assert ScoreConfig.model_validate(config.score.model_dump(mode="json")).reseg_segmenter == spec
    assert config.recorded()["score"]["reseg_segmenter"] == spec


def test_ingest_runs_two_batches_ahead_unless_a_model_annotates() -> None:
    """Provided masks: two ingest batches at once (CPU work side by side); a segmenter or captioner model: one, so
    ingest threads never share one model; an explicit setting wins."""
    assert RunConfig(source="clips/").ingest_ahead() == 2
    assert RunConfig(source="clips/", segmenter="sam3:/models/sam3").ingest_ahead() == 1
    assert RunConfig(source="clips/", annotate={"captioner": "transformers:/models/vlm"}).ingest_ahead() == 1
    assert RunConfig(source="clips/", segmenter="sam3:/models/sam3", ingest_in_flight=3).ingest_ahead() == 3
