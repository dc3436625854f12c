"""Figure helpers: class-token attention maps, heat-map overlays, image grids, model loading,
and the attention and mixing figures of ``tools/visualize_attention.py`` and
``tools/visualize_mixing.py``."""
from __future__ import annotations

import glob
import inspect
import os
from typing import Dict, List, Optional, Sequence, Tuple

import cv2
import numpy as np
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from mixedae.datasets.image_folder import IMG_EXTENSIONS
from mixedae.models import MixedAE, MixedViT, ViT
from mixedae.models.utils.mixing import sample_assignment
from mixedae.models.utils.patches import patchify, unpatchify
from mixedae.models.backbones.checkpoint_layouts import extract_backbone
from mixedae.utils.errors import MissingInputError
from .pretrain_checkpoint import read_pretrain_checkpoint

#: MixedViT arguments that the transfer ViT does not take (read from the two signatures, so a
#: new pretraining-only argument is dropped too).
PRETRAIN_ONLY_ARGS = ('type', *(name for name in inspect.signature(MixedViT).parameters
                                if name != 'kwargs'
                                and name not in inspect.signature(ViT).parameters))


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
    q, k, _ = attn.qkv_heads(block.norm1(x))                              # B x heads x N x hd
    logits = q[:, :, :1] @ k.transpose(-2, -1) * attn.head_dim ** -0.5   # B x heads x 1 x N
    if attn.rel_pos_grid:
        logits = logits + attn.relative_position_bias(q, grid)[..., :1, :]
    weights = logits.softmax(dim=-1)[:, :, 0, 1:]                         # B x heads x hw
    return weights.mean(1).reshape(len(images), *grid)


