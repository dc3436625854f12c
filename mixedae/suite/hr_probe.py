"""Homologous recognition of MixedAE encoders on fixed mixed sequences
(``tools/measure_hr_acc.py``): the same images and the same mixing assignment for every set of
weights, so trained and untrained encoders are compared on equal terms.

``hr_acc`` is :func:`~mixedae.models.layers.topk_attention.homologous_precision`: among the
patch keys other than its own that a patch query of a top-K layer keeps, the fraction from the
query's image; the encoder's value is the mean over its top-K layers, as MixedAE logs it.

Beside the encoders, two selectors without learning (``SELECTORS``) make the same choice on the
same mixed sequences: each patch query keeps the K tokens nearest to it (Euclidean) in the mean
colour of the patch or in its raw pixels, K being the config's top-K (which counts the query
itself, always nearest at distance 0). They keep no class token: a class token has no pixels,
and ``homologous_precision`` counts none anyway. What they score is what the images' own look
gives away without any network.
"""
from __future__ import annotations

from typing import Callable, Dict, List, Sequence, Tuple

import torch
from torch import Tensor

from mixedae.models import MixedAE
from mixedae.models.layers.topk_attention import hr_acc_chance, homologous_precision, topk_keep
from mixedae.models.utils.mixing import mix, sample_assignment
from mixedae.models.utils.patches import patchify
from mixedae.utils.errors import InvalidInputError
from .figures import build_pretrain_model, list_images, load_images, normalize
from .pretrain_checkpoint import CheckpointKindError, encoder_weights, read_pretrain_checkpoint
from .step0 import step0_model

#: backbone parameters a checkpoint may lack; they are set to zero (a MAE encoder, G = 1, has
#: no segment embeddings: zero ones add nothing to its tokens).
ZEROABLE = ('segment_embed',)


@torch.no_grad()
def layer_hr_acc(model: MixedAE, images: torch.Tensor, assign: torch.Tensor) -> List[float]:
    """hr_acc of each top-K layer of ``model``'s encoder, in eval mode, on images B x 3 x H x W
    (normalised) mixed as ``assign`` T x N says (compose mode: sequence t mixes images
    t*G .. t*G+G-1)."""
    model.eval()
    model.set_hr_acc(True)
    _, ctx = model.backbone.encode_mixed(images, assign, torch.arange(len(assign)))
    if not ctx.precisions:
        raise InvalidInputError('the encoder has no top-K (homologous) layers: attn_mode must '
                                'be topk')
    return [p.item() for p in ctx.precisions]


def mean_colour(patches: Tensor) -> Tensor:
    """B x N x (p*p*C) patch vectors (MAE's layout, channels last) -> B x N x C mean colours."""
    return patches.unflatten(-1, (-1, 3)).mean(dim=-2)


def raw_pixels(patches: Tensor) -> Tensor:
    """The patch vectors themselves: B x N x (p*p*C)."""
    return patches


#: no-learning selectors: name -> the features (B x N x F) it compares patches by.
SELECTORS: Dict[str, Callable[[Tensor], Tensor]] = {'mean colour': mean_colour,
                                                    'raw pixels': raw_pixels}


def nearest_keep(features: Tensor, topk: int, num_prefix: int) -> Tensor:
    """Keep mask of a selector: features T x N x F of the patches of each mixed sequence ->
    T x 1 x (P+N) x (P+N) bool, P = ``num_prefix`` class tokens first. Each patch query keeps
    the ``topk`` patches nearest in Euclidean distance, itself included (ties at the K-th all
    kept, as in the top-K layers); prefix rows and columns keep nothing."""
    t, n, _ = features.shape
    dist = torch.cdist(features.double(), features.double())               # T x N x N
    dist.diagonal(dim1=-2, dim2=-1).zero_()                                # itself: nearest
    keep = torch.zeros(t, 1, num_prefix + n, num_prefix + n, dtype=torch.bool)
    keep[:, 0, num_prefix:, num_prefix:] = topk_keep(-dist, min(topk, n))
    return keep


def selector_hr_acc(features: Tensor, assign: Tensor, topk: int, group_size: int) -> float:
    """hr_acc of the nearest-patch selector on per-image patch features B x N x F (B = T*G),
    mixed as ``assign`` T x N says (compose mode), labelled as ``MixedViT.encode_mixed`` labels
    its tokens (G class tokens, then each patch's source)."""
    t, g = len(assign), group_size
    mixed = mix(features, assign, torch.arange(t), g)                      # T x N x F
    labels = torch.cat([torch.arange(g).expand(t, g), assign], dim=1)      # T x (G+N)
    return homologous_precision(nearest_keep(mixed, topk, g), labels, g).item()


