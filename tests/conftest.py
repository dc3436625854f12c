import os

# Triton reads TRITON_INTERPRET when it is imported and when a kernel is decorated: set it before
# anything imports triton (torch._dynamo, mixedae) so the top-K attention kernel runs in Triton's
# CPU interpreter (tests/unit/models/test_topk_attention.py). Model code never calls Triton on
# CPU tensors.
os.environ.setdefault('TRITON_INTERPRET', '1')

import pytest  # noqa: E402
import torch  # noqa: E402

# before any test module imports mmcv.ops: mmcv without compiled ops needs mixedae's mmcv._ext
import mixedae  # noqa: E402,F401
from support import TINY  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope='session')
def ade_root(tmp_path_factory):
    """A generated ADE20K-format dataset (12 train, 4 val scenes of 64 x 80), shared read-only
    by the tests that need a valid one."""
    from mixedae.datasets.synthetic import write_dataset
    return write_dataset(str(tmp_path_factory.mktemp('ade')), num_train=12, num_val=4,
                         size=(64, 80), seed=0, views=('ade20k',))['ade20k']


@pytest.fixture
def tiny_cfg():
    return dict(TINY)


@pytest.fixture
def images(tmp_path):
    """32 random RGB images (40 x 48) in a folder: data for the tiny pretraining config."""
    import numpy as np
    from PIL import Image
    folder = tmp_path / 'images'
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(32):
        Image.fromarray((rng.random((40, 48, 3)) * 255).astype(np.uint8)).save(
            folder / f'{i:02d}.png')
    return folder
