"""ID-resample attention against an explicit reference computation, and the ID LoRA layout."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from diffusers.models.attention_processor import CogVideoXAttnProcessor2_0
from diffusers.models.embeddings import apply_rotary_emb, get_3d_rotary_pos_embed
from safetensors.torch import save_file

from tests.videopainter.conftest import TINY_TRANSFORMER
from videopainter.loaders import load_id_lora
from videopainter.models.attention import ID_LORA_TRAINING_SCALE, IDMemory, VideoPainterIDResampleAttnProcessor


DATA = Path(__file__).parent / "data"
BATCH, TEXT, GRID, FRAMES, DIM, HEADS = 2, 7, 4, 3, 32, 2
VIDEO = FRAMES * GRID * GRID


def _rope() -> tuple[torch.Tensor, torch.Tensor]:
    return get_3d_rotary_pos_embed(16, ((0, 0), (GRID, GRID)), (GRID, GRID), FRAMES)


def _reference_attention(attn, text, video, extra_source, extra_mask, rope) -> tuple[torch.Tensor, torch.Tensor]:
    """Written out by hand: softmax(Q [K; K_x]^T / sqrt(d)) [V; V_x], with K_x, V_x from ``extra_source`` rows
    multiplied by ``extra_mask`` (zero rows kept), norm_k on both key sets, RoPE on the video positions of both."""
    x = torch.cat([text, video], dim=1)
    head_dim = DIM // HEADS

    def heads(t):
        return t.reshape(BATCH, -1, HEADS, head_dim).permute(0, 2, 1, 3)

    def rope_video(t):
        rotated = apply_rotary_emb(t[:, :, TEXT:], rope)
        return torch.cat([t[:, :, :TEXT], rotated], dim=2)

    q = rope_video(attn.norm_q(heads(attn.to_q(x))))
    k = rope_video(attn.norm_k(heads(attn.to_k(x))))
    v = heads(attn.to_v(x))
    k_extra = rope_video(attn.norm_k(heads(attn.to_k(extra_source) * extra_mask)))
    v_extra = heads(attn.to_v(extra_source) * extra_mask)
    keys = torch.cat([k, k_extra], dim=2)
    values = torch.cat([v, v_extra], dim=2)
    weights = torch.softmax(q @ keys.transpose(-1, -2) / math.sqrt(head_dim), dim=-1)
    out = (weights @ values).permute(0, 2, 1, 3).reshape(BATCH, -1, DIM)
    out = attn.to_out[0](out)
    return out[:, TEXT:], out[:, :TEXT]


def _setup(tiny_transformer):
    attn = tiny_transformer.transformer_blocks[0].attn1
    generator = torch.Generator().manual_seed(7)
    text = torch.randn(BATCH, TEXT, DIM, generator=generator)
    video = torch.randn(BATCH, VIDEO, DIM, generator=generator)
    token_mask = torch.rand(BATCH, VIDEO, generator=generator) > 0.6
    return attn, text, video, token_mask


def _full_mask(token_mask: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.zeros(BATCH, TEXT, dtype=torch.bool), token_mask], dim=1).float()[:, :, None]


def test_self_resample_matches_explicit_concatenation(tiny_transformer) -> None:
    attn, text, video, token_mask = _setup(tiny_transformer)
    rope = _rope()
    with torch.no_grad():
        got_video, got_text = VideoPainterIDResampleAttnProcessor()(
            attn, video, text, image_rotary_emb=rope, token_mask=token_mask
        )
        source = torch.cat([text, video], dim=1)
        want_video, want_text = _reference_attention(attn, text, video, source, _full_mask(token_mask), rope)
        plain_video, _ = CogVideoXAttnProcessor2_0()(attn, video, text, image_rotary_emb=rope)
    torch.testing.assert_close(got_video, want_video, rtol=0, atol=1e-5)
    torch.testing.assert_close(got_text, want_text, rtol=0, atol=1e-5)
    assert not torch.allclose(got_video, plain_video, atol=1e-3)  # the extra keys/values matter


def test_zero_rows_are_kept_not_gathered(tiny_transformer) -> None:
    """With nothing masked the extra keys are all norm_k's bias with zero values: attention mass is still
    diverted to them, so the output is a damped version of plain attention (the release's convention)."""
    attn, text, video, _ = _setup(tiny_transformer)
    with torch.no_grad():
        torch.nn.init.normal_(attn.norm_k.bias)  # a non-trivial bias key
        empty = torch.zeros(BATCH, VIDEO, dtype=torch.bool)
        got, _ = VideoPainterIDResampleAttnProcessor()(attn, video, text, image_rotary_emb=_rope(), token_mask=empty)
        plain, _ = CogVideoXAttnProcessor2_0()(attn, video, text, image_rotary_emb=_rope())
    assert not torch.allclose(got, plain, atol=1e-4)


def test_previous_clip_mode_matches_explicit_concatenation(tiny_transformer) -> None:
    attn, text, video, token_mask = _setup(tiny_transformer)
    rope = _rope()
    generator = torch.Generator().manual_seed(8)
    prev = torch.randn(BATCH, TEXT + VIDEO, DIM, generator=generator)
    prev_mask = torch.rand(BATCH, VIDEO, generator=generator) > 0.5
    weight = 0.5
    with torch.no_grad():
        got_video, got_text = VideoPainterIDResampleAttnProcessor()(
            attn,
            video,
            text,
            image_rotary_emb=rope,
            token_mask=token_mask,
            prev_hidden_states=prev,
            prev_token_mask=prev_mask,
            prev_clip_weight=weight,
        )
        want_video, want_text = _reference_attention(attn, text, video, prev, _full_mask(prev_mask) * weight, rope)
    torch.testing.assert_close(got_video, want_video, rtol=0, atol=1e-5)
    torch.testing.assert_close(got_text, want_text, rtol=0, atol=1e-5)


def test_transformer_passes_memory_through_norm1(tiny_transformer) -> None:
    """In previous-clip mode block i's attention reads memory[i] after block i's norm1 at the current timestep."""
    tiny_transformer.set_id_resample(True)
    generator = torch.Generator().manual_seed(9)
    inputs = {
        "hidden_states": torch.randn(BATCH, FRAMES, 8, 2 * GRID, 2 * GRID, generator=generator),
        "encoder_hidden_states": torch.randn(BATCH, TEXT, 12, generator=generator),
        "timestep": torch.tensor([700, 700]),
        "image_rotary_emb": _rope(),
        "branch_token_mask": torch.rand(BATCH, VIDEO, generator=generator) > 0.5,
    }
    memory = IDMemory(
        block_hidden_states=tuple(torch.randn(BATCH, TEXT + VIDEO, DIM, generator=generator) for _ in range(5)),
        token_mask=torch.rand(BATCH, VIDEO, generator=generator) > 0.5,
    )
    seen = []

    class Recording(VideoPainterIDResampleAttnProcessor):
        def __call__(
            self,
            attn,
            hidden_states,
            encoder_hidden_states,
            attention_mask=None,
            image_rotary_emb=None,
            token_mask=None,
            prev_hidden_states=None,
            prev_token_mask=None,
            prev_clip_weight=0.0,
        ):
            seen.append(
                {
                    "prev_hidden_states": prev_hidden_states,
                    "prev_token_mask": prev_token_mask,
                    "prev_clip_weight": prev_clip_weight,
                }
            )
            return super().__call__(
                attn,
                hidden_states,
                encoder_hidden_states,
                attention_mask,
                image_rotary_emb,
                token_mask,
                prev_hidden_states,
                prev_token_mask,
                prev_clip_weight,
            )

    block = tiny_transformer.transformer_blocks[3]
    block.attn1.set_processor(Recording())
    with torch.no_grad():
        self_mode = tiny_transformer(**inputs).sample
        ignored = tiny_transformer(**inputs, id_memory=memory, prev_clip_weight=0.0).sample
        prev_mode = tiny_transformer(**inputs, id_memory=memory, prev_clip_weight=0.5).sample
        emb = tiny_transformer.time_embedding(tiny_transformer.time_proj(inputs["timestep"]))
        mem = memory.block_hidden_states[3]
        normed_video, normed_text, _, _ = block.norm1(mem[:, TEXT:], mem[:, :TEXT], emb)
    assert torch.equal(self_mode, ignored)
    assert not torch.allclose(self_mode, prev_mode)
    assert seen[0]["prev_hidden_states"] is None and seen[1]["prev_hidden_states"] is None
    assert seen[2]["prev_clip_weight"] == 0.5
    torch.testing.assert_close(seen[2]["prev_hidden_states"], torch.cat([normed_text, normed_video], dim=1))
    assert torch.equal(seen[2]["prev_token_mask"], memory.token_mask)


def _lora_keys(num_layers: int) -> list[tuple[str, str]]:
    """Expand the reference patterns for ``num_layers`` blocks: (key, 'A' or 'B')."""
    keys = []
    for line in (DATA / "id_lora_keys.txt").read_text().splitlines():
        pattern, shape = line.split("\t")
        assert json.loads(shape)[0 if ".lora_A." in pattern else 1] == 256  # r = 256 in the release
        keys += [(pattern.replace("{0..41}", str(i)), pattern.split(".lora_")[1][0]) for i in range(num_layers)]
    return keys


@pytest.mark.parametrize("scale", [None, ID_LORA_TRAINING_SCALE])
def test_id_lora_in_released_key_layout_loads(tmp_path: Path, tiny_transformer, scale) -> None:
    rank = 4
    generator = torch.Generator().manual_seed(10)
    tensors = {
        key: torch.randn((rank, DIM) if ab == "A" else (DIM, rank), generator=generator)
        for key, ab in _lora_keys(TINY_TRANSFORMER["num_layers"])
    }
    assert len(tensors) == 8 * TINY_TRANSFORMER["num_layers"]
    save_file(tensors, str(tmp_path / "pytorch_lora_weights.safetensors"), metadata={"format": "pt"})
    kwargs = {} if scale is None else {"scale": scale}
    load_id_lora(tiny_transformer, tmp_path, **kwargs)
    assert tiny_transformer.id_resample_enabled
    for key, tensor in tensors.items():
        module_path, ab = key.removeprefix("transformer.").rsplit(".lora_", 1)
        module = tiny_transformer.get_submodule(module_path)
        lora = (module.lora_A if ab.startswith("A") else module.lora_B)["id_resample"]
        assert torch.equal(lora.weight, tensor), key
        assert module.scaling["id_resample"] == (1.0 if scale is None else 0.5)  # no alpha stored -> alpha = r
