"""Sampler that hands out whole mixing groups."""
from __future__ import annotations

from typing import Iterator, Optional, Sized

from mmengine.dataset import DefaultSampler

from mixedae.registry import DATA_SAMPLERS


@DATA_SAMPLERS.register_module()
class GroupSampler(DefaultSampler):
    """``DefaultSampler`` whose per-rank index list is cut to a multiple of ``group_size``.

    MixedAE mixes consecutive images of a batch in groups of G; with a batch size divisible by
    G, every batch (the last, shorter one included) then holds whole groups. The incomplete
    last group of each rank is dropped.
    """

    def __init__(self, dataset: Sized, group_size: int, shuffle: bool = True,
                 seed: Optional[int] = None, round_up: bool = True) -> None:
        super().__init__(dataset, shuffle=shuffle, seed=seed, round_up=round_up)
        if group_size < 1:
            raise ValueError(f'group_size must be >= 1, got {group_size}')
        self.group_size = group_size
        self.num_samples -= self.num_samples % group_size
        if self.num_samples == 0:
            raise ValueError(f'{len(dataset)} images give no complete group of {group_size} '
                             f'per process')

    def __iter__(self) -> Iterator[int]:
        return iter(list(super().__iter__())[:self.num_samples])
