"""The gallery's one error type."""

from __future__ import annotations


class GalleryError(ValueError):
    """Bad input for the gallery (a predicate, an output folder, a media mode); the message names the input."""