def overlay(image: np.ndarray, amap: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a min-max normalised heat map (any size) over an RGB uint8 image."""
    amap = (amap - amap.min()) / max(float(amap.max() - amap.min()), 1e-12)
    heat = cv2.resize(amap.astype(np.float32), image.shape[1::-1], interpolation=cv2.INTER_CUBIC)
    heat = cv2.applyColorMap(np.uint8(np.clip(heat, 0, 1) * 255), cv2.COLORMAP_JET)[..., ::-1]
    return np.uint8(alpha * heat + (1 - alpha) * image)


#: the font of every label written into a figure grid
LABEL_FONT = (cv2.FONT_HERSHEY_SIMPLEX, 0.35, 1)


def text_width(text: str) -> int:
    """Width in pixels of ``text`` in :data:`LABEL_FONT`."""
    font, scale, thickness = LABEL_FONT
    return cv2.getTextSize(text, font, scale, thickness)[0][0]


def text_tile(text: str, width: int, height: int) -> np.ndarray:
    """``text`` in black on a white ``height`` x ``width`` tile, vertically centred, 2 px from the
    left edge; cut at the end if it does not fit."""
    while text and text_width(text) > width - 2:
        text = text[:-1]
    font, scale, thickness = LABEL_FONT
    (_, h), _ = cv2.getTextSize(text or ' ', font, scale, thickness)
    tile = np.full((height, width, 3), 255, np.uint8)
    cv2.putText(tile, text, (2, (height + h) // 2), font, scale, (0, 0, 0), thickness, cv2.LINE_AA)
    return tile


def make_grid(rows: Sequence[Sequence[Optional[np.ndarray]]], tile: int, pad: int = 4,
              labels: Optional[Sequence[str]] = None,
              row_labels: Optional[Sequence[str]] = None) -> np.ndarray:
    """Tiles (RGB uint8, any size, resized to tile x tile; None = blank) in a white grid.

    ``labels`` are written in a 14 px strip above the columns, ``row_labels`` in a strip left of
    the rows as wide as the longest of them (+ 4 px). Size: rows * tile + (rows + 1) * pad high
    (+ the label strip), cols * tile + (cols + 1) * pad wide (+ the row label strip).
    """
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    strip = 14 if labels else 0
    left = max(map(text_width, row_labels)) + 4 if row_labels else 0
    h = n_rows * tile + (n_rows + 1) * pad + strip
    w = n_cols * tile + (n_cols + 1) * pad + left
    canvas = np.full((h, w, 3), 255, np.uint8)
    for j, text in enumerate(labels or []):
        x = left + pad + j * (tile + pad)
        canvas[:strip, x:x + tile] = text_tile(text, tile, strip)
    for i, text in enumerate(row_labels or []):
        y = strip + pad + i * (tile + pad)
        canvas[y:y + tile, :left] = text_tile(text, left, tile)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            if img is None:
                continue
            y, x = strip + pad + i * (tile + pad), left + pad + j * (tile + pad)
            canvas[y:y + tile, x:x + tile] = cv2.resize(img, (tile, tile),
                                                        interpolation=cv2.INTER_NEAREST)
    return canvas


def save_png(path: str, image: np.ndarray) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    if not cv2.imwrite(path, image[..., ::-1]):
        raise OSError(f'could not write {path}')


def center_crop(image: np.ndarray, aspect: float) -> np.ndarray:
    """The largest centred crop of an H x W x C image with width / height = ``aspect``."""
    h, w = image.shape[:2]
    ch, cw = (h, int(round(h * aspect))) if w / h > aspect else (int(round(w / aspect)), w)
    top, left = (h - ch) // 2, (w - cw) // 2
    return image[top:top + ch, left:left + cw]


def load_images(paths: Sequence[str], size: Tuple[int, int]) -> List[np.ndarray]:
    """RGB uint8 images, centre-cropped to the aspect of ``size`` (h, w) and resized to it (so
    nothing is stretched); unreadable files are an error."""
    out = []
    for p in paths:
        img = cv2.imread(p, cv2.IMREAD_COLOR)
        if img is None:
            raise OSError(f'cannot read image {p}')
        crop = center_crop(img[..., ::-1], size[1] / size[0])
        out.append(cv2.resize(crop, (size[1], size[0]), interpolation=cv2.INTER_AREA))
    return out


def list_images(folder: str, num: int, exclude: Sequence[str] = ()) -> List[str]:
    """The first ``num`` image files of ``folder`` in sorted order, leaving out ``exclude``
    (e.g. a figure written there earlier)."""
    if not os.path.isdir(folder):
        raise MissingInputError(f'image folder not found: {folder}')
    skip = {os.path.abspath(p) for p in exclude}
    paths = [p for p in sorted(glob.glob(os.path.join(folder, '*')))
             if p.lower().endswith(IMG_EXTENSIONS) and os.path.abspath(p) not in skip]
    return paths[:num]


def normalize(images: Sequence[np.ndarray], mean: Sequence[float], std: Sequence[float]
              ) -> torch.Tensor:
    """RGB uint8 H x W x 3 images -> B x 3 x H x W float, normalised."""
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def denormalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """B x 3 x H x W normalised -> B x H x W x 3 uint8."""
    x = x * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    return x.clamp(0, 255).round().byte().permute(0, 2, 3, 1).numpy()


def _config(config: str, cfg_options: Optional[Dict] = None) -> Config:
    if not os.path.isfile(config):
        raise MissingInputError(f'config file not found: {config}')
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    return cfg


def normalization_of(config: str, cfg_options: Optional[Dict] = None
                     ) -> Tuple[List[float], List[float]]:
    """(mean, std) of a pretraining config's data preprocessor."""
    pre = _config(config, cfg_options).model.data_preprocessor
    return list(pre['mean']), list(pre['std'])


def build_pretrain_model(config: str, cfg_options: Optional[Dict] = None
                         ) -> Tuple[MixedAE, Config]:
    """The MixedAE / MAE model of a pretraining config (random weights) and the config."""
    from mixedae.registry import MODELS
    cfg = _config(config, cfg_options)
    cfg.model.pop('batch_size', None)
    with DefaultScope.overwrite_default_scope('mixedae'):
        model = MODELS.build(cfg.model)
    return model.eval(), cfg


def load_pretrain_weights(model: MixedAE, checkpoint: str) -> None:
    """Load a pretraining checkpoint (encoder and decoder, as ``tools/train.py`` saves it);
    a converted backbone or any other file is refused in one line."""
    model.load_state_dict(read_pretrain_checkpoint(checkpoint, require=('decoder',)))


def vit_from_pretrain_config(config: str, checkpoint: str,
                             cfg_options: Optional[Dict] = None) -> ViT:
    """A transfer ViT with the architecture of a pretraining config, loaded from either a
    pretraining checkpoint (``backbone.*`` keys) or a converted backbone checkpoint."""
    cfg = _config(config, cfg_options)
    arch = {k: v for k, v in cfg.model.backbone.items() if k not in PRETRAIN_ONLY_ARGS}
    vit = ViT(**arch)
    sd = read_pretrain_checkpoint(checkpoint, require=())
    if any(k.startswith('backbone.') for k in sd):
        sd, _ = extract_backbone(dict(state_dict=sd), 'mixedae', checkpoint)
    vit.load_backbone_state(sd, checkpoint)
    return vit.eval()


def attention_figure(models: Sequence[Tuple[str, ViT]], images: Sequence[np.ndarray],
                     mean: Sequence[float], std: Sequence[float], tile: int) -> np.ndarray:
    """Rows: images; columns: the input, then each model's class-token attention overlaid."""
    x = normalize(images, mean, std)
    maps = [cls_attention_maps(vit, x).numpy() for _, vit in models]    # per model: B x h x w
    rows = [[img] + [overlay(img, m[i]) for m in maps] for i, img in enumerate(images)]
    return make_grid(rows, tile, labels=['input'] + [name for name, _ in models])


#: the row labels of :func:`mixing_figure`, top to bottom
MIXING_ROWS = ('input', 'visible', 'reconstruction')


@torch.no_grad()
def mixing_figure(model: MixedAE, images: Sequence[np.ndarray], mean: Sequence[float],
                  std: Sequence[float], tile: int, seed: int = 0) -> np.ndarray:
    """One MixedAE step on G images, rows labelled :data:`MIXING_ROWS`. Row 1: the mixed input,
    then the G source images. Row 2: each image's own (visible) patches. Row 3: each image's
    reconstruction (predicted patches in pixel space, visible patches pasted back)."""
    g, p = model.group_size, model.patch_size
    if g < 2 or len(images) != g:
        raise ValueError(f'mixing needs G >= 2 and G images; G = {g}, {len(images)} images')
    grid = tuple(model.backbone.patch_embed.grid_size)
    x = normalize(images, mean, std)                                   # G x 3 x H x W
    assign = sample_assignment(1, model.num_patches, g,
                               generator=torch.Generator().manual_seed(seed))   # 1 x N
    out = model.reconstruct_mixed(x, assign, torch.zeros(1, dtype=torch.long))
    patches = patchify(x, p)                                           # G x N x P
    mixed = unpatchify(patches[assign[0], torch.arange(model.num_patches)][None], p, grid)
    visible = out['visible'].unsqueeze(-1)                             # G x N x 1
    pred = out['pred']
    if model.norm_pix_loss:   # predictions are per-patch normalised: use the target's stats
        target = out['target']
        pred = pred * (target.var(-1, keepdim=True) + 1e-6).sqrt() + target.mean(-1, keepdim=True)
    recon = torch.where(visible, patches, pred)
    own = torch.where(visible, patches, torch.zeros_like(patches))     # masked = mean colour

    def to_images(t: torch.Tensor) -> List[np.ndarray]:                # G x N x P -> G images
        return list(denormalize(unpatchify(t, p, grid), mean, std))

    rows = [[denormalize(mixed, mean, std)[0]] + to_images(patches),
            [None] + to_images(own), [None] + to_images(recon)]
    labels = ['mixed input'] + [f'image {i + 1}' for i in range(g)]
    return make_grid(rows, tile, labels=labels, row_labels=MIXING_ROWS)
