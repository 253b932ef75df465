"""Context encoder, injected backbone and checkpoint layout."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from diffusers import CogVideoXTransformer3DModel
from diffusers.models.embeddings import get_3d_rotary_pos_embed
from safetensors.torch import save_file

from tests.videopainter.conftest import TINY_TRANSFORMER
from videopainter.models.context_encoder import VideoPainterContextEncoder
from videopainter.models.transformer import VideoPainterTransformer3DModel, latent_mask_to_token_mask


DATA = Path(__file__).parent / "data"
BATCH, FRAMES, LATENT, TEXT = 2, 3, 8, 7  # 3 latent frames of 8x8 latents, 7 text tokens
NUM_TOKENS = FRAMES * (LATENT // 2) ** 2  # 48 video tokens


def _rope() -> tuple[torch.Tensor, torch.Tensor]:
    grid = LATENT // 2
    return get_3d_rotary_pos_embed(
        embed_dim=TINY_TRANSFORMER["attention_head_dim"],
        crops_coords=((0, 0), (grid, grid)),
        grid_size=(grid, grid),
        temporal_size=FRAMES,
    )


def _inputs(seed: int = 1) -> dict:
    generator = torch.Generator().manual_seed(seed)
    return {
        "hidden_states": torch.randn(BATCH, FRAMES, 8, LATENT, LATENT, generator=generator),
        "encoder_hidden_states": torch.randn(BATCH, TEXT, 12, generator=generator),
        "timestep": torch.tensor([500, 20]),
        "image_rotary_emb": _rope(),
    }


def _mask_latents(seed: int = 2) -> torch.Tensor:
    """A latent mask with a box per frame: (BATCH, FRAMES, 1, LATENT, LATENT)."""
    mask = torch.zeros(BATCH, FRAMES, 1, LATENT, LATENT)
    mask[0, :, :, 1:4, 2:5] = 1  # touches 2x2 patches partially -> those tokens count as masked
    mask[1, 1, :, 4:8, 0:4] = 1
    return mask


def test_token_mask_marks_patches_with_any_masked_pixel() -> None:
    mask = torch.zeros(1, 2, 1, 4, 4)
    mask[0, 0, 0, 1, 2] = 1  # one latent pixel in patch (row 0, col 1) of frame 0
    mask[0, 1, 0, 3, 3] = 1  # one latent pixel in patch (row 1, col 1) of frame 1
    tokens = latent_mask_to_token_mask(mask, patch_size=2)
    # frame-major (t, h, w) order, 2x2 patches per frame
    assert tokens.tolist() == [[False, True, False, False, False, False, False, True]]


def test_zero_branch_equals_plain_diffusers_transformer_exactly(tiny_transformer) -> None:
    plain = CogVideoXTransformer3DModel(**TINY_TRANSFORMER).eval()
    plain.load_state_dict(tiny_transformer.state_dict())
    encoder = VideoPainterContextEncoder.from_transformer(tiny_transformer, num_layers=2).eval()
    inputs = _inputs()
    mask_latents = _mask_latents()
    branch_cond = torch.cat([torch.randn(BATCH, FRAMES, 4, LATENT, LATENT), mask_latents], dim=2)
    with torch.no_grad():
        samples = encoder(
            hidden_states=inputs["hidden_states"][:, :, :4],
            encoder_hidden_states=inputs["encoder_hidden_states"],
            branch_cond=branch_cond,
            timestep=inputs["timestep"],
            image_rotary_emb=inputs["image_rotary_emb"],
        ).branch_block_samples
        assert len(samples) == 2 and all(s.shape == (BATCH, NUM_TOKENS, 32) for s in samples)
        assert all(torch.count_nonzero(s) == 0 for s in samples)  # zero-initialised bridges
        expected = plain(**inputs, return_dict=False)[0]
        for token_mask in (latent_mask_to_token_mask(mask_latents, 2), None):
            got = tiny_transformer(**inputs, branch_block_samples=samples, branch_token_mask=token_mask).sample
            assert torch.equal(got, expected)
        assert torch.equal(tiny_transformer(**inputs, return_dict=False)[0], expected)


def test_injection_group_mapping_layer_by_layer(tiny_transformer) -> None:
    """Replay every block by hand: block i's output differs from the plain block output by exactly
    branch[i // ceil(5 / 2)] on background video tokens, and not at all on masked video tokens or text tokens."""
    inputs = _inputs()
    token_mask = latent_mask_to_token_mask(_mask_latents(), 2)
    assert token_mask.any() and (~token_mask).any()
    torch.manual_seed(3)
    branch = (torch.randn(BATCH, NUM_TOKENS, 32), torch.randn(BATCH, NUM_TOKENS, 32))
    model = tiny_transformer
    with torch.no_grad():
        out = model(
            **inputs, branch_block_samples=branch, branch_token_mask=token_mask, return_block_hidden_states=True
        )
        plain_out = model(**inputs).sample
        assert not torch.allclose(out.sample, plain_out)  # background tokens changed

        emb = model.time_embedding(model.time_proj(inputs["timestep"]))
        tokens = model.patch_embed(inputs["encoder_hidden_states"], inputs["hidden_states"])
        text, video = tokens[:, :TEXT], tokens[:, TEXT:]
        interval = math.ceil(5 / 2)
        assert [i // interval for i in range(5)] == [0, 0, 0, 1, 1]
        for i, block in enumerate(model.transformer_blocks):
            plain_video, plain_text = block(video, text, emb, inputs["image_rotary_emb"])
            recorded = out.block_hidden_states[i]
            rec_text, rec_video = recorded[:, :TEXT], recorded[:, TEXT:]
            assert torch.equal(rec_text, plain_text), f"text tokens changed at block {i}"
            delta = rec_video - plain_video
            assert torch.equal(delta[token_mask], torch.zeros_like(delta[token_mask])), f"masked tokens, block {i}"
            torch.testing.assert_close(delta[~token_mask], branch[i // interval][~token_mask], rtol=0, atol=1e-5)
            other = branch[1 - i // interval][~token_mask]
            assert not torch.allclose(delta[~token_mask], other, atol=1e-3), f"block {i} took the wrong group"
            text, video = rec_text, rec_video


def test_encoder_output_reaches_backbone_only_through_background(tiny_transformer) -> None:
    encoder = VideoPainterContextEncoder.from_transformer(tiny_transformer, num_layers=2).eval()
    torch.manual_seed(4)
    for linear in encoder.branch_blocks:
        torch.nn.init.normal_(linear.weight, std=0.1)
    inputs = _inputs()
    mask_latents = _mask_latents()
    branch_cond = torch.cat([torch.randn(BATCH, FRAMES, 4, LATENT, LATENT), mask_latents], dim=2)
    kwargs = {
        "hidden_states": inputs["hidden_states"][:, :, :4],
        "encoder_hidden_states": inputs["encoder_hidden_states"],
        "branch_cond": branch_cond,
        "timestep": inputs["timestep"],
        "image_rotary_emb": inputs["image_rotary_emb"],
    }
    with torch.no_grad():
        (one,) = encoder(**kwargs, return_dict=False)
        half = encoder(**kwargs, conditioning_scale=0.5).branch_block_samples
        assert all(s.abs().max() > 0 for s in one)
        for full, scaled in zip(one, half):
            torch.testing.assert_close(scaled, 0.5 * full)
        # the mask channel is read: changing it changes the encoder output once its weights are non-zero
        torch.nn.init.normal_(encoder.patch_embed.proj.weight[:, 8:], std=0.1)
        flipped = dict(kwargs, branch_cond=torch.cat([branch_cond[:, :, :4], 1 - mask_latents], dim=2))
        assert not torch.allclose(
            encoder(**kwargs).branch_block_samples[0], encoder(**flipped).branch_block_samples[0]
        )


def test_from_transformer_copies_documented_slices(tiny_transformer) -> None:
    with torch.no_grad():
        tiny_transformer.patch_embed.pos_embedding.add_(1.0)  # must NOT be copied
    encoder = VideoPainterContextEncoder.from_transformer(tiny_transformer, num_layers=2)
    backbone_w = tiny_transformer.patch_embed.proj.weight
    w = encoder.patch_embed.proj.weight
    assert w.shape == (32, 9, 2, 2)  # 2 * out_channels + 1 input channels
    assert torch.equal(w[:, :4], backbone_w[:, :4])  # noisy-latent slot
    assert torch.equal(w[:, 4:8], backbone_w[:, :4])  # masked-video slot: the same noisy-latent slice
    assert torch.count_nonzero(w[:, 8]) == 0  # mask channel
    assert torch.equal(encoder.patch_embed.proj.bias, tiny_transformer.patch_embed.proj.bias)
    assert torch.equal(encoder.patch_embed.text_proj.weight, tiny_transformer.patch_embed.text_proj.weight)
    fresh = VideoPainterContextEncoder.from_transformer(tiny_transformer, load_weights_from_transformer=False)
    assert torch.equal(encoder.patch_embed.pos_embedding, fresh.patch_embed.pos_embedding)
    assert not torch.equal(encoder.patch_embed.pos_embedding, tiny_transformer.patch_embed.pos_embedding)
    for name, tensor in tiny_transformer.time_embedding.state_dict().items():
        assert torch.equal(encoder.time_embedding.state_dict()[name], tensor)
    for i in range(2):
        backbone_block = tiny_transformer.transformer_blocks[i].state_dict()
        encoder_block = encoder.transformer_blocks[i].state_dict()
        assert backbone_block.keys() == encoder_block.keys()
        assert all(torch.equal(encoder_block[k], backbone_block[k]) for k in backbone_block)
        assert torch.count_nonzero(encoder.branch_blocks[i].weight) == 0
        assert torch.count_nonzero(encoder.branch_blocks[i].bias) == 0
    assert torch.count_nonzero(encoder.branch_x_embedder.weight) == 0
    assert not torch.equal(
        encoder.transformer_blocks[1].attn1.to_q.weight, tiny_transformer.transformer_blocks[2].attn1.to_q.weight
    )


def _reference_shapes() -> dict[str, list[int]]:
    rows = (line.split("\t") for line in (DATA / "branch_state_dict_keys.txt").read_text().splitlines() if line)
    return {key: json.loads(shape) for key, shape in rows}


def _released_config() -> dict:
    return {k: v for k, v in json.loads((DATA / "released_branch_config.json").read_text()).items() if k[0] != "_"}


def test_released_config_on_meta_matches_reference_keys_and_shapes() -> None:
    with torch.device("meta"):
        encoder = VideoPainterContextEncoder.from_config(_released_config())
    got = {key: list(tensor.shape) for key, tensor in encoder.state_dict().items()}
    assert len(got) == 71
    assert got == _reference_shapes()
    buffers = dict(encoder.named_buffers())
    assert list(buffers) == ["patch_embed.pos_embedding"]  # the one persistent buffer
    assert encoder.config.in_channels == 32 and encoder.patch_embed.proj.in_channels == 33


@pytest.mark.parametrize("field", ["wo_text", "id_pool_resample_learnable"])
def test_released_only_flags_fail_loudly(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        VideoPainterContextEncoder(num_layers=1, num_attention_heads=1, attention_head_dim=16, **{field: True})


def test_tiny_checkpoint_in_released_layout_loads_strictly(tmp_path: Path, tiny_transformer) -> None:
    """Write a checkpoint by hand: the reference key names, tiny shapes, and a config in the released style."""
    template = VideoPainterContextEncoder.from_transformer(tiny_transformer, num_layers=2)
    template_shapes = {k: v.shape for k, v in template.state_dict().items()}
    assert set(template_shapes) == set(_reference_shapes())
    torch.manual_seed(5)
    tensors = {key: torch.randn(template_shapes[key]) for key in _reference_shapes()}
    folder = tmp_path / "branch"
    folder.mkdir()
    save_file(tensors, str(folder / "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})
    config = {k: v for k, v in template.config.items() if not k.startswith("_")}
    config.update(_class_name="CogvideoXBranchModel", _diffusers_version="0.31.0.dev0")
    assert config["wo_text"] is False and config["id_pool_resample_learnable"] is False
    (folder / "config.json").write_text(json.dumps(config))
    loaded, info = VideoPainterContextEncoder.from_pretrained(folder, output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    assert info["mismatched_keys"] == [] and info["error_msgs"] == []
    state = loaded.state_dict()
    assert all(torch.equal(state[k].to(tensors[k].dtype), tensors[k]) for k in tensors)
    # and our own save_pretrained round-trips
    loaded.save_pretrained(tmp_path / "again")
    again = VideoPainterContextEncoder.from_pretrained(tmp_path / "again")
    public = lambda model: {k: v for k, v in model.config.items() if not k.startswith("_")}  # noqa: E731
    assert public(again) == public(loaded) == {k: v for k, v in config.items() if not k.startswith("_")}
    assert all(torch.equal(again.state_dict()[k], state[k]) for k in state)


def test_backbone_loads_stock_transformer_folder(tmp_path: Path) -> None:
    torch.manual_seed(6)
    stock = CogVideoXTransformer3DModel(**TINY_TRANSFORMER)
    stock.save_pretrained(tmp_path / "transformer")
    ours, info = VideoPainterTransformer3DModel.from_pretrained(tmp_path / "transformer", output_loading_info=True)
    assert info["missing_keys"] == [] and info["unexpected_keys"] == []
    assert ours.state_dict().keys() == stock.state_dict().keys()


@pytest.mark.parametrize("torch_dtype", [None, torch.bfloat16])
def test_pos_embedding_is_held_in_the_model_dtype(tmp_path, torch_dtype) -> None:
    """diffusers builds the sin-cos table in float64; loaded or built, both models hold it in their own dtype (at
    full size a float64 table is 437 MB per model), with the loaded values unchanged."""
    from videopainter.models.transformer import VideoPainterTransformer3DModel

    torch.manual_seed(0)
    transformer = VideoPainterTransformer3DModel(**TINY_TRANSFORMER)
    encoder = VideoPainterContextEncoder.from_transformer(transformer, num_layers=2)
    assert encoder.patch_embed.pos_embedding.dtype == torch.float32
    transformer.save_pretrained(tmp_path / "transformer")
    encoder.save_pretrained(tmp_path / "branch")
    want = torch.float32 if torch_dtype is None else torch_dtype
    loaded = {
        "transformer": VideoPainterTransformer3DModel.from_pretrained(
            tmp_path / "transformer", torch_dtype=torch_dtype
        ),
        "branch": VideoPainterContextEncoder.from_pretrained(tmp_path / "branch", torch_dtype=torch_dtype),
    }
    for name, model in loaded.items():
        table = model.patch_embed.pos_embedding
        assert model.dtype == want and table.dtype == want, name
        source = (transformer if name == "transformer" else encoder).patch_embed.pos_embedding
        torch.testing.assert_close(table.float(), source.float(), atol=0, rtol=1e-2 if torch_dtype else 1e-6)
