from .image_folder import ImageFolder
from .samplers import GroupSampler
from .transforms import LoadRGBImage, PackImageInputs, RandomResizedCrop

__all__ = ['GroupSampler', 'ImageFolder', 'LoadRGBImage', 'PackImageInputs',
           'RandomResizedCrop']
