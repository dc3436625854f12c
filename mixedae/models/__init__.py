from .backbones import ViT

__all__ = ['ViT']
