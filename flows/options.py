"""Options shared by every ``vpf`` command, how a command ends when its reader goes away, and how a deployment's
flow run names the parameter to set."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Annotated, ParamSpec, TypeVar

import typer

from catalog.store import Catalog, NoCatalogError, default_root, require_catalog


P = ParamSpec("P")
R = TypeVar("R")


def _catalog_default() -> str:
    return default_root()


CatalogOption = Annotated[
    str,
    typer.Option(
        "--catalog",
        help="Catalog root: a local folder or any fsspec URL (s3://bucket/prefix, memory://…). "
        "Default: $VPF_CATALOG, else ./vpf-data.",
        default_factory=_catalog_default,
        show_default=False,
    ),
]


def open_catalog(url: str) -> Catalog:
    """The catalog at ``url`` for a command that reads it; a root holding no catalog ends the command with exit
    code 2 and "no catalog at …" (a wrong path is never taken for an empty catalog)."""
    try:
        return require_catalog(url)
    except NoCatalogError as exc:
        typer.echo(f"vpf: {exc}", err=True)
        raise typer.Exit(2) from None


# ------------------------------------------------------------------------------------------------ closed pipes
def quiet_on_closed_pipe(command: Callable[P, R]) -> Callable[P, R]:
    """``command`` ending like a CLI tool when its reader has gone (``vpf status | head -1``): a ``BrokenPipeError``
    while it writes ends it with exit code 0 and no traceback. Stdout is flushed when the command ends, so output
    still buffered meets a closed pipe here rather than at interpreter exit; after a closed pipe, stdout points at
    the null device, so Python's own flush at exit cannot fail again."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            try:
                return command(*args, **kwargs)
            finally:
                sys.stdout.flush()
        except BrokenPipeError:
            _stdout_to_null_device()
            raise typer.Exit(0) from None

    return wrapper


def quiet_on_closed_pipes(app: typer.Typer) -> None:
    """Wrap every command registered on ``app`` and on its sub-apps (``vpf catalog …``) in
    :func:`quiet_on_closed_pipe`; call once, after every command is registered."""
    for info in app.registered_commands:
        if info.callback is not None and not getattr(info.callback, "_closed_pipe_guard", False):
            info.callback = quiet_on_closed_pipe(info.callback)
            info.callback._closed_pipe_guard = True  # type: ignore[attr-defined]
    for group in app.registered_groups:
        if group.typer_instance is not None:
            quiet_on_closed_pipes(group.typer_instance)


def _stdout_to_null_device() -> None:
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError):  # no file descriptor (a test runner's capture): nothing to fail at exit
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)


# ------------------------------------------------------------------------------------- deployment parameters
def absolute_local(url: str) -> str:
    """A relative local path made absolute against the working directory (for a deployment's flow run: the
    deployment's working directory, where its ``set_working_directory`` pull step went); URLs and absolute paths as
    they are."""
    if "://" in url or "::" in url or os.path.isabs(os.path.expanduser(url)):
        return url
    return os.path.abspath(url)


def relative_note(url: str) -> str | None:
    """For a relative local path, the sentence naming the directory it was resolved against; else None."""
    if absolute_local(url) == url:
        return None
    return f"{url} is relative to the flow run's working directory {os.getcwd()}"


def deployment_hint(parameter: str, to: str | None = None) -> str | None:
    """In a deployment's flow run, how to set the flow parameter ``parameter`` (dotted for a field of a model
    parameter: ``config.source``), ``to`` what if given: in the deployment's parameters in prefect.yaml, or in one
    run's. None outside a deployment's flow run (a CLI or Python caller names its own arguments)."""
    from prefect.runtime import deployment, flow_run

    name = deployment.name
    if not name:
        return None
    full = f"{flow_run.flow_name}/{name}"
    top = parameter.split(".", 1)[0]
    per_run = f"--param {parameter}=…" if top == parameter else f"--params '{{\"{top}\": {{…}}}}' (the whole {top})"
    return (
        f"set parameter `{parameter}` of deployment {full}" + (f" to {to}" if to else "") + f" (prefect.yaml: "
        f"deployments → {name} → parameters, then prefect deploy; or for one run: prefect deployment run {full} "
        f"{per_run})"
    )
