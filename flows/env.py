"""Prefect defaults for local use, applied before Prefect is imported by the ``vpf`` CLI.

Without ``PREFECT_API_URL`` Prefect runs in ephemeral mode (a temporary local API, no server to start). Analytics
are off. Each default yields to a value already in the environment.
"""

from __future__ import annotations

import os


LOCAL_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ALLOW_EPHEMERAL_MODE": "true",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",  # the default 20 s is too short on a busy machine
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "PREFECT_UI_ENABLED": "false",
}


def apply_local_defaults() -> None:
    for key, value in LOCAL_DEFAULTS.items():
        os.environ.setdefault(key, value)
