"""Loading backbone weights into a model (``mixedae.models.backbones.loading``): missing,
unexpected and mis-shaped keys on every loading path, with the documented outcome
(docs/testing.md, "Loading paths"), and the one way a config asks for a backbone checkpoint:

- ``init_cfg=dict(type='Pretrained')`` (``ViT.load_pretrained``): an error naming the keys,
  except the expected-missing relative position tables / layer scales, kept at init and reported;
- conversion (``extract_backbone``): checks names (unknown -> error); completeness and shapes are
  checked when the converted file is loaded;
- MMEngine ``load_from`` and ``resume`` (``Runner.load_checkpoint``, ``strict=False``): a warning
  listing the keys; the run goes on with those tensors at their initial value.
"""
import re

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.model import BaseModel
from mmengine.runner import Runner
from torch.utils.data import Dataset

from mixedae.models import ViT
from mixedae.models.backbones.checkpoint_layouts import extract_backbone
from mixedae.models.backbones.loading import (_architecture, adapt_state_dict,
                                              backbone_checkpoint_options, check_architecture,
                                              load_pretrained, set_backbone_checkpoint)
from mixedae.utils.checkpoint import CheckpointError
from support import TINY
from test_checkpoint_layouts import (ibot_training_checkpoint, load_converted, mae_release, run,
                                     source_vit)


def pretrained(tmp_path, sd, **kw):
    path = tmp_path / 'backbone.pth'
    torch.save(sd, path)
    model = ViT(**TINY, **kw, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    model.init_weights()
    return model


def source_state():
    return {k: torch.randn_like(v) for k, v in ViT(**TINY).state_dict().items()}


def test_pretrained_complete_checkpoint_loads_every_tensor(tmp_path):
    sd = source_state()
    model = pretrained(tmp_path, sd)
    for k, v in model.state_dict().items():
        assert torch.equal(v, sd[k]), k


@pytest.mark.parametrize('key', ['blocks.1.mlp.fc2.weight', 'norm.weight', 'cls_token',
                                 'patch_embed.proj.bias'])
def test_pretrained_missing_key_is_an_error(tmp_path, key):
    sd = source_state()
    del sd[key]
    with pytest.raises(CheckpointError,
                       match=rf'missing keys 1: {re.escape(key)}; unexpected keys 0'):
        pretrained(tmp_path, sd)


def test_pretrained_unexpected_key_is_an_error(tmp_path):
    sd = source_state()
    sd['blocks.0.attn.extra'] = torch.zeros(3)
    with pytest.raises(CheckpointError,
                       match=r'missing keys 0; unexpected keys 1: blocks.0.attn.extra'):
        pretrained(tmp_path, sd)


def test_pretrained_misshaped_key_is_an_error(tmp_path):
    sd = source_state()
    sd['blocks.1.mlp.fc1.weight'] = torch.zeros(64, 16)
    with pytest.raises(CheckpointError, match=r'blocks.1.mlp.fc1.weight is \(64, 16\) in the '
                                              r'checkpoint and \(128, 32\) in the model'):
        pretrained(tmp_path, sd)


def test_pretrained_expected_missing_keys_keep_their_initial_value(tmp_path):
    sd = source_state()
    model = pretrained(tmp_path, sd, use_rel_pos_bias=True, init_values=0.1)
    assert (model.blocks[1].attn.relative_position_bias_table == 0).all()
    assert (model.blocks[0].ls2.gamma == 0.1).all()
    assert torch.equal(model.blocks[1].attn.qkv.weight, sd['blocks.1.attn.qkv.weight'])


def test_conversion_checks_names_and_leaves_completeness_to_loading(tmp_path):
    sd = source_state()
    del sd['blocks.0.norm1.bias']
    sd['blocks.1.attn.qkv.weight'] = torch.zeros(5, 32)
    backbone, dropped = extract_backbone({'model': {**sd, 'mask_token': torch.zeros(1)}}, 'mae')
    assert dropped == ['mask_token'] and backbone.keys() == sd.keys()
    with pytest.raises(CheckpointError, match='blocks.1.attn.qkv.weight is'):
        pretrained(tmp_path, backbone)
    del backbone['blocks.1.attn.qkv.weight']
    with pytest.raises(CheckpointError, match='missing keys .*blocks.0.norm1.bias'):
        pretrained(tmp_path, backbone)
    with pytest.raises(CheckpointError, match=r'not recognised .*: 1: decoder.x'):
        extract_backbone({'model': {**sd, 'decoder.x': torch.zeros(1)}}, 'mae')


class ToyData(Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        return dict(inputs=torch.full((3, 32, 32), float(i)), labels=torch.tensor(i % 3))


class Toy(BaseModel):
    def __init__(self):
        super().__init__()
        self.backbone = ViT(**TINY)
        self.head = nn.Linear(32, 3)

    def forward(self, inputs, labels=None, mode='loss'):
        logits = self.head(self.backbone(inputs)[0].mean((2, 3)))
        return dict(loss=nn.functional.cross_entropy(logits, labels))


def toy_runner(work_dir, max_iters, **kw):
    """A training runner with lr 0 (the weights stay what loading left)."""
    return Runner(
        model=Toy(), work_dir=str(work_dir), default_scope='mmengine',
        train_dataloader=dict(dataset=ToyData(), batch_size=4, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=False),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='SGD', lr=0.0)),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=1, by_epoch=False)),
        **kw)


