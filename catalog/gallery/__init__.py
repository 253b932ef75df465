"""A static HTML gallery of the catalog's pairs: filter, sort, page, and play source | mask | target in sync.

``build_gallery(catalog, where, out)`` selects pairs with a SQL predicate and writes a site that works from
``file://`` and from any static host; ``serve_in_thread``/``make_server`` serve it with Range support.
"""

from catalog.gallery.builder import (
    GALLERY_VIEW,
    GalleryBuild,
    build_gallery,
    build_site,
    gallery_query,
    select_rows,
)
from catalog.gallery.errors import GalleryError
from catalog.gallery.media import MediaMode, encode_mask_mp4, mask_array
from catalog.gallery.server import make_server, serve_in_thread


__all__ = [
    "GALLERY_VIEW",
    "GalleryBuild",
    "GalleryError",
    "MediaMode",
    "build_gallery",
    "build_site",
    "encode_mask_mp4",
    "gallery_query",
    "make_server",
    "mask_array",
    "select_rows",
    "serve_in_thread",
]
