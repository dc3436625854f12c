"""mixedae.suite.demo.presets: the blocks whose features the transfer heads read."""
from mixedae.suite.demo.presets import out_indices


def test_out_indices():
    assert out_indices(4) == [0, 1, 2, 3]
    assert out_indices(12) == [2, 5, 8, 11]
