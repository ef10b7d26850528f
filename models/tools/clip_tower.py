"""CLIP's image tower rewritten as the lean graph the edge runs (export only; needs torch).

``LeanImageTower(hf_model)`` computes exactly what transformers'
``CLIPVisionModelWithProjection(...).image_embeds`` computes, from the same weights,
but traces to an ONNX graph that ONNX Runtime runs faster, mostly in int8:

- the patch embedding is patches → ``MatMul`` (the int8 quantiser takes MatMuls; ONNX
  Runtime's int8 ``ConvInteger`` is slower than its fp32 ``Conv``);
- Q, K and V are one ``MatMul`` (768 → 2304) instead of three, and the 1/√64 scale is
  folded into the Q weights (a power of two: exact);
- reshapes use constant shapes (``-1`` for the batch), so the graph has no
  ``Shape``/``Gather``/``Concat`` chains;
- the last block runs its query, output projection and MLP for the class token only:
  the pooled output reads nothing else (keys and values still see every token).

The exporter checks the ONNX file against the transformers model itself, so a
mistake here fails the export rather than shipping a different embedding.

Any depth, width and image size (ViT-B/32 is 12 × 768 at 224 px; a toy one here):

>>> import torch
>>> from transformers import CLIPVisionConfig
>>> from facewire.models.tools.clip_load import random_model
>>> toy = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
...                        num_attention_heads=4, image_size=64, projection_dim=32)
>>> hf = random_model(seed=0, config=toy)
>>> lean = LeanImageTower(hf).eval()
>>> x = torch.randn(2, 3, 64, 64)
>>> with torch.no_grad():
...     ref, out = hf(pixel_values=x).image_embeds, lean(x)
>>> bool(torch.allclose(ref, out, atol=1e-4))
True
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class LeanImageTower(nn.Module):
    """``pixel_values`` (N×3×224×224) → ``image_embeds`` (N×512, not normalised)."""

    def __init__(self, hf_model: Any) -> None:
        super().__init__()
        vision = hf_model.vision_model
        config = vision.config
        if config.hidden_act != "quick_gelu":
            raise ValueError(f"expected CLIP's quick_gelu, got {config.hidden_act}")
        self.width = config.hidden_size
        self.heads = config.num_attention_heads
        self.head_dim = self.width // self.heads
        self.patch = config.patch_size
        self.side = config.image_size // self.patch
        self.tokens = self.side * self.side + 1
        emb = vision.embeddings
        with torch.no_grad():
            conv = emb.patch_embedding.weight  # (width, 3, patch, patch)
            self.patch_weight = nn.Parameter(conv.reshape(self.width, -1).t().contiguous())
            # a zero row is padded in front of the patches, so the class token's row of
            # the position table carries the class embedding: cls + pos[0], as in HF
            positions = emb.position_embedding.weight.clone()
            positions[0] += emb.class_embedding
            self.positions = nn.Parameter(positions.unsqueeze(0))
        self.pre_norm = vision.pre_layrnorm
        layers = vision.encoder.layers
        self.blocks: list[_Block] = nn.ModuleList(  # type: ignore[assignment]
            _Block(layer, self.heads, last=i == len(layers) - 1) for i, layer in enumerate(layers)
        )
        self.post_norm = vision.post_layernorm
        self.projection = hf_model.visual_projection

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        p, s = self.patch, self.side
        # N,3,224,224 → N,3,7,32,7,32 → N,7,7,3,32,32 → N,49,3072 (the Conv weight's order)
        patches = pixel_values.reshape(-1, 3, s, p, s, p).permute(0, 2, 4, 1, 3, 5)
        x = torch.matmul(patches.reshape(-1, s * s, 3 * p * p), self.patch_weight)
        x = nn.functional.pad(x, (0, 0, 1, 0)) + self.positions  # class token in front
        x = self.pre_norm(x)
        *blocks, last = list(self.blocks)
        for block in blocks:
            x = block(x, self.tokens)
        cls = last.class_token_only(x, self.tokens)
        return self.projection(self.post_norm(cls))


class _Block(nn.Module):
    """One pre-norm transformer block with fused QKV, from a ``CLIPEncoderLayer``."""

    def __init__(self, layer: Any, heads: int, last: bool = False) -> None:
        super().__init__()
        att = layer.self_attn
        width = att.q_proj.weight.shape[0]
        self.heads, self.head_dim, self.width = heads, width // heads, width
        scale = float(att.scale)
        with torch.no_grad():
            weight = torch.cat([att.q_proj.weight * scale, att.k_proj.weight, att.v_proj.weight])
            bias = torch.cat([att.q_proj.bias * scale, att.k_proj.bias, att.v_proj.bias])
            weight = weight.t().contiguous()  # (width, 3·width)
            if last:  # the class token's query apart from every token's keys and values
                self.q_weight = nn.Parameter(weight[:, :width].contiguous())
                self.q_bias = nn.Parameter(bias[:width].clone())
                self.kv_weight = nn.Parameter(weight[:, width:].contiguous())
                self.kv_bias = nn.Parameter(bias[width:].clone())
            else:
                self.qkv_weight = nn.Parameter(weight)
                self.qkv_bias = nn.Parameter(bias)
        self.norm1, self.norm2 = layer.layer_norm1, layer.layer_norm2
        self.out_proj = att.out_proj
        self.fc1, self.fc2 = layer.mlp.fc1, layer.mlp.fc2

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(self.norm2(x))
        return x + self.fc2(h * torch.sigmoid(1.702 * h))  # quick_gelu

    def forward(self, x: torch.Tensor, tokens: int) -> torch.Tensor:
        qkv = torch.matmul(self.norm1(x), self.qkv_weight) + self.qkv_bias
        # N,T,3·W → N,T,3,H,D → 3,N,H,T,D
        qkv = qkv.reshape(-1, tokens, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        att = torch.softmax(torch.matmul(q, k.transpose(-1, -2)), dim=-1)
        out = torch.matmul(att, v).transpose(1, 2).reshape(-1, tokens, self.width)
        return self._mlp(x + self.out_proj(out))

    def class_token_only(self, x: torch.Tensor, tokens: int) -> torch.Tensor:
        """The block's output for the class token alone (N×W)."""
        h = self.norm1(x)
        q = torch.matmul(h[:, 0], self.q_weight) + self.q_bias  # N,W
        kv = torch.matmul(h, self.kv_weight) + self.kv_bias  # N,T,2W
        kv = kv.reshape(-1, tokens, 2, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q = q.reshape(-1, self.heads, 1, self.head_dim)  # N,H,1,D
        att = torch.softmax(torch.matmul(q, kv[0].transpose(-1, -2)), dim=-1)  # N,H,1,T
        out = torch.matmul(att, kv[1]).reshape(-1, self.width)  # N,W
        return self._mlp(x[:, 0] + self.out_proj(out))
