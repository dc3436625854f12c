from .checkpoint import (CheckpointError, load_checkpoint_file, register_safe_local_loader,
                         state_dict_of)

__all__ = ['CheckpointError', 'load_checkpoint_file', 'register_safe_local_loader',
           'state_dict_of']