def damaged_checkpoint(tmp_path):
    """A real MMEngine checkpoint with one key missing, one unexpected and one mis-shaped."""
    toy_runner(tmp_path / 'source', max_iters=1).train()
    ckpt = torch.load(tmp_path / 'source/iter_1.pth', weights_only=False)
    sd = ckpt['state_dict']
    source = {k: v.clone() for k, v in sd.items()}
    del sd['head.bias']
    sd['head.extra'] = torch.zeros(2)
    sd['backbone.norm.weight'] = torch.ones(7)
    torch.save(ckpt, tmp_path / 'ckpt.pth')
    return tmp_path / 'ckpt.pth', source


def assert_partially_loaded(model, fresh, source, log):
    sd = model.state_dict()
    assert torch.equal(sd['head.weight'], source['head.weight'])
    assert torch.equal(sd['head.bias'], fresh['head.bias'])                  # missing: init
    assert torch.equal(sd['backbone.norm.weight'], fresh['backbone.norm.weight'])  # mis-shaped
    assert 'missing keys in source state_dict: head.bias' in log
    assert 'unexpected key in source state_dict: head.extra' in log
    assert 'size mismatch for backbone.norm.weight' in log


def test_load_from_warns_and_keeps_initial_values(tmp_path, capsys):
    path, source = damaged_checkpoint(tmp_path)
    runner = toy_runner(tmp_path / 'work', max_iters=1, load_from=str(path))
    fresh = {k: v.clone() for k, v in runner.model.state_dict().items()}
    runner.load_or_resume()
    captured = capsys.readouterr()
    assert_partially_loaded(runner.model, fresh, source, captured.out + captured.err)


def test_resume_warns_and_keeps_initial_values(tmp_path, capsys):
    path, source = damaged_checkpoint(tmp_path)
    runner = toy_runner(tmp_path / 'work', max_iters=2, load_from=str(path), resume=True)
    fresh = {k: v.clone() for k, v in runner.model.state_dict().items()}
    runner.train()
    assert runner.iter == 2
    captured = capsys.readouterr()
    assert_partially_loaded(runner.model, fresh, source, captured.out + captured.err)


def test_a_training_checkpoint_given_as_a_backbone_names_the_conversion(tmp_path):
    torch.save(dict(state_dict={'backbone.cls_token': torch.zeros(1, 1, 32),
                                'decoder.w': torch.zeros(1)}), tmp_path / 'epoch_4.pth')
    with pytest.raises(CheckpointError, match=(
            rf'^{tmp_path}/epoch_4\.pth is a checkpoint of tools/train\.py .* convert it first '
            rf'with \.venv/bin/python tools/convert_checkpoint\.py {tmp_path}/epoch_4\.pth '
            r'OUT\.pth --src-format mixedae, then give OUT\.pth$')) as err:
        ViT(**TINY).load_pretrained(str(tmp_path / 'epoch_4.pth'))
    assert len(str(err.value)) < 400


