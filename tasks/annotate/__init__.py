"""Annotating raw footage: open-vocabulary detection, video segmentation, vocabularies, captions and selection.

A folder of unlabelled clips becomes labelled, tracked objects with captions (docs/annotation.md). Modules:
:mod:`~tasks.annotate.detect` (open-vocabulary detectors on key frames), :mod:`~tasks.annotate.track` (video
trackers from box prompts), :mod:`~tasks.annotate.segmenters` (the ``detect+track`` and ``sam3`` segmenters),
:mod:`~tasks.annotate.vocab` (noun phrases from a file, captions, VLM tags), :mod:`~tasks.annotate.caption` (VLM
captions and tags, cached), :mod:`~tasks.annotate.selection` (per-clip and per-object quality filters) and
:mod:`~tasks.annotate.stop` (a run's stop request on SIGINT/SIGTERM, checked between frames and clips).

Model folders are read from local paths (or fsspec URLs copied to a local cache first); nothing is downloaded from
the Hub (``local_files_only=True``).
"""
