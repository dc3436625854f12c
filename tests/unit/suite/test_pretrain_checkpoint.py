"""The suite's one reader of pretraining checkpoints (``mixedae.suite.pretrain_checkpoint``)."""
import re

import pytest
import torch

from mixedae.suite.pretrain_checkpoint import (CheckpointKindError, encoder_weights,
                                               read_pretrain_checkpoint)
from mixedae.utils.checkpoint import CheckpointError


def pretraining_state():
    """The parts of a tools/train.py pretraining checkpoint: encoder, decoder, a head."""
    return {'backbone.cls_token': torch.randn(1, 1, 4), 'backbone.segment_embed': torch.randn(2, 4),
            'decoder.mask_token': torch.randn(1, 1, 4), 'contrast_head.w': torch.randn(3)}


def test_reads_the_weights_and_the_encoder_of_a_pretraining_checkpoint(tmp_path):
    sd = pretraining_state()
    torch.save(dict(meta=dict(epoch=4), state_dict=sd, optimizer={}), tmp_path / 'epoch_4.pth')
    read = read_pretrain_checkpoint(str(tmp_path / 'epoch_4.pth'), require=('backbone', 'decoder'))
    assert read.keys() == sd.keys() and all(torch.equal(read[k], sd[k]) for k in sd)
    encoder = encoder_weights(read)
    assert encoder.keys() == {'cls_token', 'segment_embed'}
    assert torch.equal(encoder['segment_embed'], sd['backbone.segment_embed'])


def test_a_file_without_a_required_part_is_named_in_one_line(tmp_path):
    path = tmp_path / 'vit.pth'
    torch.save(dict(state_dict={'cls_token': torch.zeros(1, 1, 4)}), path)   # a converted backbone
    with pytest.raises(CheckpointKindError, match=re.escape(
            f'{path} has no backbone.*, decoder.* weights: this needs a pretraining checkpoint '
            '(work_dirs/<run>/epoch_N.pth from tools/train.py), not a converted backbone')):
        read_pretrain_checkpoint(str(path), require=('backbone', 'decoder'))
    assert read_pretrain_checkpoint(str(path), require=()).keys() == {'cls_token'}


def test_a_release_layout_names_its_conversion_where_a_backbone_will_do(tmp_path):
    path = tmp_path / 'mae_pretrain.pth'
    torch.save(dict(model={'cls_token': torch.zeros(1, 1, 4)}), path)
    with pytest.raises(CheckpointError, match=re.escape(
            f'convert it first with .venv/bin/python tools/convert_checkpoint.py {path} OUT.pth '
            '--src-format mae')):
        read_pretrain_checkpoint(str(path), require=())
    with pytest.raises(CheckpointKindError, match=re.escape(     # the backbone would not do
            f'{path} has no backbone.* weights: this needs a pretraining checkpoint')):
        read_pretrain_checkpoint(str(path))
