"""Image captioning with attention over image patches: a ViT-style encoder and a Transformer decoder.

The design of Xu et al. (2015), "Show, Attend and Tell: Neural Image Caption Generation with Visual Attention",
attends at every word over a grid of image regions (their CNN feature map, section 3.1.1). Here the regions are
the ``N = (S / P)^2`` patches of Dosovitskiy et al. (2021), "An Image is Worth 16x16 Words" (eq. 1: a linear map
per patch plus learned positions; no class token, since the decoder reads all patches), and the recurrent
decoder is replaced by Transformer decoder layers (causal self-attention, cross-attention over the patches,
feed-forward; Vaswani et al., 2017).

The captioner is an :class:`~attnlab.models.base.EncoderDecoder` whose source is an image, so
:func:`~attnlab.decode.greedy_decode` and :func:`~attnlab.decode.beam_search` run it unchanged, with
``src_lens`` equal to ``N`` for every image. Token ids follow the rest of attnlab: 0 padding, 1 ``<bos>``,
2 ``<eos>``. Caption embeddings are scaled by ``sqrt(d_model)`` as in :class:`~attnlab.models.Transformer`.
Both stacks use the GELU feed-forward of ViT.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from attnlab.attention import AdditiveAttention, KVCache, LearnedPositionalEncoding
from attnlab.attention.dropout import Dropout
from attnlab.attention.functional import softmax_with_mask
from attnlab.attention.scoring import is_observed
from attnlab.core.model_config import CaptionerConfig
from attnlab.models.base import AttentionMaps, EncoderDecoder, EncoderDecoderOutput, StepOutput
from attnlab.models.seq2seq import Seq2SeqState
from attnlab.models.transformer import (
    DecoderLayerOutput,
    TransformerDecoderLayer,
    TransformerEncoderLayer,
    TransformerState,
    plain_inference,
)
from attnlab.models.vit import ConvStem, PatchEmbedding

__all__ = ["Captioner", "patch_grid"]


def patch_grid(config: CaptionerConfig) -> tuple[int, int]:
    """``(gh, gw)``: patches per column and per row; patch ``i`` sits at row ``i // gw``, column ``i % gw``."""
    side = config.image_size // config.patch_size
    return side, side


