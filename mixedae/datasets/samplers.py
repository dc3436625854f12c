"""A data sampler that keeps families of consecutive images together.

The generated scenes come in families of consecutive images sharing one look
(:mod:`mixedae.datasets.synthetic`); MixedAE mixes groups of G consecutive images of a batch.
:class:`FamilySampler` shuffles whole families, so that with a batch size that is a multiple
of G = ``family`` every mixing group is one family.
"""
from __future__ import annotations

from typing import Iterator, Optional, Sized

from mmengine.dataset import DefaultSampler

from mixedae.registry import DATA_SAMPLERS
from mixedae.utils.errors import InvalidInputError


@DATA_SAMPLERS.register_module()
class FamilySampler(DefaultSampler):
    """Shuffles families of ``family`` consecutive dataset indices (0 .. family - 1, then
    family .. 2 * family - 1, ...) and yields the indices of each family consecutively, in
    order. It is MMEngine's DefaultSampler over the families (seed synchronised across ranks
    when not given, a new order per epoch through ``set_epoch``, ``round_up`` padding), so the
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
        super().__init__(range(len(dataset) // family), shuffle, seed, round_up)
        self.images = dataset
        self.family = family

    def __iter__(self) -> Iterator[int]:
        for f in super().__iter__():                   # this rank's families, in epoch order
            yield from range(f * self.family, (f + 1) * self.family)

    def __len__(self) -> int:
        """The number of indices this rank yields."""
        return self.num_samples * self.family
