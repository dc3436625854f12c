from .image_folder import ImageFolder
from .samplers import GroupSampler
from .transforms import LoadRGBImage, PackImageInputs, RandomResizedCrop
from .validation import CheckSegAnnotation, DataError, NamedSampleErrors

__all__ = ['CheckSegAnnotation', 'DataError', 'GroupSampler', 'ImageFolder', 'LoadRGBImage',
           'NamedSampleErrors', 'PackImageInputs', 'RandomResizedCrop']
