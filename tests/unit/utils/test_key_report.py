"""Key reports (``mixedae.utils.key_report``): coverage of a model's keys by a checkpoint's,
and the short lists of keys that one-line errors and logs show."""
import pytest

from mixedae.utils.key_report import describe_keys, key_coverage, summarize_keys


def test_key_coverage_ignores_the_ddp_prefix():
    assert key_coverage(['a', 'b', 'c'], ['module.a', 'x', 'b']) == (['c'], ['x'])
    assert key_coverage([], []) == ([], [])


@pytest.mark.parametrize('count,first,text', [
    (0, 5, '0'), (2, 5, '2: k0, k1'), (5, 5, '5: k0, k1, k2, k3, k4'),
    (6, 5, '6: k0, k1, k2, k3, k4, ...'), (7, 3, '7: k0, k1, k2, ...')])
def test_describe_keys_shows_the_first_keys(count, first, text):
    keys = [f'k{i}' for i in range(count)]
    assert describe_keys(keys, first) == text
    if first == 5:
        assert describe_keys(keys) == text


def test_per_block_keys_are_collapsed_in_first_seen_order():
    assert summarize_keys(['blocks.0.ls1.gamma', 'pos_embed', 'blocks.11.ls1.gamma',
                          'cls_token']) == 'blocks.{0,11}.ls1.gamma, pos_embed, cls_token'
