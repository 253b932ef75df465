"""``flows.model_options``: a typer command whose options are a pydantic model's fields (names, help, defaults,
choices, bounds, flags, lists, nested models), validated into one model instance; errors name the option."""

from __future__ import annotations

import dataclasses
import inspect
from enum import Enum
from typing import Annotated, Any, Literal

import pytest
import typer
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from typer.main import get_command
from typer.testing import CliRunner

from flows.model_options import field_options, model_options


class Color(str, Enum):
    red = "red"
    blue = "blue"


class Inner(BaseModel):
    model_config = ConfigDict(extra="forbid")

    engine: Literal["fast", "slow"] = Field("fast", description="The engine.")
    steps: int = Field(10, ge=1, le=100, description="Steps.")
    previews: bool = Field(True, description="Write previews.")


class Toy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="A name.")
    kind: Literal["x", "y"] | None = Field(None, description="A kind.")
    tags: list[str] | None = Field(None, description="Tags.")
    picks: list[Literal["p", "q"]] = Field(["p"], description="Picks.")
    ratio: float = Field(0.5, gt=0, le=1, description="A ratio.")
    count: int | None = Field(None, gt=0, description="A count.")
    color: Color = Field(Color.red, description="A colour.")
    verbose: bool = Field(False, description="Talk.")
    inner: Inner = Field(default_factory=lambda: Inner(engine="slow"), description="Nested settings.")
    extra: dict[str, int] = Field(default_factory=dict, description="Integers by name.")

    @field_validator("name")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("name must not be blank")
        return value


received: list[tuple[Toy, str]] = []
app = typer.Typer(context_settings={"help_option_names": ["-h", "--help"]})


@app.command("toy")
@model_options(Toy, exclude={"extra"}, aliases={"kind": ["-k"]})
def toy_command(config: Toy, out: Annotated[str, typer.Option("--out", help="Where to.")] = "here") -> None:
    """Run the toy."""
    received.append((config, out))


@app.command("other")
def other_command() -> None:
    """A second command, so that ``toy`` is a subcommand."""


def run(*args: str):
    received.clear()
    return CliRunner().invoke(app, ["toy", *args])


def test_the_options_are_the_fields() -> None:
    params = {p.name: p for p in get_command(app).commands["toy"].params}
    assert set(params) - {"help"} == {
        "name", "kind", "tags", "picks", "ratio", "count", "color", "verbose", "inner__engine", "inner__steps",
        "inner__previews", "out",
    }  # fmt: skip
    assert params["name"].required and params["name"].help == "A name."
    assert params["kind"].opts == ["--kind", "-k"] and params["kind"].default is None
    assert params["picks"].multiple and params["picks"].default == ["p"] and params["picks"].metavar == "p|q,..."
    assert params["verbose"].is_flag and params["verbose"].secondary_opts == ["--no-verbose"]
    assert (
        params["count"].min == 1 and params["ratio"].min is None and params["ratio"].max == 1
    )  # gt on a float: the model checks
    assert params["inner__steps"].opts == ["--inner-steps"] and (
        params["inner__steps"].min,
        params["inner__steps"].max,
    ) == (1, 100)
    assert params["inner__engine"].default == "slow"  # the nested field's default instance
    assert params["inner__previews"].secondary_opts == ["--no-inner-previews"]
    assert params["color"].default is Color.red
    assert list(inspect.signature(toy_command).parameters)[-1] == "out"  # the model's place, then the others
    assert [o.dotted for o in toy_command.options][-3:] == ["inner.engine", "inner.steps", "inner.previews"]


