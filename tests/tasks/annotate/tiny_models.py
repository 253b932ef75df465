# ruff: noqa: C408  (keyword-style dict() mirrors the config classes' keyword arguments)
"""Tiny randomly initialised annotation models of the real transformers classes, saved like real checkpoints.

Each builder seeds torch, builds the model from a small config, saves model and processor with
``save_pretrained`` into ``folder`` and returns it; the code under test loads them exactly as it loads a user's
checkpoint. Image sizes are the smallest each architecture accepts (see docs/annotation.md).
"""

from __future__ import annotations

from pathlib import Path


WORDS = ["ball", "horse", "star", "cat", "dog", "person", "car", "red", "a", "object"]


def _clip_tokenizer(max_length: int):
    """A character-level CLIP BPE tokenizer (no merges): start token id > 0, end token the highest id."""
    from transformers import CLIPTokenizer

    vocab = {"!": 0}
    for c in "abcdefghijklmnopqrstuvwxyz":
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length, pad_token="!"), vocab


def build_grounding_dino(folder: Path, seed: int = 0) -> Path:
    """Grounding DINO: tiny Swin backbone on 64×64 images, 1-layer BERT over :data:`WORDS`, d_model 32."""
    import torch
    from transformers import (
        BertConfig,
        BertTokenizer,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoImageProcessor,
        GroundingDinoProcessor,
        SwinConfig,
    )

    folder.mkdir(parents=True, exist_ok=True)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", *WORDS]
    (folder / "vocab.txt").write_text("\n".join(words) + "\n")
    tokenizer = BertTokenizer(str(folder / "vocab.txt"))
    backbone = SwinConfig(image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1],
                          window_size=2, out_features=["stage2", "stage3", "stage4"])  # fmt: skip
    text = BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=64, max_position_embeddings=64)  # fmt: skip
    config = GroundingDinoConfig(
        backbone_config=backbone, text_config=text, d_model=32, encoder_layers=1, decoder_layers=2,
        encoder_ffn_dim=32, decoder_ffn_dim=32, encoder_attention_heads=2, decoder_attention_heads=2, num_queries=10,
        num_feature_levels=3, max_text_len=32, encoder_n_points=2, decoder_n_points=2,
    )  # fmt: skip
    torch.manual_seed(seed)
    GroundingDinoForObjectDetection(config).save_pretrained(folder)
    image_processor = GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 64})
    GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def build_owlv2(folder: Path, seed: int = 0) -> Path:
    """OWLv2: 1-layer ViT on 64×64 images (patch 16 → 16 boxes), 1-layer text encoder over characters."""
    import torch
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    tokenizer, vocab = _clip_tokenizer(16)
    config = Owlv2Config(
        text_config=dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16, bos_token_id=vocab["<|startoftext|>"],
                         eos_token_id=vocab["<|endoftext|>"], pad_token_id=0),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=64, patch_size=16),
        projection_dim=16,
    )  # fmt: skip
    torch.manual_seed(seed)
    model = Owlv2ForObjectDetection(config)
    # default init saturates the box sigmoid (every box degenerates to a frame edge); a small last layer keeps the
    # boxes near the model's anchor grid, in range like a trained head's
    torch.nn.init.normal_(model.box_head.dense2.weight, std=1e-2)
    torch.nn.init.zeros_(model.box_head.dense2.bias)
    model.save_pretrained(folder)
    processor = Owlv2Processor(
        image_processor=Owlv2ImageProcessor(size={"height": 64, "width": 64}), tokenizer=tokenizer
    )
    processor.save_pretrained(folder)
    return folder


def _sam2_parts(size: int) -> dict:
    return dict(
        memory_attention_hidden_size=128, memory_attention_num_layers=1, memory_attention_feed_forward_hidden_size=128,
        memory_encoder_hidden_size=128, mask_downsampler_embed_dim=128, memory_fuser_embed_dim=128,
        memory_fuser_intermediate_dim=128, memory_fuser_num_layers=1, num_maskmem=3,
    )  # fmt: skip


