from .image_folder import ImageFolder
from .transforms import LoadRGBImage, PackImageInputs, RandomResizedCrop
from .validation import CheckSegAnnotation, DataError, NamedSampleErrors

__all__ = ['CheckSegAnnotation', 'DataError', 'ImageFolder', 'LoadRGBImage', 'NamedSampleErrors',
           'PackImageInputs', 'RandomResizedCrop']