def load_encoder(model: MixedAE, checkpoint: str) -> List[str]:
    """Load the ``backbone.*`` weights of a pretraining checkpoint into ``model.backbone``.

    Returns the backbone parameters the checkpoint lacks, which are set to zero: only those
    of ``ZEROABLE`` may be missing (``['segment_embed']`` for a MAE checkpoint). Raises
    CheckpointKindError for a file without backbone weights
    (:func:`~.pretrain_checkpoint.read_pretrain_checkpoint`), other missing or unexpected keys,
    or shapes of another architecture.
    """
    weights = encoder_weights(read_pretrain_checkpoint(checkpoint))
    try:
        missing, unexpected = model.backbone.load_state_dict(weights, strict=False)
    except RuntimeError as err:
        raise CheckpointKindError(f'{checkpoint} does not fit the config\'s encoder: {err}')
    refused = [k for k in missing if k not in ZEROABLE]
    if refused or unexpected:
        raise CheckpointKindError(f'{checkpoint} does not fit the config\'s encoder: missing '
                                  f'{refused}, unexpected {unexpected}')
    params = dict(model.backbone.named_parameters())
    with torch.no_grad():
        for name in missing:
            params[name].zero_()
    return list(missing)


def probe_images(model: MixedAE, image_dir: str, num: int, mean: Sequence[float],
                 std: Sequence[float]) -> torch.Tensor:
    """The first ``num`` images of ``image_dir`` (sorted names), centre-cropped and resized to
    the encoder's image size and normalised: num x 3 x H x W."""
    paths = list_images(image_dir, num)
    if len(paths) < num:
        raise InvalidInputError(f'{image_dir} holds {len(paths)} images, fewer than --num {num}')
    size = tuple(model.backbone.patch_embed.img_size)
    return normalize(load_images(paths, size), mean, std)


def measure_hr_acc(config: str, image_dir: str, num: int = 64, seed: int = 0,
                   checkpoints: Sequence[Tuple[str, str]] = (),
                   inits: Sequence[Tuple[str, int]] = ()) -> Dict:
    """hr_acc of each labelled encoder on the same ``num`` images and mixing assignment.

    config: a MixedAE pretraining config (G, K, top-K layers, image size, initialisation);
    checkpoints: (label, pretraining checkpoint) pairs (MixedAE, or MAE with zero segment
    embeddings); inits: (label, seed of an untrained model of the config) pairs; labels are
    unique. seed: the mixing assignment's. Returns {label: {"hr_acc", "per_layer", "source"[,
    "missing_zeroed"]}, "_chance", "_config", "_num", "_seed", "_selectors": {name: {"hr_acc"}}}
    with the no-learning selectors (``SELECTORS``) on the same normalised images and mixing.
    """
    labels = [label for label, _ in [*checkpoints, *inits]]
    if not labels:
        raise InvalidInputError('nothing to measure: give at least one checkpoint or init seed')
    bad = sorted({label for label in labels
                  if not label or label.startswith('_') or labels.count(label) > 1})
    if bad:
        raise InvalidInputError(f'labels must be unique, non-empty and not start with "_": {bad}')
    torch.manual_seed(0)
    model, cfg = build_pretrain_model(config)
    g, n = model.group_size, model.num_patches
    if g < 2:
        raise InvalidInputError(f'{config}: group_size is {g}; hr_acc needs mixing (G >= 2)')
    if num < g or num % g:
        raise InvalidInputError(f'--num {num} must be a positive multiple of G = {g}')
    pre = cfg.model.data_preprocessor
    images = probe_images(model, image_dir, num, pre['mean'], pre['std'])
    assign = sample_assignment(num // g, n, g, generator=torch.Generator().manual_seed(seed))
    result: Dict = {}
    for label, path in checkpoints:       # every encoder weight is loaded or zeroed: one model
        zeroed = load_encoder(model, path)
        result[label] = dict(_summary(layer_hr_acc(model, images, assign)),
                             source=f'checkpoint {path}', missing_zeroed=zeroed)
    for label, init_seed in inits:
        model = step0_model(config, init_seed)
        result[label] = dict(_summary(layer_hr_acc(model, images, assign)),
                             source=f'init seed {init_seed}')
    patches = patchify(images, model.backbone.patch_embed.patch_size[0])  # num x N x (p*p*3)
    selectors = {name: dict(hr_acc=selector_hr_acc(features(patches), assign,
                                                   model.backbone.topk, g))
                 for name, features in SELECTORS.items()}
    result.update(_chance=hr_acc_chance(n, g), _config=config, _num=num, _seed=seed,
                  _selectors=selectors)
    return result


def _summary(per_layer: List[float]) -> Dict:
    """hr_acc (mean over the top-K layers, as MixedAE logs it) and the per-layer values."""
    return dict(hr_acc=torch.tensor(per_layer).mean().item(), per_layer=per_layer)
