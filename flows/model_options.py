"""Typer options derived from a pydantic model: a command's option names, defaults, choices and help are the
model's fields' and are written nowhere else.

``@model_options(Model)`` puts one option per field (see ``field_options``) in place of the command's parameter
annotated ``Model``; the command validates the model once and receives the instance, and a refused value is a usage
error (exit code 2) naming its option. Nested models flatten into prefixed options (or bare ones, ``flatten``);
mappings and ``key_values`` fields are repeatable ``KEY=VALUE`` options; other parameters of the command may fill
fields (``from_params``) or set any field by dotted key on top (``overrides``).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import types
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin

import annotated_types
import typer
from pydantic import BaseModel, ValidationError
from rich.markup import escape
from typer.models import ArgumentInfo, OptionInfo, ParameterInfo


F = TypeVar("F", bound=Callable[..., Any])
M = TypeVar("M", bound=BaseModel)

SCALARS: tuple[type, ...] = (str, int, float, bool, Path)
SEQUENCES: tuple[type, ...] = (list, tuple, set, frozenset)
MAPPINGS: tuple[type, ...] = (dict, Mapping)
EMPTY = inspect.Parameter.empty
KEY_VALUE = "KEY=VALUE"
HELP_FLAGS = frozenset({"--help", "-h"})


@dataclass(frozen=True)
class FieldOption:
    """One model field as a command-line option."""

    path: tuple[str, ...]  # the keys from the top model down to the field (``("render", "engine")``)
    dotted: str  # the field names joined by dots (``render.engine``): how ``exclude`` and ``aliases`` name it
    name: str  # the command parameter's name (``render__engine``)
    flag: str  # ``--render-engine`` (``--engine`` where ``render`` is flattened)
    annotation: Any  # what typer parses: a scalar, a Literal or list[str], ``| None`` where optional
    default: Any  # ``inspect.Parameter.empty``: required; None for a KEY=VALUE option (the model's default)
    help: str | None
    choices: tuple[Any, ...] | None
    is_list: bool
    is_bool: bool
    minimum: float | None = None
    maximum: float | None = None
    panel: str | None = None
    is_key_value: bool = False  # repeatable KEY=VALUE, gathered into a dict
    aliases: tuple[str, ...] = ()

    @property
    def flags(self) -> tuple[str, ...]:
        """The option's names: its flag, then its aliases (how an error names it)."""
        return (self.flag, *self.aliases)

    def info(self, flags: Sequence[str] = ()) -> OptionInfo:
        """The ``typer.Option`` of this field, under ``flags`` (default: the flag, ``--x/--no-x`` for a bool, and
        the aliases)."""
        decls = list(flags) or self._decls()
        if self.is_key_value:
            metavar: str | None = KEY_VALUE
        elif self.is_list:
            metavar = "|".join(str(c) for c in self.choices) + ",..." if self.choices else "VALUE,..."
        else:
            metavar = None
        return typer.Option(
            *decls,
            help=escape(self.help) if self.help else None,  # descriptions are plain text: "[#k=v]" is no markup
            min=self.minimum,
            max=self.maximum,
            metavar=metavar,
            rich_help_panel=self.panel,
            show_default=not self.is_key_value,
        )

    def annotated(self, *flags: str) -> Any:
        """``Annotated[type, typer.Option(...)]``: this field as another command's parameter (under ``flags``, with
        that command's default)."""
        return Annotated[self.annotation, self.info(flags)]

    def parameter(self, aliases: Sequence[str] = ()) -> inspect.Parameter:
        """The keyword-only parameter typer reads (``Annotated[type, typer.Option(...)]``), with extra ``aliases``."""
        return inspect.Parameter(
            self.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=self.default,
            annotation=Annotated[self.annotation, self.info([*self._decls(), *aliases])],
        )

    def _decls(self) -> list[str]:
        return [f"{self.flag}/--no-{self.flag[2:]}" if self.is_bool else self.flag, *self.aliases]