class Captioner(EncoderDecoder):
    """Patch encoder + Transformer caption decoder configured by :class:`CaptionerConfig`.

    Args:
        config: the architecture.
        tgt_vocab_size: ``V``, the caption vocabulary (ids 0-3 are ``<pad> <bos> <eos> <unk>``).
    """

    def __init__(self, config: CaptionerConfig, tgt_vocab_size: int) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        gh, gw = patch_grid(config)
        self.num_patches = gh * gw
        layer_args = {"dropout": config.dropout, "attention_dropout": config.attention_dropout,
                      "activation": "gelu", "norm_first": config.norm_first}
        # 1. Encoder: patch embeddings + learned positions (ViT eq. 1), then the encoder layers (eqs. 2-3).
        self.patch_embedding = (PatchEmbedding(config.in_channels, d, config.patch_size) if config.stem == "linear"
                                else ConvStem(config.in_channels, d, config.patch_size, config.stem_blocks))
        self.patch_positional = LearnedPositionalEncoding(d, self.num_patches, config.dropout)
        self.encoder_layers = nn.ModuleList(TransformerEncoderLayer(d, config.num_heads, config.ffn_dim, **layer_args)
                                            for _ in range(config.encoder_layers))
        # 2. Decoder, named and initialised as the Transformer's target side: N(0, d^-1/2) embeddings times sqrt(d).
        self.gru = config.decoder == "gru"
        if self.gru:  # Show, Attend and Tell: h_0 from the mean region, one additive attention, a deep output
            self.init_hidden = nn.Linear(d, d)
            self.attention = AdditiveAttention(d, d, d)
            self.rnn = nn.GRU(2 * d, d, batch_first=True)
            self.deep_output = nn.Linear(3 * d, d)
            self.step_dropout = Dropout(config.dropout)
        self.embed_scale = math.sqrt(d)
        self.tgt_embedding = nn.Embedding(tgt_vocab_size, d, padding_idx=0)
        nn.init.normal_(self.tgt_embedding.weight, std=d ** -0.5)
        with torch.no_grad():
            self.tgt_embedding.weight[0].zero_()
        self.tgt_positional = LearnedPositionalEncoding(d, config.max_len, config.dropout)
        if self.gru:  # the GRU orders the words itself; the table stays (checkpoints keep their names) but is not
            self.tgt_positional.requires_grad_(False)  # trained: DDP refuses parameters that get no gradient
        self.decoder_layers = nn.ModuleList(TransformerDecoderLayer(d, config.num_heads, config.ffn_dim, **layer_args)
                                            for _ in range(0 if self.gru else config.decoder_layers))
        # Pre-LN needs a final LayerNorm on each stack's output (none on an empty encoder stack).
        pre_ln = config.norm_first
        self.encoder_norm = nn.LayerNorm(d) if pre_ln and config.encoder_layers else nn.Identity()
        self.decoder_norm = nn.LayerNorm(d) if pre_ln and not self.gru else nn.Identity()
        # 3. Output projection, optionally tied to the caption embedding.
        self.output = nn.Linear(d, tgt_vocab_size, bias=False)
        if config.tie_embeddings:
            self.output.weight = self.tgt_embedding.weight

    # ------------------------------------------------------------------------------------------ stacks
    def _check_images(self, images: torch.Tensor, src_lens: torch.Tensor) -> None:
        c, s = self.config.in_channels, self.config.image_size
        if images.dim() != 4 or tuple(images.shape[1:]) != (c, s, s):
            raise ValueError(f"Captioner: expected images (B, {c}, {s}, {s}), got {tuple(images.shape)}")
        # Every image has all N patches; anything else would cut Hypothesis.cross_attention short.
        if src_lens.shape != (images.shape[0],) or bool((src_lens != self.num_patches).any()):
            raise ValueError(f"Captioner: src_lens must be ({images.shape[0]},) and equal to the number of patches "
                             f"N={self.num_patches} for every image, got {src_lens.tolist()}")

    def _encode(self, images: torch.Tensor, src_lens: torch.Tensor,
                need_weights: bool) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        """``images`` ``(B, C, S, S)`` -> memory ``(B, N, D)`` and per-layer weights ``(B, H, N, N)``."""
        self._check_images(images, src_lens)
        x = self.patch_positional(self.patch_embedding(images))  # (B, N, D)
        maps = []
        for layer in self.encoder_layers:
            x, weights = layer(x, need_weights=need_weights)  # (B, N, D); no padding, so no mask
            maps.append(weights)
        return self.encoder_norm(x), maps

    def _decode(self, tokens: torch.Tensor, memory: torch.Tensor, *, offset: int = 0,
                caches: tuple[list[KVCache], list[KVCache]] | None = None,
                need_weights: bool = False, beams: int = 1) -> tuple[torch.Tensor, list[DecoderLayerOutput]]:
        """``tokens`` ``(B, Tt)`` at positions ``offset..`` -> hidden ``(B, Tt, D)`` and each layer's output.

        ``beams``: decoder rows per memory row (see :class:`TransformerDecoderLayer`)."""
        x = self.tgt_positional(self.tgt_embedding(tokens) * self.embed_scale, offset)  # (B, Tt, D)
        if caches is not None and tokens.shape[1] == 1 and plain_inference(self.decoder_layers, need_weights):
            for layer, self_cache, cross_cache in zip(self.decoder_layers, *caches, strict=True):
                x = layer.step(x, memory, None, self_cache, cross_cache, beams)  # (B, 1, D)
            return self.decoder_norm(x), []
        outs = []
        for i, layer in enumerate(self.decoder_layers):
            self_cache, cross_cache = (caches[0][i], caches[1][i]) if caches is not None else (None, None)
            # src_lens=None: every patch is real, and no mask keeps the fused kernel's unmasked path.
            out = layer(x, memory, None, self_cache=self_cache, cross_cache=cross_cache, need_weights=need_weights,
                        beams=beams)
            x = out.output  # (B, Tt, D)
            outs.append(out)
        return self.decoder_norm(x), outs

    # ------------------------------------------------------------------------------------- public API
    def output_projection(self) -> nn.Linear | None:
        """``output`` for the Transformer decoder (the loss may project its states in chunks); ``None`` for the GRU
        decoder, whose logits come from a per-step read-out with its own dropout."""
        return None if self.gru else self.output

    def forward(self, src: torch.Tensor, src_lens: torch.Tensor, tgt_in: torch.Tensor, *,
                need_weights: bool = False, project: bool = True) -> EncoderDecoderOutput:
        """Teacher-forced pass: ``src`` images ``(B, C, S, S)``, ``src_lens`` ``(B,)`` all equal to ``N``,
        ``tgt_in`` ``(B, Tt)`` caption ids starting with ``<bos>``.

        Raises:
            ValueError: images of the wrong shape, or ``src_lens`` not ``N`` everywhere.

        Returns:
            logits ``(B, Tt, V)``; with ``need_weights``, :class:`AttentionMaps` with ``encoder_self``
            ``(Le, B, H, N, N)`` (``None`` when ``Le = 0``), ``decoder_self`` ``(Ld, B, H, Tt, Tt)`` and ``cross``
            ``(Ld, B, H, Tt, N)``; patches in row-major order (see :func:`patch_grid`). ``project=False`` (Transformer
            decoder only, see :meth:`output_projection`): ``logits=None`` and the decoder's states ``hidden``
            ``(B, Tt, D)``.
        """
        if not project and self.gru:
            raise ValueError("Captioner.forward: project=False needs the Transformer decoder; the GRU decoder's "
                             "logits come from its per-step read-out")
        # 1. Encode the patches.
        memory, enc_maps = self._encode(src, src_lens, need_weights)  # (B, N, D)
        if self.gru:
            return self._forward_gru(memory, enc_maps, tgt_in, need_weights)
        # 2. Decode all caption positions at once under the causal mask.
        hidden, dec_outs = self._decode(tgt_in, memory, need_weights=need_weights)  # (B, Tt, D)
        # 3. Project to the vocabulary.
        logits = self.output(hidden) if project else None  # (B, Tt, V)
        if not need_weights:
            return EncoderDecoderOutput(logits, None, hidden)
        maps = AttentionMaps(encoder_self=torch.stack(enc_maps) if enc_maps else None,  # (Le, B, H, N, N)
                             decoder_self=torch.stack([o.self_weights for o in dec_outs]),  # (Ld, B, H, Tt, Tt)
                             cross=torch.stack([o.cross_weights for o in dec_outs]))  # (Ld, B, H, Tt, N)
        return EncoderDecoderOutput(logits, maps, hidden)

    def encode(self, src: torch.Tensor, src_lens: torch.Tensor) -> TransformerState | Seq2SeqState:
        """Encode images ``(B, C, S, S)`` once and set up empty caches (or the GRU's first state) for
        :meth:`decode_step`."""
        memory, _ = self._encode(src, src_lens, need_weights=False)  # (B, N, D)
        if self.gru:
            return self._gru_state(memory)
        num_layers = len(self.decoder_layers)
        return TransformerState(memory, src_lens, [KVCache() for _ in range(num_layers)],
                                [KVCache(static=True) for _ in range(num_layers)])

    def decode_step(self, tokens: torch.Tensor, state: TransformerState | Seq2SeqState, *,
                    need_weights: bool = False) -> StepOutput:
        """Consume ``tokens`` ``(B,)`` at position ``state.offset``; the caches in ``state`` grow in place.

        Returns:
            logits ``(B, V)``, the advanced state and, with ``need_weights``, ``cross_weights`` ``(B, N)``: the
            last decoder layer's attention over the patches, averaged over heads (the Transformer's convention);
            the GRU decoder's one attention distribution.
        """
        if isinstance(state, Seq2SeqState):
            logits, state, weights = self._gru_step(tokens, state)  # (B, V), _, (B, 1, N)
            return StepOutput(logits, state, weights[:, 0] if need_weights else None)
        hidden, outs = self._decode(tokens.unsqueeze(1), state.memory, offset=state.offset,
                                    caches=(state.self_caches, state.cross_caches),
                                    need_weights=need_weights, beams=state.beams)  # (B, 1, D)
        logits = self.output(hidden[:, 0])  # (B, V)
        new_state = state.advanced()
        cross_weights = outs[-1].cross_weights[:, :, 0].mean(dim=1) if need_weights else None  # (B, N)
        return StepOutput(logits, new_state, cross_weights)

    # ------------------------------------------------------------------------------------- GRU decoder
    def _gru_state(self, memory: torch.Tensor) -> Seq2SeqState:
        """``h_0 = tanh(W mean_i(a_i))`` (Xu et al. 2015, sec. 3.1.2) and the attention keys projected once."""
        hidden = torch.tanh(self.init_hidden(memory.mean(dim=1)))[None]  # (1, B, D)
        mask = torch.ones(memory.shape[0], 1, memory.shape[1], dtype=torch.bool, device=memory.device)  # (B, 1, N)
        return Seq2SeqState(hidden, memory, self.attention.W_k(memory), mask)

    def _gru_step(self, tokens: torch.Tensor, state: Seq2SeqState) -> tuple[torch.Tensor, Seq2SeqState, torch.Tensor]:
        """One word: attend with ``h_{t-1}``, feed ``[z_t; E y_{t-1}]`` to the GRU, score with the deep output
        ``tanh(L [h_t; z_t; E y_{t-1}])`` against the tied embedding. Returns logits ``(B, V)``, the new state and
        ``alpha_t`` ``(B, 1, N)``."""
        embedded = self.step_dropout(self.tgt_embedding(tokens) * self.embed_scale)  # (B, D)
        query = state.hidden[-1].unsqueeze(1)  # (B, 1, D)
        attention = self.attention
        if is_observed(attention):
            # Observed (capture, explain): run the module itself so every step is recorded; same numbers.
            context, weights = attention(query, state.memory, state.memory, mask=state.mask)  # (B, 1, D), (B, 1, N)
            context = context[:, 0]
        else:  # the keys were projected once in _gru_state
            scores = attention.score_projected(attention.W_q(query), state.keys)  # (B, 1, N)
            weights = softmax_with_mask(scores, state.mask)  # (B, 1, N)
            context = torch.bmm(weights, state.memory)[:, 0]  # (B, D)
        output, hidden = self.rnn(torch.cat([context, embedded], dim=-1).unsqueeze(1), state.hidden)  # (B, 1, D)
        deep = torch.tanh(self.deep_output(torch.cat([output[:, 0], context, embedded], dim=-1)))  # (B, D)
        logits = self.output(self.step_dropout(deep))  # (B, V)
        return logits, Seq2SeqState(hidden, state.memory, state.keys, state.mask), weights

    def _forward_gru(self, memory: torch.Tensor, enc_maps: list[torch.Tensor | None], tgt_in: torch.Tensor,
                     need_weights: bool) -> EncoderDecoderOutput:
        state = self._gru_state(memory)
        logits, maps = [], []
        for tokens in tgt_in.unbind(1):
            step_logits, state, weights = self._gru_step(tokens, state)  # (B, V), _, (B, 1, N)
            logits.append(step_logits)
            maps.append(weights)
        out = torch.stack(logits, dim=1)  # (B, Tt, V)
        if not need_weights:
            return EncoderDecoderOutput(out, None)
        cross = torch.cat(maps, dim=1)[None, :, None]  # (1, B, 1, Tt, N)
        encoder_self = torch.stack(enc_maps) if enc_maps else None
        return EncoderDecoderOutput(out, AttentionMaps(encoder_self=encoder_self, cross=cross))
