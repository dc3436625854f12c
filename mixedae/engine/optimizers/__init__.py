from .amp_optim_wrapper import AmpOptimWrapper
from .layer_decay_constructor import LayerDecayOptimWrapperConstructor, layer_lr_scale

__all__ = ['AmpOptimWrapper', 'LayerDecayOptimWrapperConstructor', 'layer_lr_scale']