def _strip_annotated(annotation: Any) -> Any:
    while get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    return annotation


def _optional(annotation: Any) -> tuple[Any, bool]:
    """``X | None`` → ``(X, True)``; ``X`` → ``(X, False)``; other unions raise ``TypeError``."""
    annotation = _strip_annotated(annotation)
    if get_origin(annotation) not in (Union, types.UnionType):
        return annotation, False
    args = [a for a in get_args(annotation) if a is not type(None)]
    if len(args) != 1:
        raise TypeError(f"{annotation} is a union of several types")
    return _strip_annotated(args[0]), True


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _is_mapping(annotation: Any) -> bool:
    return annotation in MAPPINGS or get_origin(annotation) in MAPPINGS


def _keys(annotation: Any) -> tuple[str, ...] | None:
    """The keys of a model or dataclass type (None for anything else)."""
    if _is_model(annotation):
        return tuple(f.alias or name for name, f in annotation.model_fields.items())
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        return tuple(f.name for f in dataclasses.fields(annotation))
    return None


def _choices(annotation: Any) -> tuple[Any, ...] | None:
    if get_origin(annotation) is Literal:
        return get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, Enum):
        return tuple(member.value for member in annotation)
    return None


def _bounds(metadata: Sequence[Any], integer: bool) -> tuple[float | None, float | None]:
    """``min``/``max`` from the field's ``ge``/``le`` (``gt``/``lt`` only on integers, where they are exact)."""
    low = high = None
    for item in metadata:
        if isinstance(item, annotated_types.Ge):
            low = item.ge
        elif isinstance(item, annotated_types.Gt) and integer:
            low = item.gt + 1
        elif isinstance(item, annotated_types.Le):
            high = item.le
        elif isinstance(item, annotated_types.Lt) and integer:
            high = item.lt - 1
    return low, high


def _key_value_help(description: str | None, keys: Sequence[str] | None) -> str:
    notes = f"{KEY_VALUE}, repeat; values: JSON or strings, null = None"
    notes += f"; keys: {', '.join(keys)}" if keys else ""
    return f"{description} ({notes})" if description else notes


def _field_default(field: Any) -> Any:
    return None if field.is_required() else field.get_default(call_default_factory=True)


def _lookup(model: type[BaseModel], dotted: str) -> Any:
    """The ``FieldInfo`` at ``dotted`` (field names through nested models), or None."""
    field = None
    owner: Any = model
    for name in dotted.split("."):
        if not _is_model(owner) or name not in owner.model_fields:
            return None
        field = owner.model_fields[name]
        try:
            owner = _optional(field.annotation)[0]
        except TypeError:
            owner = None
    return field


@dataclass(frozen=True)
class _Walk:
    exclude: Collection[str]
    flatten: Collection[str]
    key_values: Collection[str]
    aliases: Mapping[str, Sequence[str]]


