"""mmseg's segmentation datasets whose sample errors name their files."""
from mmseg.datasets import ADE20KDataset as _ADE20KDataset
from mmseg.datasets import BaseSegDataset as _BaseSegDataset

from mixedae.registry import DATASETS

from .validation import NamedSampleErrors


@DATASETS.register_module()
class ADE20KDataset(NamedSampleErrors, _ADE20KDataset):
    """mmseg's ``ADE20KDataset``; a failing sample is re-raised naming its image and label."""


@DATASETS.register_module()
class BaseSegDataset(NamedSampleErrors, _BaseSegDataset):
    """mmseg's ``BaseSegDataset`` (any class list, e.g. the generated scenes' shapes); a failing
    sample is re-raised naming its image and label."""
