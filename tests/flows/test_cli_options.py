"""``vpf run``'s options are ``tasks.config.RunConfig``'s fields: flags, defaults, help and choices come from the
model (nested parts flattened to bare flags), the old flags still work, and refused values are usage errors."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any, Literal, get_args, get_origin

import annotated_types
import pytest
import typer._click as click
from pydantic import BaseModel
from rich.markup import escape
from typer.main import get_command
from typer.testing import CliRunner

import flows.cli_factory as cli_factory
from flows.cli import app
from tasks.config import RunConfig
from tasks.engines.registry import ENGINE_NAMES


EXCLUDED = {"source", "catalog", "storage_options"}  # the argument, the shared --catalog, credentials
NESTED = {"geometry", "annotate", "render", "score"}  # flattened: bare flags
KEY_VALUES = {"annotate.select", "score.accept_rule", "render.engine_options"}
PREFIXED = {"score.workers": "--score-workers"}  # --workers is the task runner's
ALIASES = {
    "roots": ["--root"],
    "edit_types": ["--edit-type"],
    "geometry.num_frames": ["--frames"],
    "render.engine_options": ["--engine-option"],
    "score.accept_rule": ["--accept"],
}
OWN = {"source", "catalog", "settings", "task_runner", "workers", "as_json"}


def _fields(
    model: type[BaseModel] = RunConfig, prefix: str = "", defaults: Any = None
) -> Iterator[tuple[str, Any, Any]]:
    """``(dotted name, FieldInfo, default)`` of every field that has an option, nested parts included."""
    for name, field in model.model_fields.items():
        dotted = prefix + name
        default = getattr(defaults, name) if defaults is not None else field.get_default(call_default_factory=True)
        if dotted in EXCLUDED:
            continue
        if dotted in NESTED:
            yield from _fields(field.annotation, f"{dotted}.", default)
        else:
            yield dotted, field, default


def _params() -> dict[str, Any]:
    return {p.name: p for p in get_command(app).commands["run"].params}


def _without_none(annotation: Any) -> Any:
    args = [a for a in get_args(annotation) if a is not type(None)]
    return args[0] if type(None) in get_args(annotation) and len(args) == 1 else annotation


def test_cli_defaults_help_and_choices_are_the_models() -> None:
    params = _params()
    fields = list(_fields())
    assert set(params) == {dotted.replace(".", "__") for dotted, _, _ in fields} | OWN  # every field, no other
    ctx = click.Context(get_command(app).commands["run"])
    for dotted, field, default in fields:
        param, name = params[dotted.replace(".", "__")], dotted.rsplit(".", 1)[-1]
        flag = PREFIXED.get(dotted, "--" + name.replace("_", "-"))
        assert param.opts == [flag, *ALIASES.get(dotted, [])], dotted
        annotation = _without_none(field.annotation)
        if dotted in KEY_VALUES:  # repeatable KEY=VALUE; None: the model's default
            assert param.multiple and param.default is None and param.metavar == "KEY=VALUE", dotted
            assert param.help.startswith(f"{escape(field.description)} (KEY=VALUE"), dotted
            if dataclasses.is_dataclass(annotation):
                assert param.help.endswith(", ".join(f.name for f in dataclasses.fields(annotation)) + ")"), dotted
            elif issubclass(annotation, BaseModel):
                assert param.help.endswith(", ".join(annotation.model_fields) + ")"), dotted
            continue
        assert param.help == escape(field.description) and param.default == default, dotted  # shown as written
        shown = param.get_help_record(ctx)[0]  # what --help shows after the flags
        if get_origin(annotation) is Literal:
            assert shown.endswith("<" + "|".join(get_args(annotation)) + ">"), dotted
        elif get_origin(annotation) is list:
            item = get_args(annotation)[0]
            assert param.multiple, dotted
            if get_origin(item) is Literal:  # typer takes no list of choices: the model checks, the metavar shows
                assert param.metavar == "|".join(get_args(item)) + ",...", dotted
        elif annotation is bool:
            assert param.is_flag and param.secondary_opts == [f"--no-{flag[2:]}"], dotted
        elif annotation in (int, float):  # bounds: the model's ge/le
            low = next((m.ge for m in field.metadata if isinstance(m, annotated_types.Ge)), None)
            high = next((m.le for m in field.metadata if isinstance(m, annotated_types.Le)), None)
            assert (param.min, param.max) == (low, high), dotted
    assert (
        params["render__engine"].rich_help_panel == "Render" and params["score__previews"].rich_help_panel == "Score"
    )
    assert params["geometry__num_frames"].min == 2 and params["max_failure_ratio"].max == 1


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> list[tuple[RunConfig, dict]]:
    """``vpf run`` up to the run: the validated config (and task-runner arguments), then a completed summary; the
    options are parsed and validated as usual, the model folders they name are not opened."""
    from flows.build_pairs import RunSummary

    calls: list[tuple[RunConfig, dict]] = []

    def run_factory(config: RunConfig, **kwargs: Any) -> RunSummary:
        calls.append((config, kwargs))
        return RunSummary(run_id="r", status="completed", catalog="memory://x", counts={}, failures_by_reason={},
                          elapsed_s=0.0)  # fmt: skip

    monkeypatch.setattr(cli_factory, "run_factory", run_factory)
    # the model folders named here do not exist: their up-front check has its own tests (test_run_annotate_checks.py)
    monkeypatch.setattr("tasks.annotate.specs.check_annotation", lambda config: None)
    return calls


def _run(*args: str):
    return CliRunner().invoke(app, ["run", "clips/", "--catalog", "memory://x", *args])


def test_no_options_give_the_models_defaults(captured) -> None:
    result = _run("--json")
    assert result.exit_code == 0, result.output
    [(config, kwargs)] = captured
    assert config == RunConfig(source="clips/", catalog="memory://x") and kwargs == {"task_runner": "default",
                                                                                     "workers": None}  # fmt: skip
    for part in NESTED:  # nothing set that was not given: defaults that follow other settings still follow them
        assert getattr(config, part).model_fields_set == set(), part
    assert set(config.model_fields_set) == {"source", "catalog"}


def test_the_old_flags_are_aliases_of_the_new(captured) -> None:
    old = ["--frames", "17", "--root", "/a", "--edit-type", "remove", "--engine-option", "base=/m",
           "--engine-option", "steps=30", "--accept", "min_psnr_bg=28", "--accept", "reject_flags=[]"]  # fmt: skip
    new = ["--num-frames", "17", "--roots", "/a", "--edit-types", "remove", "--engine-options", "base=/m",
           "--engine-options", "steps=30", "--accept-rule", "min_psnr_bg=28", "--accept-rule", "reject_flags=[]"]  # fmt: skip
    for args in (old, new):
        assert _run(*args).exit_code == 0
    (a, _), (b, _) = captured
    assert a == b
    assert (a.geometry.num_frames, a.roots, a.edit_types) == (17, ["/a"], ["remove"])
    assert a.render.engine_options == {"base": "/m", "steps": 30}
    assert (a.score.accept_rule.min_psnr_bg, a.score.accept_rule.reject_flags) == (28, [])
    assert a.score.accept_rule.max_seam_error == RunConfig(source="x").score.accept_rule.max_seam_error


def test_flags_reach_every_part(captured) -> None:
    result = _run(
        "--limit", "3", "--batch-size", "2", "--segmenter", "sam3:/m", "--proposer", "openai:http://h/v1",
        "--height", "64", "--width", "96", "--fps", "4", "--resize-mode", "crop", "--render-deployment", "render/gpu",
        "--seed", "7", "--judge", "openai:http://h/v1#m", "--clip-weights", "/clip", "--vocab", "v.txt",
        "--captioner", "transformers:/vlm", "--tagger", "openai:http://h/v1#m", "--select", "min_motion=0.5",
        "--select", "max_reappearances=null", "--rerender", "--no-gallery", "--no-previews", "--score-workers", "0",
        "--dilation-radius", "12", "--gpu-slots", "2", "--ingest-in-flight", "3", "--render-in-flight", "8",
        "--max-failure-ratio", "0.1", "--no-vocab-from-caption", "--edit-type", "remove,add",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    [(c, _)] = captured
    assert (c.limit, c.batch_size, c.segmenter, c.proposer) == (3, 2, "sam3:/m", "openai:http://h/v1")
    assert (c.geometry.height, c.geometry.width, c.geometry.fps, c.geometry.resize_mode) == (64, 96, 4.0, "crop")
    assert (c.render_deployment, c.render.seed, c.render.rerender, c.render.dilation_radius) == ("render/gpu", 7,
                                                                                                 True, 12)  # fmt: skip
    assert (c.render.gpu_slots, c.ingest_in_flight, c.render_in_flight, c.max_failure_ratio) == (2, 3, 8, 0.1)
    assert (c.score.judge, c.score.clip_weights, c.score.previews, c.score.workers) == ("openai:http://h/v1#m",
                                                                                        "/clip", False, 0)  # fmt: skip
    a = c.annotate
    assert (a.vocab, a.captioner, a.tagger, a.vocab_from_caption) == ("v.txt", "transformers:/vlm",
                                                                      "openai:http://h/v1#m", False)  # fmt: skip
    assert (a.select.min_motion, a.select.max_reappearances, a.select.min_area) == (0.5, None, 0.01)
    assert (c.gallery, c.edit_types) == (False, ["remove", "add"])
    assert c.score.reseg_segmenter == "sam3:/m"  # unset: the run's open-vocabulary segmenter


def test_set_reaches_nested_settings_on_top_of_the_options(captured) -> None:
    result = _run(
        "--segmenter", "sam3:/m", "--set", "score.reseg_segmenter=null", "--set", "render.dilation_radius=12",
        "--accept", "min_psnr_bg=28", "--set", "score.accept_rule.min_psnr_bg=25", "--seed", "1",
        "--set", "render.seed=2", "--set", "annotate.select.min_motion=0.5", "--set", "max_failure_ratio=0.1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    [(c, _)] = captured
    assert c.score.reseg_segmenter is None and c.render.dilation_radius == 12
    assert (c.score.accept_rule.min_psnr_bg, c.render.seed) == (25, 2)  # --set comes last
    assert (c.annotate.select.min_motion, c.max_failure_ratio) == (0.5, 0.1)


@pytest.mark.parametrize(
    ("args", "hint", "message"),
    [
        (["--height", "63"], "'--height'", "63 is odd"),
        (["--frames", "1"], "'--num-frames' / '--frames'", ""),
        (["--engine", "gpt"], "'--engine'", "'gpt' is not one of 'auto'"),
        (["--resize-mode", "stretch"], "'--resize-mode'", "stretch"),
        (["--segmenter", "magic"], "'--segmenter'", "magic"),
        (["--proposer", "gpt"], "'--proposer'", "expected template"),
        (["--edit-type", "remove,bogus"], "'--edit-types' / '--edit-type'", "'bogus'"),
        (["--accept", "min_psnr=3"], "'--accept-rule' / '--accept'", "min_psnr"),
        (["--accept", "min_psnr_bg"], "'--accept-rule' / '--accept'", "expected KEY=VALUE"),
        (["--engine-option", "=1"], "'--engine-options' / '--engine-option'", "expected KEY=VALUE"),
        (["--select", "min_blur=3"], "'--select'", "min_blur: Extra inputs are not permitted"),
        (["--select", "min_area=0.5", "--select", "max_area=0.1"], "'--select'", "min_area 0.5 > max_area 0.1"),
        (["--captioner", "llava:/m"], "'--captioner'", "expected transformers:PATH"),
        (["--judge", "gpt"], "'--judge'", "expected openai:URL#MODEL"),
        (["--reseg-segmenter", "sam:/m.pth"], "'--reseg-segmenter'", "open-vocabulary"),
        (["--aesthetic-clip", "/clip"], "'--aesthetic-clip'", "go together"),
        (["--score-workers", "-1"], "'--score-workers'", ""),
        (["--max-failure-ratio", "2"], "'--max-failure-ratio'", ""),
        (["--set", "colour=red"], "'--set'", "colour: Extra inputs are not permitted"),
        (["--set", "render.seed=x"], "'--seed'", "valid integer"),
        (["--set", "limit.x=1"], "'--set'", "limit is not a group of settings"),
        (["--workers", "2"], "'--workers'", "add --task-runner dask|ray"),
    ],
)
def test_a_refused_value_is_a_usage_error_naming_the_option(captured, args: list[str], hint: str, message: str):
    result = _run(*args)
    assert result.exit_code == 2 and not captured, result.output
    text = " ".join(result.stderr.replace("│", " ").split())
    assert f"Invalid value for {hint}:" in text and message in text, text


def test_exit_codes_of_the_run(monkeypatch: pytest.MonkeyPatch, captured) -> None:
    from flows.build_pairs import RunSummary
    from tasks.annotate.specs import NoMasksError

    def finished(status: str):
        def run_factory(config: RunConfig, **kwargs: Any) -> RunSummary:
            return RunSummary(run_id="r", status=status, catalog="memory://x", counts={}, failures_by_reason={},
                              elapsed_s=0.0)  # fmt: skip

        return run_factory

    def raises(exc: Exception):
        def run_factory(config: RunConfig, **kwargs: Any) -> RunSummary:
            raise exc

        return run_factory

    for factory, code in ((finished("completed"), 0), (finished("completed_with_failures"), 3),
                          (finished("failed"), 1), (raises(NoMasksError("no masks")), 2),
                          (raises(RuntimeError("boom")), 1)):  # fmt: skip
        monkeypatch.setattr(cli_factory, "run_factory", factory)
        assert _run().exit_code == code


def test_demo_takes_the_run_options_with_its_own_sizes() -> None:
    params = {p.name: p for p in get_command(app).commands["demo"].params}
    run = _params()
    ctx = click.Context(get_command(app).commands["demo"])
    assert params["engine"].get_help_record(ctx)[0].endswith("<" + "|".join(ENGINE_NAMES) + ">")  # the registry's
    assert (params["engine"].default, params["engine"].help) == (
        run["render__engine"].default,
        run["render__engine"].help,
    )
    assert [params[n].default for n in ("frames", "height", "width")] == [25, 240, 368]
    assert params["frames"].opts == ["--frames"] and params["frames"].min == run["geometry__num_frames"].min


def test_task_runner_choices_are_the_runners() -> None:
    from flows.runners import TASK_RUNNERS

    assert tuple(c.value for c in cli_factory.TaskRunnerChoice) == TASK_RUNNERS