def _collect(
    model: type[BaseModel],
    walk: _Walk,
    path: tuple[str, ...] = (),
    names: tuple[str, ...] = (),
    defaults: BaseModel | None = None,
    panel: str | None = None,
) -> list[tuple[FieldOption, str]]:
    """Each field's option with its bare flag (flattened groups left out), paired with its full flag."""
    found: list[tuple[FieldOption, str]] = []
    for name, field in model.model_fields.items():
        dotted = ".".join((*names, name))
        if dotted in walk.exclude:
            continue
        key = field.alias or name
        if defaults is not None:
            default = getattr(defaults, name)
        elif field.is_required():
            default = EMPTY
        else:
            default = field.get_default(call_default_factory=True)
        where = f"{model.__name__}.{name}"
        try:
            inner, optional = _optional(field.annotation)
        except TypeError as exc:
            raise TypeError(f"{where}: {exc}; exclude it") from None
        kept = [n for i, n in enumerate((*names, name)) if ".".join((*names, name)[: i + 1]) not in walk.flatten]
        common: dict[str, Any] = {
            "path": (*path, key),
            "dotted": dotted,
            "name": "__".join((*names, name)),
            "flag": "--" + "-".join(kept).replace("_", "-"),
            "help": field.description,
            "panel": panel,
            "aliases": tuple(walk.aliases.get(dotted, ())),
        }
        full = "--" + "-".join((*names, name)).replace("_", "-")
        if dotted in walk.key_values or _is_mapping(inner):
            keys = _keys(inner)
            if keys is None and not _is_mapping(inner):
                raise TypeError(f"{where}: {inner} is not a model, dataclass or mapping: it has no {KEY_VALUE} form")
            option = FieldOption(
                **{**common, "help": _key_value_help(field.description, keys)},
                annotation=list[str] | None,
                default=None,
                choices=None,
                is_list=False,
                is_bool=False,
                is_key_value=True,
            )
            found.append((option, full))
            continue
        if _is_model(inner):
            if optional:
                raise TypeError(f"{where}: an optional nested model has no command-line form; exclude it")
            title = field.title or name.replace("_", " ").capitalize()
            found += _collect(
                inner, walk, (*path, key), (*names, name), default if isinstance(default, BaseModel) else None,
                panel or title,
            )  # fmt: skip
            continue
        is_list = get_origin(inner) in SEQUENCES
        if is_list:
            args = [a for a in get_args(inner) if a is not Ellipsis]
            item = _strip_annotated(args[0]) if len(args) == 1 else None
            choices = _choices(item)
            if item is None or (choices is None and item not in SCALARS):
                raise TypeError(f"{where}: {inner} has no command-line form; exclude it")
            annotation: Any = list[str]  # split at commas here, converted by the model
            if default is not EMPTY and default is not None:
                default = [c.value if isinstance(c, Enum) else c for c in default]
        else:
            choices = _choices(inner)
            if choices is None and inner not in SCALARS:
                raise TypeError(f"{where}: {inner} has no command-line form; exclude it")
            annotation = inner
        low, high = _bounds(field.metadata, inner is int) if inner in (int, float) else (None, None)
        option = FieldOption(
            **common,
            annotation=annotation | None if optional else annotation,
            default=default,
            choices=choices,
            is_list=is_list,
            is_bool=inner is bool,
            minimum=low,
            maximum=high,
        )
        found.append((option, full))
    return found


def _forms(flag: str, is_bool: bool) -> tuple[str, ...]:
    return (flag, f"--no-{flag[2:]}") if is_bool else (flag,)


