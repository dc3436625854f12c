from .image_folder import ImageFolder
from .samplers import FamilySampler
from .transforms import LoadRGBImage, PackImageInputs, RandomResizedCrop
from .validation import CheckSegAnnotation, DataError, NamedSampleErrors

__all__ = ['CheckSegAnnotation', 'DataError', 'FamilySampler', 'ImageFolder', 'LoadRGBImage',
           'NamedSampleErrors', 'PackImageInputs', 'RandomResizedCrop']
