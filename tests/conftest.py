import importlib.util
import os

# Triton reads TRITON_INTERPRET when it is imported and when a kernel is decorated: set it before
# anything imports triton (torch._dynamo, mixedae) so the top-K attention kernel runs in Triton's
# CPU interpreter (tests/test_topk_attention.py). Model code never calls Triton on CPU tensors.
os.environ.setdefault('TRITON_INTERPRET', '1')

import pytest  # noqa: E402
import torch  # noqa: E402

# before any test module imports mmcv.ops: mmcv without compiled ops needs mixedae's mmcv._ext
import mixedae  # noqa: E402,F401

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load_tool(name: str):
    """Import ``tools/<name>.py`` as a module (the tools are scripts, not a package)."""
    path = os.path.join(ROOT, 'tools', f'{name}.py')
    spec = importlib.util.spec_from_file_location(f'tools_{name}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


#: the smallest ViT the tests use: 32x32 images, 8x8 patches (a 4x4 grid), 2 blocks.
TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


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