def field_options(
    model: type[BaseModel],
    *,
    exclude: Collection[str] = (),
    flatten: Collection[str] = (),
    key_values: Collection[str] = (),
    aliases: Mapping[str, Sequence[str]] | None = None,
    reserved: Collection[str] = (),
) -> list[FieldOption]:
    """The options of ``model``'s fields, in field order. Fields are named by dotted paths (``render.engine``).

    - flag: the field's name as ``--kebab-case``; a nested model's fields as ``--<field>-<subfield>`` under a help
      panel of their own (the field's title, else its name), or without the ``<field>-`` part when ``flatten``
      names that nested field; a flattened flag that would name two options (another option's flag, an alias, one
      of ``reserved``: the command's own flags) takes its prefixed form instead;
    - help: the field's ``description``; default: the field's default (a nested model's default instance's values);
    - ``Literal`` (and ``Enum``) fields: their values as choices; ``bool``: ``--x/--no-x``; ``X | None``: optional;
    - lists (tuples, sets): repeatable options whose values are also split at commas (``--x a,b`` = ``--x a --x b``);
    - ``int``/``float`` with ``ge``/``le`` bounds (and ``gt``/``lt`` on ints): the option's ``min``/``max``;
    - mappings, and the models or dataclasses ``key_values`` names: one repeatable ``KEY=VALUE`` option (default
      None: the model's default), its help listing a model's or dataclass's keys;
    - ``exclude`` leaves fields out; ``aliases`` adds names to an option (``{"format": ["-f"]}``).

    Raises ``TypeError`` for a field without a command-line form (a union of several types, an optional nested
    model, a dataclass not in ``key_values``), ``ValueError`` for names that match no field or flags that clash.
    """
    aliases = dict(aliases or {})
    for dotted in flatten:
        field = _lookup(model, dotted)
        if field is None or not _is_model(_strip_annotated(field.annotation)) or dotted in key_values:
            raise ValueError(f"{model.__name__}: flatten names no nested model {dotted!r}")
    for dotted in key_values:
        if _lookup(model, dotted) is None:
            raise ValueError(f"{model.__name__}: key_values names no field {dotted!r}")
    found = _collect(model, _Walk(exclude, flatten, key_values, aliases))
    unknown = set(aliases) - {option.dotted for option, _ in found}
    if unknown:
        raise ValueError(f"{model.__name__}: aliases for no option: {sorted(unknown)}")
    claimed = Counter(set(reserved))
    for option, _ in found:
        claimed.update([*_forms(option.flag, option.is_bool), *option.aliases])
    options = [
        dataclasses.replace(option, flag=full)
        if option.flag != full and any(claimed[f] > 1 for f in _forms(option.flag, option.is_bool))
        else option
        for option, full in found
    ]
    final = Counter(set(reserved))
    for option in options:
        final.update([*_forms(option.flag, option.is_bool), *option.aliases])
    clashes = sorted(flag for flag, n in final.items() if n > 1)
    if clashes:
        raise ValueError(f"{model.__name__}: flags {clashes} name several options")
    return options


def parse_key_values(pairs: Iterable[str] | None, option: str | Sequence[str]) -> dict[str, Any]:
    """``["base=/models/cog", "steps=30"]`` → ``{"base": "/models/cog", "steps": 30}`` (a value is JSON when it
    parses as JSON, ``null`` → None, else a string). A pair without ``=`` or key is a usage error naming
    ``option``."""
    parsed: dict[str, Any] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{pair!r}: expected {KEY_VALUE}", param_hint=option)
        try:
            parsed[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key.strip()] = value
    return parsed


def _split_commas(values: Sequence[Any]) -> list[str]:
    return [part.strip() for value in values for part in str(value).split(",") if part.strip()]


def _start(value: Any) -> dict[str, Any]:
    """A group of settings as a dict to set keys in: a model's set fields (the unset ones keep their defaults and
    stay unset), a dataclass's fields that differ from the dataclass's own defaults (the others it fills itself, so
    the keys of the dict are exactly what was set), a mapping's items; anything else: empty."""
    if isinstance(value, BaseModel):
        fields = type(value).model_fields
        return {(fields[name].alias or name): getattr(value, name) for name in value.model_fields_set}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: getattr(value, f.name)
            for f in dataclasses.fields(value)
            if getattr(value, f.name) != _own_default(f)
        }
    return dict(value) if isinstance(value, Mapping) else {}


def _own_default(field: dataclasses.Field) -> Any:
    """A dataclass field's default (``EMPTY`` for a field without one, which equals no value)."""
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return EMPTY


class _NotAGroup(Exception):
    pass


def _is_group(annotation: Any) -> bool:
    """A model, dataclass or mapping (optional or not): a field whose keys ``--set`` may name."""
    try:
        inner = _optional(annotation)[0]
    except TypeError:
        return False
    return _is_model(inner) or _is_mapping(inner) or _keys(inner) is not None


def _field_by_key(model: Any, key: str) -> Any:
    if not _is_model(model):
        return None
    return next((f for name, f in model.model_fields.items() if (f.alias or name) == key), None)


