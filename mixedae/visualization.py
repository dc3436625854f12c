"""Figure helpers: class-token attention maps, heat-map overlays, image grids, model loading."""
from __future__ import annotations

import os
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from mixedae.models import MixedAE, ViT
from mixedae.utils.checkpoint import load_checkpoint_file, state_dict_of
from mixedae.utils.convert import extract_backbone

#: MixedViT arguments that the transfer ViT does not take.
PRETRAIN_ONLY_ARGS = ('type', 'group_size', 'attn_mode', 'homologous_layers', 'topk',
                      'use_segment_embed', 'attn_impl')


@torch.no_grad()
def cls_attention_maps(vit: ViT, images: torch.Tensor) -> torch.Tensor:
    """Last block's class-token attention over the patches, mean of the heads: B x h x w."""
    if vit.cls_token is None:
        raise ValueError('class-token attention needs a ViT with a class token')
    x, grid = vit.prepare_tokens(images)
    for block in vit.blocks[:-1]:
        x = block(x, grid)
    block = vit.blocks[-1]
    attn = block.attn
    b, n, c = x.shape
    q, k, _ = attn.qkv(block.norm1(x)).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(
        2, 0, 3, 1, 4)
    logits = q[:, :, :1] @ k.transpose(-2, -1) * attn.head_dim ** -0.5   # B x heads x 1 x N
    if attn.rel_pos_grid:
        logits = logits + attn.relative_position_bias(q, grid)[..., :1, :]
    weights = logits.softmax(dim=-1)[:, :, 0, 1:]                         # B x heads x hw
    return weights.mean(1).reshape(b, *grid)


def overlay(image: np.ndarray, amap: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a min-max normalised heat map (any size) over an RGB uint8 image."""
    amap = (amap - amap.min()) / max(float(amap.max() - amap.min()), 1e-12)
    heat = cv2.resize(amap.astype(np.float32), image.shape[1::-1], interpolation=cv2.INTER_CUBIC)
    heat = cv2.applyColorMap(np.uint8(np.clip(heat, 0, 1) * 255), cv2.COLORMAP_JET)[..., ::-1]
    return np.uint8(alpha * heat + (1 - alpha) * image)


def make_grid(rows: Sequence[Sequence[Optional[np.ndarray]]], tile: int, pad: int = 4,
              labels: Optional[Sequence[str]] = None) -> np.ndarray:
    """Tiles (RGB uint8, any size, resized to tile x tile; None = blank) in a white grid.

    Size: rows * tile + (rows + 1) * pad high (+ a label strip), cols * tile + (cols + 1) * pad
    wide. ``labels`` are written above the columns.
    """
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    strip = 14 if labels else 0
    h = n_rows * tile + (n_rows + 1) * pad + strip
    w = n_cols * tile + (n_cols + 1) * pad
    canvas = np.full((h, w, 3), 255, np.uint8)
    for j, text in enumerate(labels or []):
        cv2.putText(canvas, text[:max(1, tile // 7)], (pad + j * (tile + pad), 11),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 0), 1, cv2.LINE_AA)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            if img is None:
                continue
            y, x = strip + pad + i * (tile + pad), pad + j * (tile + pad)
            canvas[y:y + tile, x:x + tile] = cv2.resize(img, (tile, tile),
                                                        interpolation=cv2.INTER_NEAREST)
    return canvas


def save_png(path: str, image: np.ndarray) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if not cv2.imwrite(path, image[..., ::-1]):
        raise OSError(f'could not write {path}')


def load_images(paths: Sequence[str], size: Tuple[int, int]) -> List[np.ndarray]:
    """RGB uint8 images resized to ``size`` (h, w); unreadable files are an error."""
    out = []
    for p in paths:
        img = cv2.imread(p, cv2.IMREAD_COLOR)
        if img is None:
            raise OSError(f'cannot read image {p}')
        out.append(cv2.resize(img[..., ::-1], (size[1], size[0]), interpolation=cv2.INTER_AREA))
    return out


def normalize(images: Sequence[np.ndarray], mean: Sequence[float], std: Sequence[float]
              ) -> torch.Tensor:
    """RGB uint8 H x W x 3 images -> B x 3 x H x W float, normalised."""
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def denormalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """B x 3 x H x W normalised -> B x H x W x 3 uint8."""
    x = x * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    return x.clamp(0, 255).round().byte().permute(0, 2, 3, 1).numpy()


def build_pretrain_model(config: str) -> Tuple[MixedAE, Config]:
    """The MixedAE / MAE model of a pretraining config (random weights) and the config."""
    from mixedae.registry import MODELS
    cfg = Config.fromfile(config)
    cfg.model.pop('batch_size', None)
    with DefaultScope.overwrite_default_scope('mixedae'):
        model = MODELS.build(cfg.model)
    return model.eval(), cfg


def vit_from_pretrain_config(config: str, checkpoint: str) -> ViT:
    """A transfer ViT with the architecture of a pretraining config, loaded from either a
    pretraining checkpoint (``backbone.*`` keys) or a converted backbone checkpoint."""
    cfg = Config.fromfile(config)
    arch = {k: v for k, v in cfg.model.backbone.items() if k not in PRETRAIN_ONLY_ARGS}
    vit = ViT(**arch)
    raw = load_checkpoint_file(checkpoint)
    sd = state_dict_of(raw, checkpoint)
    if any(k.startswith('backbone.') for k in sd):
        sd, _ = extract_backbone(raw, 'mixedae', checkpoint)
    vit.load_backbone_state(sd, checkpoint)
    return vit.eval()
