from .algorithms import MixedAE
from .backbones import MixedViT, ViT
from .necks import MAEDecoder, SimpleFeaturePyramid

__all__ = ['MAEDecoder', 'MixedAE', 'MixedViT', 'SimpleFeaturePyramid', 'ViT']
