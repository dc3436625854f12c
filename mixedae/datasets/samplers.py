"""A data sampler that keeps families of consecutive images together.

The generated scenes come in families of consecutive images sharing one look
(:mod:`mixedae.datasets.synthetic`); MixedAE mixes groups of G consecutive images of a batch.
:class:`FamilySampler` shuffles whole families, so that with a batch size that is a multiple
of G = ``family`` every mixing group is one family.
"""
from __future__ import annotations

import math
from typing import Iterator, List, Optional, Sized

import torch
from mmengine.dist import get_dist_info, sync_random_seed
from torch.utils.data import Sampler

from mixedae.registry import DATA_SAMPLERS
from mixedae.utils.errors import InvalidInputError


def family_order(num_families: int, seed: int, epoch: int, shuffle: bool) -> List[int]:
    """The order of the families in one epoch: a permutation of range(num_families), drawn
    from ``seed + epoch`` as MMEngine's DefaultSampler draws its order (identity without
    ``shuffle``)."""
    if not shuffle:
        return list(range(num_families))
    generator = torch.Generator().manual_seed(seed + epoch)
    return torch.randperm(num_families, generator=generator).tolist()


def rank_families(order: List[int], rank: int, world_size: int, round_up: bool) -> List[int]:
    """The families of ``rank``: every ``world_size``-th of ``order`` from ``rank``; with
    ``round_up`` the order is first repeated up to a multiple of ``world_size`` (as
    DefaultSampler pads its indices), so that every rank gets as many families."""
    if round_up:
        total = math.ceil(len(order) / world_size) * world_size
        order = (order * (total // len(order) + 1))[:total]
    return order[rank::world_size]


@DATA_SAMPLERS.register_module()
class FamilySampler(Sampler):
    """Shuffles families of ``family`` consecutive dataset indices (0 .. family - 1, then
    family .. 2 * family - 1, ...) and yields the indices of each family consecutively, in
    order. Distributed like MMEngine's DefaultSampler (seed synchronised across ranks when not
    given, a new order per epoch through ``set_epoch``, ``round_up`` padding), except that the
    ranks split whole families.

    Args:
        dataset: its length must be a multiple of ``family``.
        family: consecutive indices kept together (the data generator's ``--family``; set it
            to the config's group size G and the batch size to a multiple of it).
        shuffle: shuffle the families (their indices stay in order).
        seed: the shuffling seed, identical on every rank (None: one synchronised draw).
        round_up: repeat families so that every rank gets as many.
    """

    def __init__(self, dataset: Sized, family: int = 4, shuffle: bool = True,
                 seed: Optional[int] = None, round_up: bool = True) -> None:
        if not isinstance(family, int) or family < 1:
            raise InvalidInputError(f'FamilySampler: family must be a positive integer, got '
                                    f'{family!r}')
        if len(dataset) % family or not len(dataset):
            raise InvalidInputError(
                f'FamilySampler: the dataset holds {len(dataset)} images, not a positive '
                f'multiple of family={family}; generate a number of images that is one '
                f'(tools/make_synthetic_data.py --num-train) or set the sampler\'s family to '
                f'the generator\'s --family')
        self.rank, self.world_size = get_dist_info()
        self.dataset = dataset
        self.family = family
        self.shuffle = shuffle
        self.seed = sync_random_seed() if seed is None else seed
        self.round_up = round_up
        self.epoch = 0
        families = len(dataset) // family
        self.num_families = (math.ceil(families / self.world_size) if round_up
                             else len(range(self.rank, families, self.world_size)))

    def __iter__(self) -> Iterator[int]:
        order = family_order(len(self.dataset) // self.family, self.seed, self.epoch,
                             self.shuffle)
        for f in rank_families(order, self.rank, self.world_size, self.round_up):
            yield from range(f * self.family, (f + 1) * self.family)

    def __len__(self) -> int:
        """The number of indices this rank yields."""
        return self.num_families * self.family

    def set_epoch(self, epoch: int) -> None:
        """Draw the order of ``epoch`` on the next iteration (DistSamplerSeedHook calls it)."""
        self.epoch = epoch
