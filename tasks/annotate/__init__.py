"""Annotating raw footage: open-vocabulary detection, video segmentation, vocabularies, captions and selection.

A folder of unlabelled clips becomes labelled, tracked objects with captions:

- :mod:`tasks.annotate.detect`: an open-vocabulary detector (Grounding DINO or OWLv2 checkpoints through
  ``AutoModelForZeroShotObjectDetection``) that finds the vocabulary's noun phrases on key frames;
- :mod:`tasks.annotate.track`: video trackers that turn box prompts into masks through the clip: SAM2's video model
  (``Sam2VideoModel``, memory-based propagation) or segment-anything prompted frame to frame (``sam:``);
- :mod:`tasks.annotate.segmenters`: the ``detect+track`` and ``sam3`` segmenters (``Sam3VideoModel``: noun phrases in,
  tracked instance masks out) implementing :class:`tasks.segment.Segmenter`;
- :mod:`tasks.annotate.vocab`: where the noun phrases come from (a file, the caption's nouns, a VLM's tags);
- :mod:`tasks.annotate.caption`: clip captions and object tags from a vision-language model, cached;
- :mod:`tasks.annotate.selection`: the per-clip and per-object quality filters, recorded as columns with reasons.

Model folders are read from local paths (or fsspec URLs copied to a local cache first); nothing is downloaded from
the Hub (``local_files_only=True``).
"""