def _descend(data: dict[str, Any], model: type[BaseModel], keys: Sequence[str]) -> tuple[dict[str, Any], Any]:
    """The dict at ``keys`` in ``data`` (a copy, set in place; a missing group starts from its field's default) and
    the model it validates to (None past a mapping or dataclass). Raises ``_NotAGroup(key)`` at a plain value."""
    target: dict[str, Any] = data
    owner: Any = model
    for key in keys:
        field = _field_by_key(owner, key)
        child = target.get(key, EMPTY)
        if child is EMPTY:
            if field is not None and not _is_group(field.annotation):
                raise _NotAGroup(key)
            child = _start(_field_default(field)) if field is not None else {}
        elif isinstance(child, (BaseModel, Mapping)) or (
            dataclasses.is_dataclass(child) and not isinstance(child, type)
        ):
            child = _start(child)
        else:
            raise _NotAGroup(key)
        target[key] = child
        target = child
        owner = _optional(field.annotation)[0] if field is not None and _is_group(field.annotation) else None
    return target, owner


def option_data(model: type[BaseModel], options: Sequence[FieldOption], values: Mapping[str, Any]) -> dict[str, Any]:
    """A command's ``values`` (by parameter name) as nested data for ``model``: list values split at commas,
    ``KEY=VALUE`` pairs parsed into their group (on top of its default); a value equal to its option's default is
    left out, so the model's default applies and the field stays unset. Raises ``typer.BadParameter`` for a pair
    without ``=``."""
    data: dict[str, Any] = {}
    for option in options:
        value = values[option.name]
        if option.is_key_value:
            value = parse_key_values(value, list(option.flags))
            if not value:
                continue
        else:
            if option.is_list and value is not None:
                value = _split_commas(value)
            if option.default is not EMPTY and value == option.default:
                continue
        parent, owner = _descend(data, model, option.path[:-1])
        leaf = option.path[-1]
        if option.is_key_value:
            base = parent[leaf] if leaf in parent else _field_default(_field_by_key(owner, leaf))
            value = {**_start(base), **value}
        parent[leaf] = value
    return data


def build_model(model: type[M], options: Sequence[FieldOption], values: Mapping[str, Any]) -> M:
    """``model`` validated from a command's ``values`` (see ``option_data``). Raises ``pydantic.ValidationError``
    (or ``typer.BadParameter`` for a malformed ``KEY=VALUE``)."""
    return model.model_validate(option_data(model, options, values))


def _message(error: Mapping[str, Any], rest: Sequence[str]) -> str:
    """Pydantic's message without its "Value error, " prefix; an item of a list names the value it refuses, a key
    below the option (a ``KEY=VALUE`` key, a dotted ``--set`` key) names that key."""
    context = error.get("ctx") or {}
    message = str(context["error"]) if error["type"] == "value_error" and "error" in context else error["msg"]
    if any(isinstance(part, int) for part in error["loc"]):
        message = f"{error['input']!r}: {message}"
    return f"{'.'.join(rest)}: {message}" if rest else message


def _known_keys(model: type[BaseModel], path: Sequence[str]) -> list[str]:
    """The field names of the part of ``model`` at ``path`` (empty when ``path`` does not lead to a model)."""
    for key in path:
        field = model.model_fields.get(key)
        inner = _optional(field.annotation)[0] if field is not None else None
        if not _is_model(inner):
            return []
        model = inner
    return sorted(model.model_fields)


def _holds(data: Any, path: Sequence[str]) -> bool:
    for key in path:
        if not isinstance(data, Mapping) or key not in data:
            return False
        data = data[key]
    return True