def test_values_build_one_validated_model() -> None:
    result = run("--name", "n")
    assert result.exit_code == 0, result.output
    [(config, out)] = received
    assert config == Toy(name="n") and out == "here"
    result = run(
        "--name", "n", "-k", "y", "--tags", "a", "--tags", "b, c", "--picks", "q,p", "--ratio", "0.25", "--count",
        "3", "--color", "blue", "--verbose", "--inner-steps", "5", "--no-inner-previews", "--out", "there",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    [(config, out)] = received
    assert out == "there"
    assert config == Toy(
        name="n", kind="y", tags=["a", "b", "c"], picks=["q", "p"], ratio=0.25, count=3, color=Color.blue,
        verbose=True, inner=Inner(engine="slow", steps=5, previews=False),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "option", "message"),
    [
        (["--kind", "z"], "--kind", "z"),
        (["--picks", "p,z"], "--picks", "'z': Input should be 'p' or 'q'"),
        (["--ratio", "0"], "--ratio", "greater than 0"),
        (["--count", "0"], "--count", ""),
        (["--inner-steps", "101"], "--inner-steps", ""),
        (["--inner-engine", "warp"], "--inner-engine", "warp"),
        (["--name", " "], "--name", "name must not be blank"),
    ],
)
def test_a_refused_value_is_a_usage_error_naming_the_option(args: list[str], option: str, message: str) -> None:
    result = run(*(["--name", "n"] if "--name" not in args else []), *args)
    assert result.exit_code == 2 and not received
    assert f"'{option}'" in result.stderr and message in " ".join(result.stderr.replace("│", " ").split())


def test_fields_without_a_command_line_form_must_be_excluded() -> None:
    @dataclasses.dataclass
    class Pair:
        low: int = 0

    class WithPair(BaseModel):
        pair: Pair = Pair()

    with pytest.raises(TypeError, match="WithPair.pair"):  # a dataclass is a KEY=VALUE option only when asked
        field_options(WithPair)
    assert [o.flag for o in field_options(WithPair, key_values={"pair"})] == ["--pair"]

    class Either(BaseModel):
        value: int | str = 0

    with pytest.raises(TypeError, match="Either.value"):
        field_options(Either)
    assert field_options(Either, exclude={"value"}) == []
    assert [o.dotted for o in field_options(Toy, exclude={"extra", "inner.steps", "tags"})] == [
        "name", "kind", "picks", "ratio", "count", "color", "verbose", "inner.engine", "inner.previews",
    ]  # fmt: skip
    [extra] = [o for o in field_options(Toy) if o.dotted == "extra"]  # a mapping: repeatable KEY=VALUE
    assert extra.is_key_value and extra.flag == "--extra" and extra.default is None


def test_decorating_checks_names() -> None:
    with pytest.raises(ValueError, match="name"):

        @model_options(Toy, exclude={"extra"})
        def clash(config: Toy, name: str = "") -> None: ...

    with pytest.raises(ValueError, match="aliases for no option"):

        @model_options(Toy, exclude={"extra"}, aliases={"nope": ["-n"]})
        def unknown_alias(config: Toy) -> None: ...

    with pytest.raises(TypeError, match="no parameter annotated Toy"):

        @model_options(Toy, exclude={"extra"})
        def no_model(other: int = 0) -> None: ...


@dataclasses.dataclass
class Rule:
    low: float = 0.1
    high: float | None = None


