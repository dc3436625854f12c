"""mixedae.FamilySampler: shuffled families of consecutive indices, split by whole families
over ranks; and the pretraining folder lists the generated scenes in family order."""
from unittest import mock

import pytest
from mmengine.registry import DefaultScope

from mixedae.datasets import FamilySampler, ImageFolder
from mixedae.datasets.synthetic import write_dataset
from mixedae.registry import DATA_SAMPLERS
from mixedae.utils.errors import InvalidInputError


def families(indices, family):
    """Consecutive runs of ``family`` indices -> the family of each run; asserts each run is
    one whole family in order."""
    runs = [indices[i:i + family] for i in range(0, len(indices), family)]
    for run in runs:
        assert run == list(range(run[0], run[0] + family)) and run[0] % family == 0, run
    return [run[0] // family for run in runs]


def on_rank(rank, world_size, **kwargs):
    with mock.patch('mmengine.dataset.sampler.get_dist_info', return_value=(rank, world_size)):
        return FamilySampler(**kwargs)


def test_one_epoch_is_a_permutation_of_whole_families():
    sampler = FamilySampler(range(40), family=4, seed=0)
    indices = list(sampler)
    assert len(sampler) == 40 and sorted(indices) == list(range(40))
    order = families(indices, 4)
    assert sorted(order) == list(range(10)) and order != list(range(10))    # shuffled


def test_order_is_fixed_by_seed_and_epoch():
    first, again = FamilySampler(range(40), 4, seed=3), FamilySampler(range(40), 4, seed=3)
    assert list(first) == list(again) == list(first)                   # same epoch: same order
    epoch0 = list(first)
    first.set_epoch(1)
    assert list(first) != epoch0 and sorted(first) == sorted(epoch0)
    assert list(FamilySampler(range(40), 4, seed=4)) != epoch0
    assert list(FamilySampler(range(40), 4, shuffle=False, seed=3)) == list(range(40))


@pytest.mark.parametrize('world_size,round_up', [(2, True), (3, True), (3, False), (4, False)])
def test_ranks_split_whole_families_covering_each_once(world_size, round_up):
    """10 families of 4 over the ranks: each rank gets whole families; without round_up every
    family exactly once, with it every family once plus repeats up to equal shares."""
    per_rank = [list(on_rank(r, world_size, dataset=range(40), family=4, seed=7,
                             round_up=round_up)) for r in range(world_size)]
    samplers = [on_rank(r, world_size, dataset=range(40), family=4, seed=7, round_up=round_up)
                for r in range(world_size)]
    assert [len(s) for s in samplers] == [len(p) for p in per_rank]
    got = [f for p in per_rank for f in families(p, 4)]
    if round_up:
        assert len({len(p) for p in per_rank}) == 1
        assert set(got) == set(range(10)) and len(got) == -(-10 // world_size) * world_size
    else:
        assert sorted(got) == list(range(10))
    assert got[:1] == families(list(FamilySampler(range(40), 4, seed=7)), 4)[:1]


def test_a_length_that_is_not_a_multiple_of_family_is_refused():
    with pytest.raises(InvalidInputError, match='holds 10 images, not a positive multiple of '
                                                'family=4'):
        FamilySampler(range(10), family=4, seed=0)
    with pytest.raises(InvalidInputError, match='family must be a positive integer'):
        FamilySampler(range(8), family=0, seed=0)


def test_built_from_a_config_under_the_mixedae_scope():
    with DefaultScope.overwrite_default_scope('mixedae'):
        sampler = DATA_SAMPLERS.build(dict(type='mixedae.FamilySampler', family=2),
                                      default_args=dict(dataset=range(8), seed=0))
    assert isinstance(sampler, FamilySampler) and sampler.seed == 0 and sampler.family == 2


def test_pretraining_folder_lists_the_scenes_in_family_order(tmp_path):
    """ImageFolder lists the generated pretraining images in scene order, so that indices
    4k .. 4k+3 are one family of the generator."""
    root = write_dataset(str(tmp_path / 'd'), 12, 1, (32, 32), seed=0,
                         views=('pretrain',))['pretrain']
    dataset = ImageFolder(data_root=root, pipeline=[])
    paths = [dataset.get_data_info(i)['img_path'] for i in range(len(dataset))]
    assert [p.rsplit('/', 1)[1] for p in paths] == [f'{i:08d}.jpg' for i in range(12)]


def test_runner_batches_hold_whole_families(tmp_path):
    """Built by MMEngine's Runner as a pretraining config would (batch 8, family 4): every
    mixing group of 4 consecutive images of a batch is one generated family."""
    from mmengine.runner import Runner
    root = write_dataset(str(tmp_path / 'd'), 16, 1, (32, 32), seed=0,
                         views=('pretrain',))['pretrain']
    with DefaultScope.overwrite_default_scope('mixedae'):
        loader = Runner.build_dataloader(dict(
            batch_size=8, num_workers=0, drop_last=True, collate_fn=dict(type='pseudo_collate'),
            sampler=dict(type='mixedae.FamilySampler', family=4, shuffle=True),
            dataset=dict(type='ImageFolder', data_root=root, pipeline=[])), seed=5)
    names = [int(p[-12:-4]) for batch in loader for p in batch['img_path']]   # pseudo_collate
    assert len(names) == 16 and families(names, 4) != [0, 1, 2, 3]