def bad_parameter(
    exc: ValidationError,
    options: Sequence[FieldOption],
    *,
    others: Mapping[str, Sequence[str]] | None = None,
    fallback: str | None = None,
    data: Mapping[str, Any] | None = None,
    model: type[BaseModel] | None = None,
) -> typer.BadParameter:
    """``exc`` as one usage error naming the option(s) at fault: the deepest option on each error's path (all its
    flags), else ``others`` (dotted field → the names of the command parameter that fills it); an error of a whole
    nested model names the options below it that ``data`` (the values validated) holds; else ``fallback``. With
    ``model`` (the validated model), an unknown key names the known keys of the part it was given to."""
    names: dict[tuple[str, ...], tuple[str, ...]] = {option.path: option.flags for option in options}
    names |= {tuple(dotted.split(".")): tuple(flags) for dotted, flags in (others or {}).items()}
    problems: list[tuple[tuple[str, ...] | None, str]] = []
    for error in exc.errors(include_url=False):
        keys = tuple(part for part in error["loc"] if isinstance(part, str))
        path = keys
        while path and path not in names:
            path = path[:-1]
        flags = names.get(path) if path else None
        rest = keys[len(path) :] if flags else keys
        if flags is None and keys and data is not None:
            below = [
                f[0] for p, f in names.items() if len(p) > len(keys) and p[: len(keys)] == keys and _holds(data, p)
            ]
            flags, rest = (tuple(below), ()) if below else (None, rest)
        message = _message(error, rest)
        if error["type"] == "extra_forbidden" and model is not None and (known := _known_keys(model, keys[:-1])):
            message = f"{message}; known keys: {', '.join(known)}"  # "bogus: Extra inputs are not permitted; …"
        problems.append((flags or ((fallback,) if fallback else None), message))
    hints = list(dict.fromkeys(flags for flags, _ in problems))
    if len(hints) == 1 and hints[0] is not None:
        return typer.BadParameter("; ".join(m for _, m in problems), param_hint=list(hints[0]))
    return typer.BadParameter(
        "; ".join(f"{' / '.join(map(repr, flags))}: {m}" if flags else m for flags, m in problems)
    )


def validate_model(
    model: type[M],
    data: Mapping[str, Any],
    *,
    overrides: Iterable[tuple[str, Any]] = (),
    options: Sequence[FieldOption] = (),
    others: Mapping[str, Sequence[str]] | None = None,
    fallback: str | None = None,
) -> M:
    """``model`` validated from ``data`` (nested dicts) with ``overrides`` (dotted key, value) set on top; ``data``
    is not changed. Raises ``typer.BadParameter`` naming the option at fault (see ``bad_parameter``; ``fallback``
    also names a dotted key that leads through a plain value)."""
    data = dict(data)
    for dotted, value in overrides:
        *parents, key = dotted.split(".")
        try:
            parent, _ = _descend(data, model, parents)
        except _NotAGroup as exc:
            hint = [fallback] if fallback else None
            raise typer.BadParameter(f"{dotted}: {exc} is not a group of settings", param_hint=hint) from None
        parent[key] = value
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise bad_parameter(exc, options, others=others, fallback=fallback, data=data, model=model) from None


def _names_of(parameter: inspect.Parameter) -> tuple[str, ...]:
    """How typer names a command parameter on the command line: its flags (``--x``, ``--no-x`` of a bool), or the
    metavar of an argument."""
    info: ParameterInfo | None = None
    decls: list[str] = []
    if get_origin(parameter.annotation) is Annotated:
        found = [m for m in get_args(parameter.annotation)[1:] if isinstance(m, ParameterInfo)]
        info = found[-1] if found else None
        if isinstance(info, OptionInfo) and isinstance(info.default, str):  # ``Option("--x")``: its first name
            decls.append(info.default)
    if info is None and isinstance(parameter.default, ParameterInfo):
        info = parameter.default
    if isinstance(info, ArgumentInfo) or (info is None and parameter.default is EMPTY):
        return (getattr(info, "metavar", None) or parameter.name.upper(),)
    decls += info.param_decls or () if isinstance(info, OptionInfo) else ()
    names = [name.strip() for decl in decls for name in decl.split("/") if name.strip()]
    if not any(name.startswith("--") for name in names):
        flag = "--" + parameter.name.replace("_", "-")
        names += [flag, f"--no-{flag[2:]}"] if _strip_annotated(parameter.annotation) is bool else [flag]
    return tuple(names)


