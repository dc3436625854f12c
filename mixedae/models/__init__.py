from .algorithms import MixedAE
from .backbones import MixedViT, ViT
from .necks import LayerNorm2d, MAEDecoder, SimpleFeaturePyramid

__all__ = ['LayerNorm2d', 'MAEDecoder', 'MixedAE', 'MixedViT', 'SimpleFeaturePyramid', 'ViT']