def build_sam2_video(folder: Path, seed: int = 0, size: int = 64) -> Path:
    """SAM2 video: 5-block Hiera on 64×64 images, FPN/decoder width 128 (the memory path needs > 64)."""
    import torch
    from transformers import (
        Sam2ImageProcessor,
        Sam2VideoConfig,
        Sam2VideoModel,
        Sam2VideoProcessor,
        Sam2VideoVideoProcessor,
    )

    s = size
    vision = dict(
        model_type="sam2_vision_model",
        backbone_config=dict(model_type="sam2_hiera_det_model", hidden_size=16, image_size=[s, s],
                             blocks_per_stage=[1, 1, 2, 1], embed_dim_per_stage=[16, 32, 64, 128],
                             num_attention_heads_per_stage=[1, 1, 1, 1], window_size_per_stage=[4, 4, 4, 2],
                             global_attention_blocks=[3], window_positional_embedding_background_size=[4, 4]),
        backbone_channel_list=[128, 64, 32, 16], backbone_feature_sizes=[[s // 4] * 2, [s // 8] * 2, [s // 16] * 2],
        fpn_hidden_size=128,
    )  # fmt: skip
    config = Sam2VideoConfig(
        vision_config=vision, prompt_encoder_config=dict(hidden_size=128, image_size=s, patch_size=16),
        mask_decoder_config=dict(hidden_size=128, mlp_dim=128, num_attention_heads=2, iou_head_hidden_dim=32),
        image_size=s, memory_attention_rope_feat_sizes=[s // 16, s // 16], **_sam2_parts(s),
    )  # fmt: skip
    torch.manual_seed(seed)
    Sam2VideoModel(config).save_pretrained(folder)
    processor = Sam2VideoProcessor(
        image_processor=Sam2ImageProcessor(
            size={"height": s, "width": s}, mask_size={"height": s // 4, "width": s // 4}
        ),
        video_processor=Sam2VideoVideoProcessor(size={"height": s, "width": s}),
    )
    processor.save_pretrained(folder)
    return folder


def build_sam3_video(folder: Path, seed: int = 0, max_objects: int = 4, num_queries: int = 4) -> Path:
    """SAM3 video: 2-layer ViT on 112×112 images (8×8 tokens at patch 14), 1-layer CLIP text encoder over characters,
    detection thresholds 0 and no hot-start delay so random weights emit objects, ``max_objects`` tracked at most,
    ``num_queries`` detections per frame at most."""
    import torch
    from transformers import (
        Sam2VideoVideoProcessor,
        Sam3ImageProcessor,
        Sam3VideoConfig,
        Sam3VideoModel,
        Sam3VideoProcessor,
    )

    s, p = 112, 14
    g = s // p
    tokenizer, vocab = _clip_tokenizer(32)
    vit = dict(model_type="sam3_vit_model", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
               num_attention_heads=2, image_size=s, patch_size=p, window_size=4, global_attn_indexes=[1],
               pretrain_image_size=s)  # fmt: skip
    vision = dict(backbone_config=vit, fpn_hidden_size=128, backbone_feature_sizes=[[4 * g] * 2, [2 * g] * 2, [g] * 2])
    text = dict(model_type="clip_text_model", vocab_size=len(vocab), hidden_size=32, intermediate_size=64,
                projection_dim=32, num_hidden_layers=1, num_attention_heads=2, max_position_embeddings=32,
                bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"], pad_token_id=0)  # fmt: skip
    small = dict(hidden_size=128, num_layers=1, num_attention_heads=2, intermediate_size=128)
    detector = dict(
        vision_config=vision, text_config=text, geometry_encoder_config=small, detr_encoder_config=small,
        detr_decoder_config={**small, "num_queries": num_queries}, mask_decoder_config=dict(hidden_size=128, num_attention_heads=2),
    )  # fmt: skip
    tracker = dict(
        vision_config=vision, prompt_encoder_config=dict(hidden_size=128, image_size=s, patch_size=p),
        mask_decoder_config=dict(hidden_size=128, mlp_dim=128, num_attention_heads=2, iou_head_hidden_dim=32),
        memory_attention_rope_feat_sizes=[g, g], image_size=s, **_sam2_parts(s),
    )  # fmt: skip
    config = Sam3VideoConfig(
        detector_config=detector, tracker_config=tracker, low_res_mask_size=4 * g, score_threshold_detection=0.0,
        new_det_thresh=0.0, hotstart_delay=0, det_nms_thresh=0.9, max_num_objects=max_objects,
    )  # fmt: skip
    torch.manual_seed(seed)
    Sam3VideoModel(config).save_pretrained(folder)
    processor = Sam3VideoProcessor(
        image_processor=Sam3ImageProcessor(
            size={"height": s, "width": s}, mask_size={"height": 4 * g, "width": 4 * g}
        ),
        video_processor=Sam2VideoVideoProcessor(size={"height": s, "width": s}),
        tokenizer=tokenizer,
    )
    processor.save_pretrained(folder)
    return folder


def build_clip(folder: Path, seed: int = 0) -> Path:
    """CLIP: 1-layer ViT on 32×32 images and a 1-layer text tower over characters, projection 8."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    tokenizer, vocab = _clip_tokenizer(16)
    config = CLIPConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16, bos_token_id=vocab["<|startoftext|>"],
                         eos_token_id=vocab["<|endoftext|>"], pad_token_id=0),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=8,
    )  # fmt: skip
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(folder)
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder
