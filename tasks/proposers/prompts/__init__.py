"""Versioned prompt templates (``*.txt``), read with ``tasks.proposers.base.load_prompt``; never edit a released
version in place: add ``<name>_v2.txt`` and bump the version the proposer records."""