@pytest.mark.parametrize('with_cls_token,rows', [(True, 3 * 3 + 3), (False, 3 * 3)])
def test_beit_tables_of_another_window_are_resampled_and_odd_ones_refused(with_cls_token, rows):
    model = ViT(**TINY, use_rel_pos_bias=True, with_cls_token=with_cls_token,
                use_abs_pos_embed=False)
    key = 'blocks.1.attn.relative_position_bias_table'
    sd, notes = adapt_state_dict(model, {key: torch.zeros(rows, 4)}, 'b.pth')      # 2 x 2 window
    assert sd[key].shape == model.state_dict()[key].shape
    assert notes == [f'resampled {key} from grid (2, 2) to (4, 4)']
    assert adapt_state_dict(model, {key: torch.zeros_like(sd[key])}, 'b.pth')[1] == []
    with pytest.raises(CheckpointError, match=re.escape(
            f'b.pth: {key} has {rows + 1} rows, not a square-window table')):
        adapt_state_dict(model, {key: torch.zeros(rows + 1, 4)}, 'b.pth')


def test_architecture_summary():
    sd = {'patch_embed.proj.weight': torch.zeros(48, 3, 4, 8), 'blocks.0.a': torch.zeros(1),
          'blocks.2.a': torch.zeros(1)}
    assert _architecture(sd) == 'embed_dim 48, patch 4x8, depth 2'
    assert _architecture({'blocks.0.a': torch.zeros(1)}) == 'depth 1'


def pos_embed(tokens):
    return {'pos_embed': torch.zeros(1, tokens, 32)}


def test_adapt_state_dict_notes_each_change():
    no_abs = ViT(**TINY, use_abs_pos_embed=False)
    sd, notes = adapt_state_dict(no_abs, dict(pos_embed(17), x=1), 's.pth')
    assert (sd, notes) == (dict(x=1), ['dropped pos_embed (use_abs_pos_embed=False)'])
    no_cls = ViT(**TINY, with_cls_token=False, final_norm=False)
    sd, notes = adapt_state_dict(no_cls, dict(pos_embed(1 + 4), cls_token=torch.zeros(1, 1, 32),
                                              **{'norm.weight': torch.ones(32)}), 's.pth')
    assert notes == ['dropped the class-token entry of pos_embed',
                     'resampled pos_embed from grid (2, 2) to (4, 4)',
                     'dropped the final norm (final_norm=False)',
                     'dropped cls_token (with_cls_token=False)']
    assert set(sd) == {'pos_embed'} and sd['pos_embed'].shape == (1, 16, 32)
    assert adapt_state_dict(ViT(**TINY), pos_embed(17), 's.pth')[1] == []    # same grid
    with pytest.raises(CheckpointError, match=re.escape(
            's.pth: pos_embed has no class-token entry but the model uses a class token')):
        adapt_state_dict(ViT(**TINY), pos_embed(16), 's.pth')
    with pytest.raises(CheckpointError, match=re.escape(
            's.pth: pos_embed with 15 entries is not a square grid')):
        adapt_state_dict(ViT(**TINY), pos_embed(15), 's.pth')


