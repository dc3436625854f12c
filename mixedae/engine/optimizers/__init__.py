from .layer_decay_constructor import LayerDecayOptimWrapperConstructor, layer_lr_scale

__all__ = ['LayerDecayOptimWrapperConstructor', 'layer_lr_scale']
