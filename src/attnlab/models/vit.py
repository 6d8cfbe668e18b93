"""Vision Transformer (Dosovitskiy et al., 2021, "An Image is Worth 16x16 Words: Transformers for Image
Recognition at Scale").

An image is cut into ``N = (S / P)^2`` non-overlapping ``P x P`` patches; each patch is linearly embedded
(eq. 1, here as a ``Conv2d`` with kernel = stride = ``P``, the same linear map applied to every patch); a
trained class token is prepended, learned positions are added, a pre-LN Transformer encoder runs over the
``N + 1`` tokens (eqs. 2-3) and a linear head reads the final class token (eq. 4).
"""

from __future__ import annotations

import torch
from torch import nn

from attnlab.attention import LearnedPositionalEncoding
from attnlab.core.model_config import ViTConfig
from attnlab.models.classifier import ClassifierOutput
from attnlab.models.transformer import TransformerEncoderLayer

__all__ = ["ConvStem", "PatchEmbedding", "VisionTransformer"]


class PatchEmbedding(nn.Module):
    """``(B, C, S, S)`` images -> ``(B, N, D)`` patch embeddings, ``N = (S / P)^2`` in row-major patch order."""

    def __init__(self, in_channels: int, d_model: int, patch_size: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.projection = nn.Conv2d(in_channels, d_model, kernel_size=patch_size, stride=patch_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[-1] % self.patch_size or images.shape[-2] % self.patch_size:
            raise ValueError(f"PatchEmbedding: expected images (B, C, S, S) with S a multiple of "
                             f"patch_size={self.patch_size}, got {tuple(images.shape)}")
        x = self.projection(images)  # (B, D, S/P, S/P)
        return x.flatten(2).transpose(1, 2)  # (B, N, D)


class ConvNeXtBlock(nn.Module):
    """``x + MLP(LayerNorm(depthwise7x7(x)))`` on a ``(B, C, H, W)`` grid (Liu et al. 2022, "A ConvNet for the
    2020s", without layer scale); the last projection starts at zero, so a new block is the identity."""

    def __init__(self, channels: int, kernel_size: int = 7) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, kernel_size, padding=kernel_size // 2, groups=channels)
        self.norm = nn.LayerNorm(channels)
        self.expand = nn.Linear(channels, 4 * channels)
        self.project = nn.Linear(4 * channels, channels)
        nn.init.zeros_(self.project.weight)
        nn.init.zeros_(self.project.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.depthwise(x).permute(0, 2, 3, 1)  # (B, H, W, C): LayerNorm and the MLP act per position
        h = self.project(torch.nn.functional.gelu(self.expand(self.norm(h))))
        return x + h.permute(0, 3, 1, 2)


class ConvStem(nn.Module):
    """``(B, C, S, S)`` images -> ``(B, N, D)`` region vectors on the ``(S / P)^2`` patch grid, row-major.

    A 3x3 convolution, then ``log2(P)`` 3x3 convolutions of stride 2 (GELU after each), then a 1x1 projection to
    ``D`` (the convolutional stem of Xiao et al. 2021, "Early Convolutions Help Transformers See Better"). Each
    vector sees a window of ``2P + 1`` pixels around its patch, so attention over the vectors still says where
    in the image the model looks. ``blocks`` :class:`ConvNeXtBlock` on the patch grid before the projection widen
    that window by ``6P`` pixels each: enough to see a whole object, still local to it.
    """

    def __init__(self, in_channels: int, d_model: int, patch_size: int, blocks: int = 0) -> None:
        super().__init__()
        self.patch_size = patch_size
        layers: list[nn.Module] = [nn.Conv2d(in_channels, 32, 3, padding=1), nn.GELU()]
        channels = 32
        for _ in range(patch_size.bit_length() - 1):  # log2(P) halvings
            out = min(2 * channels, d_model)
            layers += [nn.Conv2d(channels, out, 3, stride=2, padding=1), nn.GELU()]
            channels = out
        layers += [ConvNeXtBlock(channels) for _ in range(blocks)]
        layers.append(nn.Conv2d(channels, d_model, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[-1] % self.patch_size or images.shape[-2] % self.patch_size:
            raise ValueError(f"ConvStem: expected images (B, C, S, S) with S a multiple of "
                             f"patch_size={self.patch_size}, got {tuple(images.shape)}")
        return self.layers(images).flatten(2).transpose(1, 2)  # (B, D, S/P, S/P) -> (B, N, D)


class VisionTransformer(nn.Module):
    """ViT classifier configured by :class:`ViTConfig`."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        num_patches = (config.image_size // config.patch_size) ** 2
        self.patch_embedding = (PatchEmbedding(config.in_channels, d, config.patch_size) if config.stem == "linear"
                                else ConvStem(config.in_channels, d, config.patch_size, config.stem_blocks))
        self.class_token = nn.Parameter(torch.zeros(1, 1, d))
        self.positional = LearnedPositionalEncoding(d, num_patches + 1, config.dropout)
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(d, config.num_heads, config.ffn_dim, dropout=config.dropout,
                                    attention_dropout=config.attention_dropout, activation="gelu", norm_first=True)
            for _ in range(config.num_layers))
        self.norm = nn.LayerNorm(d)
        self.head = nn.Linear(d, config.num_classes)
        nn.init.trunc_normal_(self.class_token, std=0.02)

    def forward(self, images: torch.Tensor, *, need_weights: bool = False) -> ClassifierOutput:
        """Classify ``images`` ``(B, C, S, S)``.

        Returns:
            logits ``(B, num_classes)``; with ``need_weights``, ``encoder_self`` ``(L, B, H, N + 1, N + 1)``
            (token 0 is the class token, then the patches in row-major order).
        """
        # 1. Patches -> tokens, class token first (eq. 1).
        patches = self.patch_embedding(images)  # (B, N, D)
        cls = self.class_token.expand(patches.shape[0], -1, -1)  # (B, 1, D)
        x = self.positional(torch.cat([cls, patches], dim=1))  # (B, N + 1, D)
        # 2. Encoder (eqs. 2-3); every image has all N + 1 tokens, so nothing is masked.
        maps = []
        for layer in self.layers:
            x, weights = layer(x, need_weights=need_weights)  # (B, N + 1, D), (B, H, N + 1, N + 1) | None
            maps.append(weights)
        # 3. Classify from the normalized class token (eq. 4).
        logits = self.head(self.norm(x[:, 0]))  # (B, num_classes)
        return ClassifierOutput(logits, torch.stack(maps) if need_weights else None)