def test_load_pretrained_with_a_prefix_and_its_report(tmp_path):
    log_file = tmp_path / 'log.txt'
    MMLogger.get_instance(f'loading:{log_file}', log_file=str(log_file))
    sd = source_state()
    path = tmp_path / 'seg.pth'
    torch.save(dict(state_dict={**{f'backbone.{k}': v for k, v in sd.items()
                                   if k != 'pos_embed'},
                                'backbone.pos_embed': torch.zeros(1, 5, 32),
                                'decode_head.w': torch.zeros(1)}), path)
    model = ViT(**TINY, init_values=0.1)
    load_pretrained(model, str(path), prefix='backbone.')
    assert torch.equal(model.blocks[1].attn.qkv.weight, sd['blocks.1.attn.qkv.weight'])
    assert (f'mixedae.ViT: loaded {len(sd)} tensors from {path}; resampled pos_embed from grid '
            '(2, 2) to (4, 4); 4 tensors kept at their initial value (absent from the '
            'checkpoint, expected): blocks.{0,1}.ls1.gamma, blocks.{0,1}.ls2.gamma\n'
            in log_file.read_text())
    with pytest.raises(CheckpointError, match=re.escape(
            f"{path}: no keys start with prefix 'neck.'")):
        load_pretrained(model, str(path), prefix='neck.')
    torch.save(dict(state_dict=dict(sd, pos_embed=torch.zeros(1, 15, 32))), path)
    with pytest.raises(CheckpointError, match=re.escape(
            f'{path}: pos_embed with 15 entries is not a square grid')):
        load_pretrained(model, str(path))
    torch.save([1], tmp_path / 'list.pth')
    with pytest.raises(CheckpointError, match=f'^{tmp_path}/list.pth: a checkpoint is a dict'):
        load_pretrained(model, str(tmp_path / 'list.pth'))


def test_check_architecture_accepts_a_file_without_blocks_and_names_both_sizes():
    own = ViT(**TINY).state_dict()
    check_architecture(own, {'cls_token': torch.zeros(1, 1, 32)}, 's.pth')      # no blocks
    with pytest.raises(CheckpointError) as err:
        check_architecture(own, {'blocks.0.a': 1, 'blocks.1.a': 1, 'blocks.2.a': 1}, 's.pth')
    assert str(err.value) == (
        's.pth does not match the config: the checkpoint has 3 blocks, the model 2. The '
        'checkpoint is a ViT with depth 3, the config builds embed_dim 32, patch 8x8, depth 2; '
        'use the config made for this checkpoint (e.g. a tiny config for the demo checkpoints).')


def test_rel_pos_model_loads_mae_with_expected_missing_report(tmp_path):
    torch.save(mae_release(source_vit()), tmp_path / 'mae.pth')
    run(tmp_path / 'mae.pth', tmp_path / 'out.pth', 'mae')
    log_file = tmp_path / 'log.txt'
    MMLogger.get_instance(f'mixedae_test_convert:{log_file}', log_file=str(log_file))
    model = load_converted(tmp_path / 'out.pth', use_rel_pos_bias=True, init_values=1.0)
    assert model.blocks[1].attn.relative_position_bias_table.abs().sum() == 0
    log = log_file.read_text()
    assert 'blocks.{0,1}.attn.relative_position_bias_table' in log
    assert 'blocks.{0,1}.ls1.gamma' in log


def test_loading_at_another_resolution_resamples_pos_embed(tmp_path):
    src = source_vit()
    torch.save(src.state_dict(), tmp_path / 'timm.pth')
    run(tmp_path / 'timm.pth', tmp_path / 'out.pth', 'timm')
    model = ViT(**{**TINY, 'img_size': 64},
                init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'out.pth')))
    model.init_weights()
    assert model.pos_embed.shape == (1, 1 + 64, 32)
    torch.testing.assert_close(model.pos_embed[:, :1], src.pos_embed[:, :1])


def test_model_without_final_norm_drops_it(tmp_path):
    src = source_vit()
    torch.save(src.state_dict(), tmp_path / 'timm.pth')
    run(tmp_path / 'timm.pth', tmp_path / 'out.pth', 'timm')
    model = load_converted(tmp_path / 'out.pth', final_norm=False)
    x = torch.randn(1, 3, 32, 32)
    expected = torch.nn.Sequential(*src.blocks)(src._pos_embed(src.patch_embed(x)))
    torch.testing.assert_close(model(x)[0], expected[:, 1:].transpose(1, 2).reshape(1, 32, 4, 4),
                               atol=1e-5, rtol=1e-5)


def test_window_model_drops_class_token(tmp_path):
    torch.save(source_vit().state_dict(), tmp_path / 'timm.pth')
    run(tmp_path / 'timm.pth', tmp_path / 'out.pth', 'timm')
    model = load_converted(tmp_path / 'out.pth', with_cls_token=False, window_size=2,
                           window_block_indexes=(0,), use_rel_pos_bias=True)
    assert model.pos_embed.shape == (1, 16, 32)


