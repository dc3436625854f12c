"""``mixedae.ADE20KDataset``: mmseg's ADE20K dataset whose sample errors name their files."""
from mmseg.datasets import ADE20KDataset as _ADE20KDataset

from mixedae.registry import DATASETS

from .validation import NamedSampleErrors


@DATASETS.register_module()
class ADE20KDataset(NamedSampleErrors, _ADE20KDataset):
    """mmseg's ``ADE20KDataset``; a failing sample is re-raised naming its image and label."""
