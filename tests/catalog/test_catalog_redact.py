"""``catalog.redact``: credentials out of URLs, free text, JSON-like values and log records; ordinary text untouched."""

from __future__ import annotations

import logging

import pytest

from catalog.redact import MASK, RedactingFilter, holds_secret, install_log_redaction, redact, redact_value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("openai:http://user:SECRETKEY@127.0.0.1:9/v1#m", "openai:http://***@127.0.0.1:9/v1#m"),
        ("ftp://TOKENONLY@host/x and s3://k:s@bucket/p", "ftp://***@host/x and s3://***@bucket/p"),
        ("openai:http://h:9/v1?token=SECRETTOKEN#m", "openai:http://h:9/v1?token=***#m"),
        ("https://h/a?API_KEY=a1&Api-Key=a2&key=a3&secret=a4&password=a5", None),
        (
            "https://h/a?access_token=t&sig=s&Signature=s2&x=1",
            "https://h/a?access_token=***&sig=***&Signature=***&x=1",
        ),
        ("https://b.s3.amazonaws.com/v.mp4?X-Amz-Credential=AK%2Fx&X-Amz-Signature=ab12", None),
        (
            '{"api_key": "sk-1", "model": "m", \'password\': \'p\'}',
            '{"api_key": "***", "model": "m", \'password\': \'***\'}',
        ),
        ("Authorization: Bearer abcdefghijkl", "Authorization: Bearer ***"),
        ("headers={'Authorization': 'Basic dXNlcjpwYXNz'}", "headers={'Authorization': '***'}"),
    ],
)
def test_credentials_are_masked(text: str, expected: str | None) -> None:
    cleaned = redact(text)
    if expected is not None:
        assert cleaned == expected
    for secret in ("SECRETKEY", "SECRETTOKEN", "a1", "a2", "a3", "a4", "a5", "ab12", "AK%2Fx", "sk-1", "dXNlcjpwYXNz"):
        assert f"={secret}" not in cleaned and f"{secret}@" not in cleaned and f'"{secret}"' not in cleaned
    assert redact(cleaned) == cleaned  # idempotent


@pytest.mark.parametrize(
    "text",
    [
        "sam:s3://models/sam_vit_h_4b8939.pth#auto=1&labels=car,person&model_type=vit_h",
        "detect+track:/m/gdino#tracker=sam2:/m/sam2&threshold=0.3",
        "s3://bucket/prefix/tables/pairs/20260101T000000-abc.u.parquet",
        "clip_0123 failed: monkey=3, token limit exceeded, missing key: x",
        "user@example.com wrote /data/a b.mp4",
        "",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact(text) == text
    assert not holds_secret(text)


def test_values_of_credential_environment_variables_are_masked_anywhere() -> None:
    env = {
        "VPF_OPENAI_API_KEY": "sk-live-0123456789",
        "HF_TOKEN": "hf_abcdefghijk",
        "MY_SERVICE_PASSWORD": "pw-12345678",
    }
    env |= {"PATH": "/usr/bin:/bin", "SHORT_TOKEN": "abc"}  # not credentials / too short to redact safely
    text = "sent sk-live-0123456789 and hf_abcdefghijk, then pw-12345678; PATH /usr/bin:/bin; abc"
    assert redact(text, env) == f"sent {MASK} and {MASK}, then {MASK}; PATH /usr/bin:/bin; abc"


def test_the_process_environment_is_read_at_each_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-env-42")
    assert redact("key sk-from-the-env-42 leaked") == f"key {MASK} leaked"
    monkeypatch.delenv("OPENAI_API_KEY")
    assert redact("key sk-from-the-env-42 leaked") == "key sk-from-the-env-42 leaked"


def test_redact_value_walks_mappings_and_hides_credential_keys() -> None:
    value = {
        "source": "https://u:p@h/m.csv",
        "storage_options": {"key": "AKIA", "secret": "s3cr3t", "client_kwargs": {"endpoint_url": "http://h:9"}},
        "render": {"engine_options": {"hf_token": "hf_x", "seconds": 5, "token": None}},
        "edit_types": ["remove", "https://h/x?sig=abc"],
    }
    assert redact_value(value) == {
        "source": "https://***@h/m.csv",
        "storage_options": {"key": MASK, "secret": MASK, "client_kwargs": {"endpoint_url": "http://h:9"}},
        "render": {"engine_options": {"hf_token": MASK, "seconds": 5, "token": None}},
        "edit_types": ["remove", "https://h/x?sig=***"],
    }
    assert value["storage_options"]["secret"] == "s3cr3t"  # the input is not changed


def test_log_records_are_redacted_before_handlers_format_them() -> None:
    logger = logging.getLogger("vpf-test-redact")
    records: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Collect()
    logger.addHandler(handler)
    logger.propagate = False
    try:
        assert install_log_redaction(("vpf-test-redact",)) == 1
        assert install_log_redaction(("vpf-test-redact",)) == 0  # once per handler
        logger.warning("calling %s", "http://user:SECRETKEY@h/v1")
        try:
            raise ValueError("bad answer from http://h/v1?api_key=SECRETKEY")
        except ValueError:
            logger.exception("request failed")
    finally:
        logger.removeHandler(handler)
    assert records and all("SECRETKEY" not in r for r in records), records
    assert "http://***@h/v1" in records[0] and "api_key=***" in records[1]
    assert any(isinstance(f, RedactingFilter) for f in handler.filters)