def test_mismatched_backbone_is_an_error(tmp_path):
    torch.save(dict(state_dict=ViT(**{**TINY, 'depth': 3}).state_dict()), tmp_path / 'deep.pth')
    with pytest.raises(CheckpointError, match='deep.pth does not match the config: the '
                                              'checkpoint has 3 blocks, the model 2'):
        load_converted(tmp_path / 'deep.pth')
    # the file is checked once, by the tools' input check, before the model is built; a model
    # built by hand with a missing file fails when it loads it, naming the path
    missing = ViT(**TINY, init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'none.pth')))
    with pytest.raises(FileNotFoundError, match=re.escape(
            f'checkpoint file not found: {tmp_path}/none.pth')):
        missing.init_weights()


def test_vitdet_backbone_with_decomposed_rel_pos_round_trips(tmp_path):
    vitdet = dict(with_cls_token=False, use_rel_pos_bias=True, rel_pos_type='decomposed',
                  window_size=2, window_block_indexes=(0,))
    encoder = ViT(**TINY, **vitdet).eval()
    with torch.no_grad():
        for block in encoder.blocks:
            block.attn.rel_pos_h.normal_()
            block.attn.rel_pos_w.normal_()
    torch.save(dict(state_dict={f'backbone.{k}': v for k, v in encoder.state_dict().items()}),
               tmp_path / 'vitdet.pth')
    assert run(tmp_path / 'vitdet.pth', tmp_path / 'out.pth', 'mixedae')
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(load_converted(tmp_path / 'out.pth', **vitdet)(x)[0],
                               encoder(x)[0])


def test_pretrained_init_cfg_with_a_release_file_names_the_conversion(tmp_path):
    path = str(tmp_path / 'checkpoint.pth')
    torch.save(ibot_training_checkpoint(source_vit(), source_vit()), path)
    vit = ViT(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4,
              init_cfg=dict(type='Pretrained', checkpoint=path))
    with pytest.raises(CheckpointError) as raised:
        vit.init_weights()
    assert str(raised.value) == (
        f'{path} is a checkpoint in the ibot release layout, which a mixedae.ViT does not load as '
        f'it is: convert it first with .venv/bin/python tools/convert_checkpoint.py {path} OUT.pth '
        '--src-format ibot, then give OUT.pth')


def test_a_backbone_checkpoint_is_set_one_way(tmp_path):
    """``set_backbone_checkpoint`` (``--load-backbone``, the demo's configs) and
    ``backbone_checkpoint_options`` (the suite's commands) give the same config, replacing an
    ``init_cfg`` the config had; a config without a backbone is refused by name."""
    (tmp_path / 'seg.py').write_text(
        "model = dict(backbone=dict(type='mixedae.ViT', init_cfg=dict(type='Kaiming')))\n")
    by_helper = Config.fromfile(str(tmp_path / 'seg.py'))
    set_backbone_checkpoint(by_helper, 'enc.pth')
    by_options = Config.fromfile(str(tmp_path / 'seg.py'))
    by_options.merge_from_dict(backbone_checkpoint_options('enc.pth'))
    assert by_helper.model.backbone.init_cfg == dict(type='Pretrained', checkpoint='enc.pth')
    assert by_options.model.backbone.init_cfg == by_helper.model.backbone.init_cfg
    assert backbone_checkpoint_options('enc.pth') == {
        'model.backbone.init_cfg.type': 'Pretrained',
        'model.backbone.init_cfg.checkpoint': 'enc.pth'}
    (tmp_path / 'none.py').write_text("model = dict(type='Anything')\n")
    with pytest.raises(ValueError, match=re.escape(
            f'{tmp_path}/none.py has no model.backbone to load the backbone checkpoint enc.pth '
            'into')):
        set_backbone_checkpoint(Config.fromfile(str(tmp_path / 'none.py')), 'enc.pth')
