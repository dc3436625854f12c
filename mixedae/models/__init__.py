from .algorithms import MixedAE
from .backbones import MixedViT, ViT
from .necks import MAEDecoder

__all__ = ['MAEDecoder', 'MixedAE', 'MixedViT', 'ViT']
