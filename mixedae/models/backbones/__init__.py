from .mixed_vit import MixedViT
from .vit import ViT

__all__ = ['MixedViT', 'ViT']
