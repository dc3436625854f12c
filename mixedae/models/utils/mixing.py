"""Pure tensor functions of MixedAE's input side: mixing, unmixing and MAE masking.

Conventions. A batch of B = S*G images is split into S groups of G consecutive images
(group s holds images s*G .. s*G+G-1). Each of N patch positions of a mixed sequence is taken
from one source image of its group; ``assign`` (T x N, values in [0, G)) says which. ``groups``
(T,) says which group each of the T mixed sequences was made from: T = S in compose mode,
T = S*G in full mode.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch


def sample_assignment(num_groups: int, num_patches: int, group_size: int,
                      device: Optional[torch.device] = None,
                      generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Balanced random assignment (balance chosen here, docs/method.md): S x N, each source
    image owns exactly N/G positions."""
    if num_patches % group_size:
        raise ValueError(f'{num_patches} patches cannot be split evenly among {group_size} '
                         'images (N % G != 0)')
    perm = torch.rand(num_groups, num_patches, device=device, generator=generator).argsort(dim=1)
    return perm % group_size                                           # S x N


def full_mode_assignment(assign: torch.Tensor, group_size: int
                         ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Full mixing mode: G sequences per group with cyclically shifted sources.

    assign: S x N -> (S*G) x N, where sequence s*G + j takes position n from image
    (assign[s, n] + j) mod G, so every patch of every image is in exactly one sequence; and the
    group index of each sequence, (S*G,).
    """
    s, n = assign.shape
    shifts = torch.arange(group_size, device=assign.device).view(1, group_size, 1)
    shifted = (assign.unsqueeze(1) + shifts) % group_size              # S x G x N
    groups = torch.arange(s, device=assign.device).repeat_interleave(group_size)
    return shifted.reshape(s * group_size, n), groups


def mix(patches: torch.Tensor, assign: torch.Tensor, groups: torch.Tensor,
        group_size: int) -> torch.Tensor:
    """patches: B x N x D (B = S*G) -> mixed sequences T x N x D, position n of sequence t
    taken from image groups[t]*G + assign[t, n]."""
    source = groups.unsqueeze(1) * group_size + assign                 # T x N
    positions = torch.arange(patches.shape[1], device=patches.device)
    return patches[source, positions]                                  # T x N x D


def owned_positions(assign: torch.Tensor, group_size: int) -> torch.Tensor:
    """Positions each source owns in each sequence, increasing: T x G x N/G."""
    t, n = assign.shape
    sources = torch.arange(group_size, device=assign.device).view(1, group_size, 1)
    owned = (assign.unsqueeze(1) == sources).to(torch.int8)            # T x G x N
    return owned.argsort(dim=-1, descending=True, stable=True)[..., :n // group_size]


def unmix(tokens: torch.Tensor, assign: torch.Tensor, group_size: int) -> torch.Tensor:
    """Scatter mixed-sequence tokens back per source image.

    tokens: T x N x D -> (T*G) x N/G x D; row t*G + g holds, in increasing position order,
    the tokens that image groups[t]*G + g contributed to sequence t.
    """
    t, n, d = tokens.shape
    ids = owned_positions(assign, group_size).reshape(t, n)            # T x (G * N/G)
    out = tokens.gather(1, ids.unsqueeze(-1).expand(-1, -1, d))
    return out.reshape(t * group_size, n // group_size, d)


def random_masking(batch: int, num_patches: int, mask_ratio: float,
                   device: Optional[torch.device] = None,
                   generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """MAE's per-image uniform random masking: kept positions, B x N_keep, increasing."""
    if not 0 <= mask_ratio < 1:
        raise ValueError(f'mask_ratio must be in [0, 1), got {mask_ratio}')
    keep = int(num_patches * (1 - mask_ratio))
    noise = torch.rand(batch, num_patches, device=device, generator=generator)
    return noise.argsort(dim=1)[:, :keep].sort(dim=1).values


def visible_mask(visible_ids: torch.Tensor, num_patches: int) -> torch.Tensor:
    """Kept positions B x K -> boolean B x N, True where the patch was visible."""
    mask = torch.zeros(visible_ids.shape[0], num_patches, dtype=torch.bool,
                       device=visible_ids.device)
    return mask.scatter_(1, visible_ids, True)