class Part(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workers: int = Field(1, ge=0, description="Part workers.")
    steps: int = Field(3, description="Part steps.")
    rule: Rule = Field(default_factory=lambda: Rule(high=0.9), description="A rule.")
    knobs: dict[str, Any] = Field(default_factory=dict, description="Knobs.")
    hint: str | None = Field(None, description="Left unset, follows the name.")


class Other(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: int = Field(5, description="Other steps.")


class Job(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="Where from.")
    name: str = Field("job", description="A name.")
    part: Part = Field(default_factory=Part)
    other: Other = Field(default_factory=Other, title="Elsewhere")

    @model_validator(mode="after")
    def _hint_follows_the_name(self) -> "Job":
        if "hint" not in self.part.model_fields_set:
            self.part.hint = self.name
        return self


jobs: list[tuple[Job, str]] = []


@app.command("job")
@model_options(
    Job, from_params={"source": "source"}, overrides="settings", flatten={"part", "other"}, key_values={"part.rule"},
    aliases={"part.rule": ["--r"]},
)  # fmt: skip
def job_command(
    source: Annotated[str, typer.Argument()],
    job: Job,
    settings: Annotated[list[str] | None, typer.Option("--set", help="KEY=VALUE of any field.")] = None,
    workers: Annotated[int, typer.Option("--workers", help="The command's own.")] = 0,
) -> None:
    """Run a job."""
    jobs.append((job, source))


def run_job(*args: str):
    jobs.clear()
    return CliRunner().invoke(app, ["job", *args])


def test_flattened_groups_take_bare_flags_unless_two_options_would_share_one() -> None:
    params = {p.name: p for p in get_command(app).commands["job"].params}
    flags = {name: p.opts for name, p in params.items()}
    assert flags["part__steps"] == ["--part-steps"] and flags["other__steps"] == ["--other-steps"]  # two groups
    assert flags["part__workers"] == ["--part-workers"] and flags["workers"] == ["--workers"]  # the command's own
    assert flags["part__hint"] == ["--hint"] and flags["part__knobs"] == ["--knobs"] and flags["name"] == ["--name"]
    assert flags["part__rule"] == ["--rule", "--r"] and "source" in params and "settings" in params
    assert (params["part__hint"].rich_help_panel, params["other__steps"].rich_help_panel) == ("Part", "Elsewhere")
    assert (
        params["part__rule"].help.startswith("A rule. (KEY=VALUE") and "keys: low, high" in params["part__rule"].help
    )
    with pytest.raises(ValueError, match="flatten names no nested model 'name'"):
        field_options(Job, flatten={"name"})
    with pytest.raises(ValueError, match="key_values names no field 'part.nope'"):
        field_options(Job, key_values={"part.nope"})
    with pytest.raises(ValueError, match=r"flags \['--part-hint'\] name several options"):  # --hint, then taken
        field_options(
            Job, flatten={"part"}, key_values={"part.rule"}, aliases={"name": ["--hint"]}, reserved={"--part-hint"}
        )


def test_key_values_parameters_and_overrides_build_one_model() -> None:
    result = run_job("src")
    assert result.exit_code == 0, result.output
    [(job, source)] = jobs
    assert source == "src" and job == Job(source="src") and job.part.hint == "job"  # an unset field stays unset
    assert job.part.rule == Rule(high=0.9)
    result = run_job(
        "src", "--rule", "low=0.5", "--knobs", "a=1", "--knobs", "b=x", "--knobs", "c=null", "--set", "part.steps=9",
        "--set", "part.rule.high=null", "--set", 'name="n"', "--hint", "h", "--other-steps", "6", "--workers", "2",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    [(job, _)] = jobs
    assert job.part.rule == Rule(low=0.5, high=None)  # on top of the field's default instance
    assert job.part.knobs == {"a": 1, "b": "x", "c": None} and (job.part.steps, job.other.steps) == (9, 6)
    assert (job.name, job.part.hint) == ("n", "h")
    assert job_command.build({"source": "s"}, [("part.steps", 4)]) == Job(source="s", part=Part(steps=4))


@pytest.mark.parametrize(
    ("args", "hint", "message"),
    [
        (["--rule", "lo=1"], "'--rule' / '--r'", "lo"),
        (["--r", "low=x"], "'--rule' / '--r'", "low: Input should be a valid number"),
        (["--knobs", "nokey"], "'--knobs'", "'nokey': expected KEY=VALUE"),
        (["--part-workers", "-1"], "'--part-workers'", ""),
        (["--set", "colour=1"], "'--set'", "colour: Extra inputs are not permitted"),
        (["--set", "oops"], "'--set'", "'oops': expected KEY=VALUE"),
        (["--set", "name.x=1"], "'--set'", "name.x: name is not a group of settings"),
        (["--set", "part.steps=x"], "'--part-steps'", "valid integer"),
    ],
)
def test_errors_name_the_option_the_parameter_or_the_overrides(args: list[str], hint: str, message: str) -> None:
    result = run_job("src", *args)
    assert result.exit_code == 2 and not jobs, result.output
    text = " ".join(result.stderr.replace("│", " ").split())
    assert f"Invalid value for {hint}: " in text and message in text
    with pytest.raises(typer.BadParameter) as info:
        job_command.build({"source": 3})
    assert info.value.param_hint == ["SOURCE"]  # a field filled by a parameter names that parameter
