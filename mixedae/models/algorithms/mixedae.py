"""The MixedAE pretraining algorithm; MAE and naive mixing are configurations of it.

    MAE           group_size=1, mask_ratio=0.75, contrast_weight=0
    naive mixing  group_size>1, attn_mode='vanilla', use_segment_embed=False, contrast_weight=0
    MixedAE       group_size>1, attn_mode='topk', use_segment_embed=True, contrast_weight>0
"""
from __future__ import annotations

from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.model import BaseModel

from mixedae.registry import MODELS
from ..layers.homologous_attention import HomologousAttention
from ..losses import homologous_contrastive, masked_mse
from ..utils.mixing import (full_mode_assignment, owned_positions, random_masking,
                            sample_assignment, unmix, visible_mask)
from ..utils.patches import patchify

MIX_MODES = ('compose', 'full')


@MODELS.register_module()
class MixedAE(BaseModel):
    """Args:
        backbone: a ``mixedae.MixedViT`` config (G, attention mode, segment embeddings).
        decoder: the pixel decoder's config, ``dict(type=..., ...)`` (default
            ``mixedae.MAEDecoder``); ``num_patches``, ``grid``, ``patch_size`` and ``embed_dim``
            are filled in from the backbone when missing.
        mix_mode: ``compose`` (one mixed sequence per group) or ``full`` (G per group).
        mask_ratio: MAE's masking ratio, used when G = 1 (with mixing it is 1 - 1/G).
        contrast_weight, contrast_tau, contrast_dim: lambda, tau and projection width of the
            homologous contrastive loss (lambda = 0 switches it off).
        norm_pix_loss: reconstruct per-patch normalised pixels.

    The images per GPU (``train_dataloader.batch_size``) must be a multiple of G; the
    ``mixedae.MixingBatchCheckHook`` of the pretraining configs checks it before training.
    """

    def __init__(self, backbone: dict, decoder: Optional[dict] = None, mix_mode: str = 'compose',
                 mask_ratio: float = 0.75, contrast_weight: float = 0.1,
                 contrast_tau: float = 0.25, contrast_dim: int = 256,
                 norm_pix_loss: bool = True, data_preprocessor: Optional[dict] = None, init_cfg=None) -> None:
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.backbone = MODELS.build(backbone)
        g = self.backbone.group_size
        if mix_mode not in MIX_MODES:
            raise ValueError(f'unknown mix_mode {mix_mode!r}; choose from {MIX_MODES}')
        if contrast_weight < 0 or contrast_tau <= 0:
            raise ValueError(f'need contrast_weight >= 0 and contrast_tau > 0, got '
                             f'{contrast_weight}, {contrast_tau}')
        if contrast_weight and g == 1:
            raise ValueError('the homologous contrastive loss needs mixing (group_size > 1)')
        if g == 1 and not 0 < mask_ratio < 1:
            raise ValueError(f'mask_ratio must be in (0, 1), got {mask_ratio}')
        self.mix_mode = mix_mode
        self.mask_ratio = mask_ratio
        self.contrast_weight = contrast_weight
        self.contrast_tau = contrast_tau
        self.norm_pix_loss = norm_pix_loss
        embed = self.backbone.patch_embed
        self.patch_size = embed.patch_size[0]
        self.num_patches = embed.num_patches
        decoder = dict(decoder or dict(type='mixedae.MAEDecoder'))
        for key, value in (('num_patches', self.num_patches), ('grid', embed.grid_size),
                           ('patch_size', self.patch_size),
                           ('embed_dim', self.backbone.embed_dim)):
            decoder.setdefault(key, value)
        self.decoder = MODELS.build(decoder)
        self.contrast_head = (nn.Linear(self.backbone.embed_dim, contrast_dim)
                              if contrast_weight > 0 else None)

    @property
    def group_size(self) -> int:
        return self.backbone.group_size

    def set_hr_acc(self, enabled: bool) -> None:
        """Whether the next losses include ``hr_acc`` (the top-K layers compute it from their keep
        masks only then); ``mixedae.HrAccScheduleHook`` enables it on logged iterations."""
        for layer in self.backbone.modules():
            if isinstance(layer, HomologousAttention):
                layer.record_precision = enabled

    # ---------------------------------------------------------------- steps
    def sample_visibility(self, batch: int, device: torch.device
                          ) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """G = 1: MAE kept positions B x K. G > 1: (assign T x N, groups T)."""
        g = self.group_size
        if batch % g:
            raise ValueError(f'a batch of {batch} images is not divisible by group_size {g}')
        if g == 1:
            return random_masking(batch, self.num_patches, self.mask_ratio, device), None
        assign = sample_assignment(batch // g, self.num_patches, g, device)
        if self.mix_mode == 'full':
            return full_mode_assignment(assign, g)
        return assign, torch.arange(batch // g, device=device)

    def loss_masked(self, images: torch.Tensor, visible_ids: torch.Tensor
                    ) -> Dict[str, torch.Tensor]:
        """MAE: encode each image's visible patches, reconstruct the rest."""
        latent = self.backbone.encode_masked(images, visible_ids)       # B x (1+K) x D
        pred = self.decoder(latent, visible_ids)                       # B x N x P
        target = patchify(images, self.patch_size)
        return dict(loss_rec=masked_mse(pred, target, visible_mask(visible_ids, self.num_patches),
                                        self.norm_pix_loss))

    def reconstruct_mixed(self, images: torch.Tensor, assign: torch.Tensor,
                          groups: torch.Tensor) -> Dict[str, torch.Tensor]:
        """Encode mixed sequences, unmix, and predict every patch of each source image.

        Returns ``pred`` and ``target`` ((T*G) x N x p*p*3; row t*G + g is image
        ``sources[t*G + g]``), ``visible`` ((T*G) x N bool), ``sources``, ``latent``
        (T x (G+N) x D) and the attention context ``ctx``.
        """
        g = self.group_size
        latent, ctx = self.backbone.encode_mixed(images, assign, groups)  # T x (G+N) x D
        t, _, d = latent.shape
        cls = latent[:, :g].reshape(t * g, 1, d)                       # (T*G) x 1 x D
        visible = unmix(latent[:, g:], assign, g)                      # (T*G) x N/G x D
        visible_ids = owned_positions(assign, g).reshape(t * g, -1)
        pred = self.decoder(torch.cat([cls, visible], dim=1), visible_ids)
        sources = groups.repeat_interleave(g) * g + torch.arange(g, device=groups.device).repeat(t)
        return dict(pred=pred, target=patchify(images, self.patch_size)[sources],
                    visible=visible_mask(visible_ids, self.num_patches), sources=sources,
                    latent=latent, ctx=ctx)

    def loss_mixed(self, images: torch.Tensor, assign: torch.Tensor, groups: torch.Tensor
                   ) -> Dict[str, torch.Tensor]:
        """MixedAE: reconstruction of each source image, homologous contrastive loss."""
        g = self.group_size
        out = self.reconstruct_mixed(images, assign, groups)
        losses = dict(loss_rec=masked_mse(out['pred'], out['target'], out['visible'],
                                          self.norm_pix_loss))
        if self.contrast_head is not None:
            features = self.contrast_head(out['latent'][:, g:])
            losses['loss_hc'] = self.contrast_weight * homologous_contrastive(
                features, assign, self.contrast_tau)
        if out['ctx'].precisions:
            losses['hr_acc'] = torch.stack(out['ctx'].precisions).mean()
        return losses

    # ------------------------------------------------------------ interface
    def loss(self, inputs: torch.Tensor, data_samples: Optional[List] = None
             ) -> Dict[str, torch.Tensor]:
        """``loss_rec`` (+ ``loss_hc``, weighted), and ``hr_acc`` (unless ``set_hr_acc(False)``):
        the mean over the top-K layers of the fraction of the patch keys a patch query keeps,
        other than its own key (class tokens not counted), that come from the query's own
        image; chance is (N/G - 1) / (N - 1) (``hr_acc_chance``). MMEngine logs the total as
        ``loss``."""
        vis, groups = self.sample_visibility(inputs.shape[0], inputs.device)
        if groups is None:
            return self.loss_masked(inputs, vis)
        return self.loss_mixed(inputs, vis, groups)

    def forward(self, inputs: torch.Tensor, data_samples: Optional[List] = None,
                mode: str = 'loss'):
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        raise ValueError(f'MixedAE is a pretraining model: only mode="loss" is supported, got '
                         f'{mode!r}')
