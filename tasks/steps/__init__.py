"""The factory's steps, one verb each, in the order a clip meets them.

``discover`` → ``ingest`` → ``propose`` → ``plan`` → ``render`` → ``score``; ``record`` is the one place rows are
appended to the catalog. Each step is a plain function over a batch that takes its inputs and its part of the
configuration and returns typed outputs, with per-item problems as ``Failure`` values; the Prefect task wrappers live
in ``flows/prefect_tasks.py``.
"""
