from .image_folder import ImageFolder
from .transforms import LoadRGBImage, PackImageInputs, RandomResizedCrop

__all__ = ['ImageFolder', 'LoadRGBImage', 'PackImageInputs', 'RandomResizedCrop']
