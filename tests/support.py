"""What several test modules share: the repository root, the tools, tiny model sizes, the tiny
configs and pointing a config at a data root. (Fixtures live in conftest.py.)"""
import importlib.util
import os
from typing import List

from mixedae.suite.repo import Repo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = Repo(ROOT)

#: the smallest ViT the tests use: 32x32 images, 8x8 patches (a 4x4 grid), 2 blocks.
TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4)


def load_tool(name: str):
    """Import ``tools/<name>.py`` as a module (the tools are scripts, not a package)."""
    path = os.path.join(ROOT, 'tools', f'{name}.py')
    spec = importlib.util.spec_from_file_location(f'tools_{name}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def data_root_options(root: str) -> List[str]:
    """``--cfg-options`` pointing the train, val and test datasets of a config at ``root``."""
    return [f'{loader}.dataset.data_root={root}'
            for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
