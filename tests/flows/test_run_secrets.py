"""Secrets never written: a run whose proposer and judge URLs carry credentials (and whose API key sits in the
environment) leaves them in no file under the catalog root, no log, no Prefect record and no ``vpf status`` output.

The model server does not exist (port 9): every request fails, which turns the URLs into failure messages, the
likeliest place for them to leak. The grep decodes Parquet (its pages are compressed), and is shown to find a secret
written without redaction (the negative control).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from catalog.store import Catalog
from flows.build_pairs import build_pairs
from tasks.config import RunConfig
from tests.flows.conftest import TINY


USER_KEY = "SECRETKEY-7f3a9c"  # in the proposer URL's user-info
TOKEN = "SECRETTOKEN-41d2e8"  # a token parameter of the judge URL
ENV_KEY = "sk-envsecret-5b61c0"  # $VPF_OPENAI_API_KEY, sent as a bearer token
SECRETS = (USER_KEY, TOKEN, ENV_KEY)


def holders(root: Path, secrets: tuple[str, ...] = SECRETS) -> dict[str, list[str]]:
    """Files under ``root`` whose bytes, or (Parquet) decoded rows and metadata, contain one of ``secrets``."""
    found: dict[str, list[str]] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        texts = [data.decode("latin-1")]
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            texts += [json.dumps(table.to_pylist(), default=str), str(table.schema.metadata)]
        hits = [s for s in secrets if any(s in text for text in texts)]
        if hits:
            found[str(path)] = hits
    return found


def leaks(text: str, secrets: tuple[str, ...] = SECRETS) -> list[str]:
    return [s for s in secrets if s in text]


def test_the_grep_finds_a_secret_written_without_redaction(tmp_path: Path) -> None:
    """Negative control: a secret that bypasses redaction (a direct append, a JSON file) is found."""
    cat = Catalog(tmp_path / "cat")
    cat.append("failures", [{"failure_id": "f", "stage": "propose", "reason": "x", "message": f"k={USER_KEY}"}])
    (tmp_path / "cat" / "note.json").write_text(json.dumps({"url": f"http://h/v1?token={TOKEN}"}))
    found = holders(tmp_path / "cat")
    assert [hits for path, hits in found.items() if path.endswith(".parquet")] == [[USER_KEY]]
    assert found[str(tmp_path / "cat" / "note.json")] == [TOKEN]
    assert leaks(f"x {ENV_KEY} y") == [ENV_KEY]


def _prefect_records(flow_run_id: str) -> str:
    """Everything the Prefect API holds about the flow run, as text: the run, its task runs, logs and artifacts."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, FlowRunFilter, LogFilter
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
        runs = FlowRunFilter(id={"any_": [run.id]})
        tasks = client.read_task_runs(flow_run_filter=runs)
        logs = client.read_logs(log_filter=LogFilter(flow_run_id={"any_": [run.id]}))
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id={"any_": [run.id]}))
    assert logs, "the run's logs did not reach the API"
    return "\n".join(m.model_dump_json() for m in [run, *tasks, *logs, *artifacts])


def _prefect_database() -> list[Path]:
    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL

    database = Path(PREFECT_SERVER_DATABASE_CONNECTION_URL.value().split(":///", 1)[1])
    return sorted(database.parent.glob(database.name + "*"))  # the database and its journal files


def test_no_secret_in_anything_a_run_writes(
    tiny_samples, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capsys
) -> None:
    from tasks.proposers.openai_compat import OpenAIBackend

    manifest, _ = tiny_samples
    monkeypatch.setenv("VPF_OPENAI_API_KEY", ENV_KEY)
    monkeypatch.setattr(OpenAIBackend, "_delay", lambda self, attempt, response: 0.0)  # retries without waiting
    caplog.set_level(logging.DEBUG)
    # the run loggers send INFO to the API whatever level an earlier import of flows.cli set for this process
    # (PREFECT_LOGGING_LEVEL=WARNING in ephemeral mode): the API's copy of the run's logs is part of what is grepped
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        monkeypatch.setattr(logging.getLogger(name), "level", logging.INFO)
    root = tmp_path / "cat"
    summary = build_pairs(
        RunConfig(
            source=str(manifest),
            catalog=str(root),
            render={"engine": "null"},
            geometry=TINY,
            batch_size=2,
            proposer=f"openai:http://user:{USER_KEY}@127.0.0.1:9/v1#m",
            score={"judge": f"openai:http://127.0.0.1:9/v1?token={TOKEN}#j", "workers": 0},
        )
    )
    cat = Catalog(root)

    # the URLs did reach what the run recorded, redacted: the failures name them, the parameters hold them
    messages = cat.query("SELECT stage, message FROM failures").to_pylist()
    assert {m["stage"] for m in messages} >= {"propose", "judge"}, messages
    assert any("http://***@127.0.0.1:9/v1" in m["message"] for m in messages), messages
    assert any("token=***" in m["message"] for m in messages), messages
    (parameters,) = set(cat.query("SELECT parameters_json FROM runs").column(0).to_pylist())
    recorded = json.loads(parameters)
    assert recorded["proposer"] == "openai:http://***@127.0.0.1:9/v1#m"
    assert recorded["score"]["judge"] == "openai:http://127.0.0.1:9/v1?token=***#j"

    assert holders(root) == {}, "a file under the catalog root holds a secret"
    assert not leaks("\n".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)), "a log holds a secret"
    captured = capsys.readouterr()
    assert not leaks(captured.out + captured.err)
    flow_run_id = cat.query("SELECT flow_run_id FROM runs").column(0)[0].as_py()
    records = _prefect_records(flow_run_id)
    assert "openai:http://***@127.0.0.1:9/v1#m" in records  # the parameters are there, redacted
    assert not leaks(records), "the Prefect API holds a secret"
    assert not leaks(summary.model_dump_json())
    database = _prefect_database()
    assert database and not [p.name for p in database if leaks(p.read_bytes().decode("latin-1"))]

    from flows.cli import app

    for args in (["status", "--catalog", str(root)], ["status", "--catalog", str(root), "--json"]):
        shown = CliRunner().invoke(app, args)
        assert shown.exit_code == 0, shown.output
        assert "propose" in shown.output and not leaks(shown.output), shown.output