def model_options(
    model: type[BaseModel],
    *,
    exclude: Collection[str] = (),
    flatten: Collection[str] = (),
    key_values: Collection[str] = (),
    aliases: Mapping[str, Sequence[str]] | None = None,
    from_params: Mapping[str, str] | None = None,
    overrides: str | None = None,
    param: str | None = None,
) -> Callable[[F], F]:
    """Decorate a typer command whose parameter ``param`` (default: the one annotated ``model``) takes a ``model``
    instance: typer gets the model's fields as options in its place (``field_options``: ``exclude``, ``flatten``,
    ``key_values``, ``aliases``; the command's other flags are reserved), and the command is called with the
    validated instance.

    ``from_params`` maps fields (dotted) to other parameters of the command that fill them (a positional argument,
    a shared option; those fields get no option, errors name the parameter). ``overrides`` names a parameter of
    ``KEY=VALUE`` strings whose dotted keys set any field on top (``--set render.seed=3``); errors no option names
    name it. The decorated command keeps its name, docstring and other parameters; ``command.options`` lists the
    ``FieldOption``s and ``command.build(data, overrides=())`` validates data as the command does (for callers
    that build the model without a command line)."""
    from_params = dict(from_params or {})

    def decorate(func: F) -> F:
        signature = inspect.signature(func, eval_str=True)
        target = param or next((p.name for p in signature.parameters.values() if p.annotation is model), None)
        if target is None or target not in signature.parameters:
            raise TypeError(f"{func.__qualname__}: no parameter annotated {model.__name__} (or named by param=)")
        others = {p.name: p for p in signature.parameters.values() if p.name != target}
        if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in others.values()):
            raise TypeError(f"{func.__qualname__}: *args/**kwargs have no command-line form")
        missing = {*from_params.values(), *([overrides] if overrides else [])} - set(others)
        if missing:
            raise ValueError(f"{func.__qualname__}: from_params/overrides name no parameter: {sorted(missing)}")
        reserved = {name for p in others.values() for name in _names_of(p)} | HELP_FLAGS
        options = field_options(
            model, exclude={*exclude, *from_params}, flatten=flatten, key_values=key_values, aliases=aliases,
            reserved=reserved,
        )  # fmt: skip
        clash = {o.name for o in options} & set(others)
        if clash:
            raise ValueError(f"{func.__qualname__}: parameters {sorted(clash)} are also fields of {model.__name__}")
        filled_by = {field: _names_of(others[name]) for field, name in from_params.items()}
        fallback = _names_of(others[overrides])[0] if overrides else None
        parameters: list[inspect.Parameter] = []
        for p in signature.parameters.values():
            if p.name == target:
                parameters += [o.parameter() for o in options]
            else:
                parameters.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY))
        names = [o.name for o in options]

        def build(data: Mapping[str, Any], overrides: Iterable[tuple[str, Any]] = ()) -> BaseModel:
            return validate_model(
                model, data, overrides=overrides, options=options, others=filled_by, fallback=fallback
            )

        @functools.wraps(func)
        def command(**values: Any) -> Any:
            data = option_data(model, options, {name: values.pop(name) for name in names})
            for dotted, name in from_params.items():
                *parents, key = dotted.split(".")
                _descend(data, model, parents)[0][key] = values[name]
            pairs = parse_key_values(values[overrides], [fallback or ""]).items() if overrides else ()
            return func(**values, **{target: build(data, pairs)})

        command.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in parameters if p.annotation is not EMPTY}
        if signature.return_annotation is not EMPTY:
            command.__annotations__["return"] = signature.return_annotation
        command.options = tuple(options)  # type: ignore[attr-defined]
        command.build = build  # type: ignore[attr-defined]
        return command  # type: ignore[return-value]

    return decorate


__all__ = [
    "FieldOption",
    "bad_parameter",
    "build_model",
    "field_options",
    "model_options",
    "option_data",
    "parse_key_values",
    "validate_model",
]
