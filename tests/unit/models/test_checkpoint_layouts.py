"""Release layouts to backbone keys (``mixedae.models.backbones.checkpoint_layouts``,
``tools/convert_checkpoint.py``): every source layout, in its release and its full training
form, converts to weights that give the source model's features; names are checked (unknown ->
error), completeness and shapes are left to loading; the layout of a file is recognised, and a
release file given where a converted backbone is expected names the command that converts it.
Release training checkpoints load through the safe loader; pickles that would run code or
build other objects are still refused."""
import argparse
import hashlib
import os
import pickle
import re
import subprocess
import sys
import types
import zipfile
from collections import OrderedDict

import numpy as np
import pytest
import torch
from timm.models.vision_transformer import VisionTransformer

from mixedae.models import ViT
from mixedae.models.backbones.checkpoint_layouts import (convert_checkpoint, extract_backbone,
                                                         mmseg_to_timm_names, release_format)
from mixedae.utils.checkpoint import CheckpointError, load_checkpoint_file
from mixedae.utils.digest import file_digests
from mixedae.utils.errors import InvalidInputError, MissingInputError
from support import ROOT, TINY, load_tool


def source_vit(num_classes=0):
    """A randomly initialised timm ViT: the 'official' model a release was saved from."""
    return VisionTransformer(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4,
                             num_classes=num_classes).eval()


def features(model: VisionTransformer, x):
    return model.forward_features(x)[:, 1:].transpose(1, 2).reshape(x.shape[0], 32, 4, 4)


def load_converted(path, **kw):
    model = ViT(**TINY, init_cfg=dict(type='Pretrained', checkpoint=str(path)), **kw)
    model.init_weights()
    return model.eval()


def mae_release(src):
    sd = dict(src.state_dict())
    sd['mask_token'] = torch.zeros(1, 1, 16)
    sd['decoder_embed.weight'] = torch.zeros(16, 32)
    sd['decoder_blocks.0.attn.qkv.weight'] = torch.zeros(48, 16)
    sd['decoder_pred.weight'] = torch.zeros(192, 16)
    return dict(model=sd)


def ibot_release(teacher, student):
    def with_head(model, prefix):
        sd = {f'{prefix}backbone.{k}': v for k, v in model.state_dict().items()}
        sd[f'{prefix}backbone.masked_embed'] = torch.zeros(1, 32)
        sd[f'{prefix}head.mlp.0.weight'] = torch.zeros(64, 32)
        sd[f'{prefix}head.last_layer.weight_g'] = torch.ones(1, 64)
        return sd
    return dict(teacher=with_head(teacher, ''), student=with_head(student, 'module.'),
                epoch=100, args=dict(arch='vit_tiny'))


def mixedae_pretrain(encoder: ViT):
    sd = {f'backbone.{k}': v for k, v in encoder.state_dict().items()}
    sd['backbone.segment_embed'] = torch.zeros(4, 32)
    sd['decoder.decoder_embed.weight'] = torch.zeros(16, 32)
    sd['decoder.mask_token'] = torch.zeros(1, 1, 16)
    sd['contrast_head.proj.weight'] = torch.zeros(16, 32)
    return dict(meta=dict(epoch=1), state_dict=sd, optimizer=dict(state={}, param_groups=[]))


def run(src, dst, src_format, key=None):
    return convert_checkpoint(str(src), str(dst), src_format, key)


def test_mae_release(tmp_path):
    src = source_vit(num_classes=0)
    torch.save(mae_release(src), tmp_path / 'mae.pth')
    assert run(tmp_path / 'mae.pth', tmp_path / 'out.pth', 'mae')
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(load_converted(tmp_path / 'out.pth')(x)[0], features(src, x),
                               atol=1e-5, rtol=1e-5)


def test_timm_state_dict_with_head(tmp_path):
    src = source_vit(num_classes=7)
    torch.save(src.state_dict(), tmp_path / 'timm.pth')
    assert run(tmp_path / 'timm.pth', tmp_path / 'out.pth', 'timm')
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(load_converted(tmp_path / 'out.pth')(x)[0], features(src, x),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('key', [None, 'teacher', 'student'])
def test_ibot_release_teacher_and_student(tmp_path, key):
    teacher, student = source_vit(), source_vit()
    torch.save(ibot_release(teacher, student), tmp_path / 'ibot.pth')
    run(tmp_path / 'ibot.pth', tmp_path / 'out.pth', 'ibot', key)
    assert torch.load(tmp_path / 'out.pth')['meta']['key'] == key
    expected_model = student if key == 'student' else teacher
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(load_converted(tmp_path / 'out.pth')(x)[0],
                               features(expected_model, x), atol=1e-5, rtol=1e-5)


def test_mixedae_pretraining_checkpoint(tmp_path):
    encoder = ViT(**TINY).eval()
    torch.save(mixedae_pretrain(encoder), tmp_path / 'pre.pth')
    assert run(tmp_path / 'pre.pth', tmp_path / 'out.pth', 'mixedae') == (
        len(encoder.state_dict()), ['decoder.decoder_embed.weight', 'decoder.mask_token',
                                    'contrast_head.proj.weight', 'segment_embed'])
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(load_converted(tmp_path / 'out.pth')(x)[0], encoder(x)[0])


#: timm name -> mmseg ``MAE`` / ``BEiT`` backbone name: the inverse of the conversion's rules,
#: written out by hand
TIMM_TO_MMSEG = [(r'^patch_embed\.proj\.', 'patch_embed.projection.'), (r'^norm\.', 'ln1.'),
                 (r'^blocks\.(\d+)\.norm([12])\.', r'layers.\1.ln\2.'),
                 (r'^blocks\.(\d+)\.ls([12])\.gamma$', r'layers.\1.gamma_\2'),
                 (r'^blocks\.(\d+)\.mlp\.fc1\.', r'layers.\1.ffn.layers.0.0.'),
                 (r'^blocks\.(\d+)\.mlp\.fc2\.', r'layers.\1.ffn.layers.1.'),
                 (r'^blocks\.(\d+)\.attn\.', r'layers.\1.attn.')]


def mmseg_backbone(src: VisionTransformer, beit: bool):
    """``src``'s weights under mmseg's backbone names; ``beit``: separate q_bias / v_bias (the
    key bias of ``src`` is zeroed first, as BEiT has none) and relative position indices."""
    sd = {}
    for name, value in src.state_dict().items():
        for pattern, repl in TIMM_TO_MMSEG:
            if re.match(pattern, name):
                name = re.sub(pattern, repl, name)
                break
        sd[name] = value
    if beit:
        for i in range(len(src.blocks)):
            bias = src.blocks[i].attn.qkv.bias
            with torch.no_grad():
                bias[32:64] = 0
            q, _, v = sd.pop(f'layers.{i}.attn.qkv.bias').chunk(3)
            sd[f'layers.{i}.attn.q_bias'], sd[f'layers.{i}.attn.v_bias'] = q, v
            sd[f'layers.{i}.attn.relative_position_index'] = torch.zeros(17, 17, dtype=torch.long)
    return sd


@pytest.mark.parametrize('beit', [False, True], ids=['mae', 'beit'])
def test_mmseg_segmentor_checkpoint(tmp_path, beit):
    """A whole mmseg segmentor: the backbone converts to the source model's features, the heads
    and BEiT's relative position indices are dropped, the output records where it came from."""
    src = source_vit()
    sd = {f'backbone.{k}': v for k, v in mmseg_backbone(src, beit).items()}
    heads = ['decode_head.conv_seg.weight', 'auxiliary_head.conv_seg.bias', 'neck.lns.0.weight']
    sd.update({name: torch.zeros(2) for name in heads})
    torch.save(dict(state_dict=sd, meta=dict(iter=160000)), tmp_path / 'seg.pth')
    kept, dropped = run(tmp_path / 'seg.pth', tmp_path / 'out.pth', 'mmseg')
    assert kept == len(src.state_dict())
    index = [f'blocks.{i}.attn.relative_position_index' for i in range(2)] if beit else []
    assert dropped == heads + index
    out = torch.load(tmp_path / 'out.pth')
    assert out['meta'] == dict(src_format='mmseg', source=str(tmp_path / 'seg.pth'), key=None)
    assert out['state_dict'].keys() == src.state_dict().keys()
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(load_converted(tmp_path / 'out.pth')(x)[0], features(src, x),
                               atol=1e-5, rtol=1e-5)


def test_mmpretrain_mae_pretraining_checkpoint_converts_with_mmseg_names(tmp_path):
    """mmpretrain's MAE release (docs/checkpoints.md): an MMEngine checkpoint whose encoder
    has mmpretrain's ViT names under ``backbone.`` and whose decoder lies under ``neck.``."""
    src = source_vit()
    sd = {f'backbone.{k}': v for k, v in mmseg_backbone(src, beit=False).items()}
    decoder = ['neck.mask_token', 'neck.decoder_pos_embed', 'neck.decoder_embed.weight',
               'neck.decoder_blocks.0.ln1.weight', 'neck.decoder_blocks.0.attn.qkv.weight',
               'neck.ln1.weight', 'neck.decoder_pred.weight']
    sd.update({name: torch.zeros(2) for name in decoder})
    torch.save(dict(meta=dict(epoch=1600, mmengine_version='0.1.0'), state_dict=sd),
               tmp_path / 'mmpretrain_mae.pth')
    kept, dropped = run(tmp_path / 'mmpretrain_mae.pth', tmp_path / 'out.pth', 'mmseg')
    assert (kept, dropped) == (len(src.state_dict()), decoder)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(load_converted(tmp_path / 'out.pth')(x)[0], features(src, x),
                               atol=1e-5, rtol=1e-5)


def test_mmseg_backbone_only_file_and_fused_biases():
    src = source_vit()
    sd = mmseg_backbone(src, beit=True)
    backbone, dropped = extract_backbone(dict(sd), 'mmseg')
    assert dropped == ['blocks.0.attn.relative_position_index',
                       'blocks.1.attn.relative_position_index']
    for i in range(2):
        assert torch.equal(backbone[f'blocks.{i}.attn.qkv.bias'], src.blocks[i].attn.qkv.bias)
    assert backbone.keys() == src.state_dict().keys()
    names = mmseg_to_timm_names({'layers.0.gamma_2': 1, 'layers.10.ln1.weight': 2,
                                 'layers.2.ffn.layers.1.bias': 3, 'ln1.weight': 4, 'other': 5})
    assert names == {'blocks.0.ls2.gamma': 1, 'blocks.10.norm1.weight': 2,
                     'blocks.2.mlp.fc2.bias': 3, 'norm.weight': 4, 'other': 5}


@pytest.mark.parametrize('present', ['q', 'v'])
def test_mmseg_q_and_v_biases_come_in_pairs(present):
    with pytest.raises(CheckpointError, match=re.escape(
            f"blocks.3.attn.: q_bias and v_bias come in pairs, found ['{present}_bias']")):
        mmseg_to_timm_names({f'layers.3.attn.{present}_bias': torch.zeros(4)})


def test_mmseg_checkpoint_without_backbone_keys_is_refused():
    with pytest.raises(CheckpointError, match=re.escape(
            "s.pth: keys not recognised for --src-format mmseg: 1: decode_head.w")):
        extract_backbone(dict(state_dict={'decode_head.w': torch.zeros(1)}), 'mmseg', 's.pth')
    with pytest.raises(CheckpointError, match='s.pth: an mmseg checkpoint is a dict of tensors'):
        extract_backbone(dict(state_dict={'w': 1}), 'mmseg', 's.pth')


def test_conversion_refuses_to_overwrite_its_input_and_a_stray_key(tmp_path):
    torch.save(mae_release(source_vit()), tmp_path / 'mae.pth')
    with pytest.raises(ValueError, match=re.escape(f'output {tmp_path}/./mae.pth would '
                                                   'overwrite the input')):
        run(tmp_path / 'mae.pth', f'{tmp_path}/./mae.pth', 'mae')
    with pytest.raises(ValueError, match='^--key is only meaningful with --src-format ibot$'):
        run(tmp_path / 'mae.pth', tmp_path / 'out.pth', 'mae', key='teacher')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['mae.pth']
    kept, dropped = run(tmp_path / 'mae.pth', tmp_path / 'out.pth', 'mae')
    assert (kept, dropped) == (len(source_vit().state_dict()),
                               ['mask_token', 'decoder_embed.weight',
                                'decoder_blocks.0.attn.qkv.weight', 'decoder_pred.weight'])
    assert torch.load(tmp_path / 'out.pth')['meta'] == dict(
        src_format='mae', source=str(tmp_path / 'mae.pth'), key=None)


@pytest.mark.slow
def test_cli_reports_kept_and_dropped(tmp_path):
    torch.save(mae_release(source_vit()), tmp_path / 'mae.pth')
    out = subprocess.run([sys.executable, f'{ROOT}/tools/convert_checkpoint.py',
                          tmp_path / 'mae.pth', tmp_path / 'out.pth', '--src-format', 'mae'],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    n_backbone = len([k for k in source_vit().state_dict()])
    assert f'kept {n_backbone} tensors, dropped 4' in out.stdout
    sha = hashlib.sha256((tmp_path / 'mae.pth').read_bytes()).hexdigest()
    assert out.stdout.startswith(f'{tmp_path}/mae.pth: sha256 {sha} md5 ')
    wrong = '0' * 8 if not sha.startswith('0' * 8) else '1' * 8
    out = subprocess.run([sys.executable, f'{ROOT}/tools/convert_checkpoint.py',
                          tmp_path / 'mae.pth', tmp_path / 'out2.pth', '--src-format', 'mae',
                          '--sha256', wrong], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        f'error: {tmp_path}/mae.pth: sha256 {sha} does not start with the published {wrong}: '
        'not the released file (an incomplete or corrupted download, or another release); '
        'download it again (docs/checkpoints.md)']
    assert not (tmp_path / 'out2.pth').exists()


def test_tool_prints_the_input_digests_and_verifies_published_prefixes(tmp_path, capsys):
    """A tiny generated release: its sha256 and md5 printed, a matching prefix (any case)
    converts, a wrong one or one too short to mean anything is refused before anything is
    written."""
    tool = load_tool('convert_checkpoint')
    src, dst = tmp_path / 'mae.pth', tmp_path / 'out.pth'
    torch.save(mae_release(source_vit()), src)
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    md5 = hashlib.md5(src.read_bytes()).hexdigest()
    assert file_digests(str(src)) == dict(sha256=sha, md5=md5)
    base = [str(src), str(dst), '--src-format', 'mae']
    assert tool.main(base + ['--sha256', sha[:8].upper(), '--md5', md5[:6]]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f'{src}: sha256 {sha} md5 {md5}'
    assert dst.exists()
    dst.unlink()
    flipped = lambda h: h[:-1] + ('1' if h[-1] == '0' else '0')       # noqa: E731  last digit
    with pytest.raises(InvalidInputError, match=rf'^{src}: sha256 {sha} does not start with '
                                                rf'the published {flipped(sha[:8])}: '):
        tool.main(base + ['--sha256', flipped(sha[:8])])
    with pytest.raises(InvalidInputError, match=rf'^{src}: md5 {md5} does not start with the '
                                                rf'published {flipped(md5[:6])}: '):
        tool.main(base + ['--sha256', sha, '--md5', flipped(md5[:6])])
    with pytest.raises(InvalidInputError, match=r"^--sha256 'abc': give at least 6 hex digits"):
        tool.main(base + ['--sha256', 'abc'])
    with pytest.raises(InvalidInputError, match=r"^--md5 'zzzzzz': give at least 6 hex"):
        tool.main(base + ['--md5', 'zzzzzz'])
    assert not dst.exists()
    with pytest.raises(MissingInputError, match=f'^checkpoint file not found: {tmp_path}/none'):
        tool.main([str(tmp_path / 'none.pth'), str(dst), '--src-format', 'mae'])


def test_unrecognised_keys_fail_and_write_nothing(tmp_path):
    sd = mae_release(source_vit())
    sd['model']['blocks.0.attn.q_bias'] = torch.zeros(32)
    torch.save(sd, tmp_path / 'odd.pth')
    with pytest.raises(CheckpointError, match=rf"^{tmp_path}/odd\.pth: keys not recognised for "
                                              r"--src-format mae: 1: blocks\.0\.attn\.q_bias$"):
        run(tmp_path / 'odd.pth', tmp_path / 'out.pth', 'mae')
    assert not (tmp_path / 'out.pth').exists()


def test_wrong_layout_for_format_fails(tmp_path):
    torch.save(source_vit().state_dict(), tmp_path / 'timm.pth')
    with pytest.raises(CheckpointError, match="expected a 'model' entry"):
        run(tmp_path / 'timm.pth', tmp_path / 'out.pth', 'mae')


def test_conversion_layouts_by_hand():
    sd = {'cls_token': torch.zeros(1, 1, 4), 'blocks.0.norm1.weight': torch.ones(4)}
    # iBOT backbone-only file: module./backbone. prefixes removed
    ibot = {'state_dict': {f'module.backbone.{k}': v for k, v in sd.items()}}
    assert extract_backbone(ibot, 'ibot')[0].keys() == sd.keys()
    with pytest.raises(CheckpointError, match=r"<checkpoint>: expected a 'student' entry, found "
                                              r"\['state_dict'\]"):
        extract_backbone(ibot, 'ibot', key='student')
    # timm: a plain state dict, or a train.py checkpoint holding one under 'state_dict'
    assert extract_backbone({'state_dict': sd, 'epoch': 3}, 'timm')[0].keys() == sd.keys()
    assert extract_backbone(dict(sd), 'timm')[0].keys() == sd.keys()
    with pytest.raises(CheckpointError, match=r'<checkpoint>: a timm checkpoint is a dict of '
                                              r"tensors, or a training checkpoint with such a "
                                              r"dict under 'state_dict'"):
        extract_backbone({'state_dict': {'x': 1}}, 'timm')
    with pytest.raises(CheckpointError, match=r"f.pth: expected a 'model' entry, found list"):
        extract_backbone([sd], 'mae', 'f.pth')
    with pytest.raises(CheckpointError, match=r"p.pth: expected a 'state_dict' entry"):
        extract_backbone({'model': sd}, 'mixedae', 'p.pth')
    with pytest.raises(CheckpointError, match='a timm checkpoint is a dict of tensors'):
        extract_backbone([sd], 'timm')
    with pytest.raises(CheckpointError, match=r"expected a 'state_dict' entry, found \['k0', "
                                              r"'k1', 'k2', 'k3', 'k4', 'k5', 'k6', 'k7'\]$"):
        extract_backbone({f'k{i}': 0 for i in range(9)}, 'mixedae')
    with pytest.raises(ValueError, match=r"unknown src_format 'x'; choose from \('mixedae', "):
        extract_backbone(sd, 'x')
    with pytest.raises(CheckpointError, match=r'm.pth: no backbone weights found for '
                                              r'--src-format mae'):
        extract_backbone({'model': {'mask_token': torch.zeros(1)}}, 'mae', 'm.pth')


@pytest.mark.parametrize('count,suffix', [(5, '5: u00, u01, u02, u03, u04$'),
                                          (21, '21: u00, u01, u02, u03, u04, \\.\\.\\.$')])
def test_conversion_counts_unknown_keys_and_names_the_first(count, suffix):
    with pytest.raises(CheckpointError, match=suffix):
        extract_backbone({'model': {f'u{i:02d}': torch.zeros(1) for i in range(count)}}, 'mae')


def test_a_wrong_src_format_suggests_the_one_the_checkpoint_looks_like():
    pretrain = dict(state_dict={'backbone.cls_token': torch.zeros(1, 1, 4),
                                'decoder.w': torch.zeros(1)})
    with pytest.raises(CheckpointError, match=r"^p.pth: expected a 'model' entry, found "
                                              r"\['state_dict'\]; it looks like --src-format "
                                              r"mixedae$"):
        extract_backbone(pretrain, 'mae', 'p.pth')
    with pytest.raises(CheckpointError, match=r'; it looks like --src-format mixedae$'):
        extract_backbone(pretrain, 'timm', 'p.pth')
    mae = dict(model={'cls_token': torch.zeros(1, 1, 4), 'decoder_embed.weight': torch.zeros(1)})
    with pytest.raises(CheckpointError, match=r'; it looks like --src-format mae$'):
        extract_backbone(mae, 'ibot', 'm.pth', key='model')
    # a missing entry names the format too (MAE's release given as mixedae or ibot)
    for src_format, entry in (('mixedae', 'state_dict'), ('ibot', 'teacher')):
        with pytest.raises(CheckpointError, match=rf"^m.pth: expected a '{entry}' entry, found "
                                                  r"\['model'\]; it looks like --src-format mae$"):
            extract_backbone(mae, src_format, 'm.pth')
    # nothing recognisable: no guess
    with pytest.raises(CheckpointError, match=r"expected a 'model' entry, found \['x'\]$"):
        extract_backbone({'x': 0}, 'mae', 'x.pth')


def optimizer_state(model: torch.nn.Module) -> dict:
    """AdamW state after one real step, with MAE's two weight-decay groups."""
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([dict(params=no_decay, weight_decay=0.0),
                             dict(params=decay, weight_decay=0.05)], lr=1.5e-4, betas=(0.9, 0.95))
    model(torch.randn(2, 3, 32, 32)).float().mean().backward()
    opt.step()
    model.zero_grad()
    return opt.state_dict()


def scaler_state() -> dict:
    """What a CUDA AMP GradScaler saves (values of a scaler that has run a while)."""
    return dict(scale=32768.0, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000,
                _growth_tracker=117)


def mae_args() -> argparse.Namespace:
    # the argparse options of MAE's main_pretrain.py, with the values its scripts set
    return argparse.Namespace(
        batch_size=64, epochs=800, accum_iter=1, model='mae_vit_base_patch16', input_size=224,
        mask_ratio=0.75, norm_pix_loss=True, weight_decay=0.05, lr=0.0024, blr=1.5e-4,
        min_lr=0.0, warmup_epochs=40, data_path='/datasets/imagenet', output_dir='./out',
        log_dir='./out', device='cuda', seed=0, resume='', start_epoch=0, num_workers=10,
        pin_mem=True, world_size=64, local_rank=-1, dist_on_itp=False, dist_url='env://',
        rank=0, gpu=0, distributed=True, dist_backend='nccl',
        # numpy values, as left by scripts that compute options with numpy
        eff_batch_size=np.int64(4096), lr_scale=np.float64(16.0), amp_dtype=np.dtype('float16'),
        cutmix_minmax=None)


def ibot_args() -> argparse.Namespace:
    # a selection of main_ibot.py's options, covering each kind of value it stores
    return argparse.Namespace(
        arch='vit_base', patch_size=16, window_size=7, out_dim=8192, patch_out_dim=8192,
        shared_head=True, shared_head_teacher=True, norm_last_layer=True,
        momentum_teacher=0.996, norm_in_head=None, act_in_head='gelu',
        use_masked_im_modeling=True, pred_ratio=[0.0, 0.3], pred_ratio_var=[0.0, 0.2],
        pred_shape='block', pred_start_epoch=0, lambda1=1.0, lambda2=1.0,
        global_crops_scale=(0.32, 1.0), local_crops_number=[10], local_crops_scale=(0.05, 0.32),
        use_fp16=True, clip_grad=3.0, batch_size_per_gpu=64, epochs=400, lr=0.00075,
        drop_path=0.1, seed=0, dist_url='env://', world_size=16, rank=0, gpu=0,
        teacher_temp=np.float32(0.07), warmup_teacher_temp_epochs=np.int64(30))


def mae_training_checkpoint(src: VisionTransformer) -> dict:
    """MAE's misc.save_model: {'model', 'optimizer', 'epoch', 'scaler', 'args'}."""
    sd = dict(src.state_dict())
    sd['mask_token'] = torch.zeros(1, 1, 16)
    sd['decoder_embed.weight'] = torch.zeros(16, 32)
    sd['decoder_pred.weight'] = torch.zeros(192, 16)
    return dict(model=sd, optimizer=optimizer_state(src), epoch=799, scaler=scaler_state(),
                args=mae_args())


def ibot_training_checkpoint(teacher: VisionTransformer, student: VisionTransformer) -> dict:
    """iBOT's main_ibot.py save_dict: the DDP student ('module.'), the teacher, the optimizer,
    the epoch, args, the loss module's state (its centers) and the fp16 scaler."""
    def with_head(model, prefix):
        sd = OrderedDict((f'{prefix}backbone.{k}', v) for k, v in model.state_dict().items())
        sd[f'{prefix}backbone.masked_embed'] = torch.zeros(1, 32)
        sd[f'{prefix}head.mlp.0.weight'] = torch.zeros(64, 32)
        sd[f'{prefix}head.last_layer.weight_g'] = torch.ones(1, 64)
        return sd
    loss = torch.nn.Module()
    loss.register_buffer('center', torch.randn(1, 64))
    loss.register_buffer('center2', torch.randn(1, 1, 64))
    return dict(student=with_head(student, 'module.'), teacher=with_head(teacher, ''),
                optimizer=optimizer_state(student), epoch=400, args=ibot_args(),
                ibot_loss=loss.state_dict(), fp16_scaler=scaler_state())


def timm_training_checkpoint(src: VisionTransformer) -> dict:
    """timm's CheckpointSaver: epoch, arch, state_dict, optimizer, version, args, amp scaler,
    EMA weights and the best metric."""
    args = argparse.Namespace(model='vit_tiny_patch16_224', num_classes=7, img_size=None,
                              input_size=[3, 32, 32], mean=None, model_kwargs={}, amp=True,
                              amp_dtype='float16', device='cuda:0', opt_betas=None,
                              mixup=0.8, cutmix_minmax=None, smoothing=0.1, prefetcher=True)
    return dict(epoch=299, arch='vit_tiny_patch16_224', state_dict=src.state_dict(),
                optimizer=optimizer_state(src), version=2, args=args,
                amp_scaler=scaler_state(), state_dict_ema=src.state_dict(),
                metric=np.float64(72.5))


class Numpy1Pickler(pickle._Pickler):
    """Pickles numpy globals under numpy 1.x's names (``numpy.core.multiarray.scalar``), as
    in files written before numpy 2 (every MAE and iBOT release)."""

    def save_global(self, obj, name=None):
        module = getattr(obj, '__module__', '') or ''
        if module.startswith('numpy._core'):
            old = 'numpy.core' + module[len('numpy._core'):]
            self.write(pickle.GLOBAL + f'{old}\n{name or obj.__name__}\n'.encode())
            self.memoize(obj)
            return
        super().save_global(obj, name)


def save_like_numpy1(obj, path):
    module = types.ModuleType('numpy1_pickle')
    module.Pickler = Numpy1Pickler
    torch.save(obj, path, pickle_module=module)
    assert b'numpy.core.multiarray' in _pickle_bytes(path)
    assert b'numpy._core' not in _pickle_bytes(path)


def _pickle_bytes(path) -> bytes:
    with zipfile.ZipFile(path) as zf:
        return zf.read(next(n for n in zf.namelist() if n.endswith('/data.pkl')))


def convert_ok(src_path, out_path, src_format, key=None):
    kept, _ = convert_checkpoint(str(src_path), str(out_path), src_format, key)
    assert kept > 0


@pytest.mark.parametrize('save', [torch.save, save_like_numpy1], ids=['numpy2', 'numpy1'])
def test_mae_training_layout_loads_and_converts(tmp_path, save):
    src = source_vit()
    save(mae_training_checkpoint(src), tmp_path / 'checkpoint-799.pth')
    loaded = load_checkpoint_file(tmp_path / 'checkpoint-799.pth')
    assert vars(loaded['args']) == vars(mae_args())
    assert loaded['args'].eff_batch_size == 4096 and loaded['args'].amp_dtype == np.float16
    assert loaded['scaler'] == scaler_state() and loaded['epoch'] == 799
    assert loaded['optimizer']['param_groups'][1]['betas'] == (0.9, 0.95)
    assert set(loaded['optimizer']['state'][0]) == {'step', 'exp_avg', 'exp_avg_sq'}
    convert_ok(tmp_path / 'checkpoint-799.pth', tmp_path / 'out.pth', 'mae')
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(load_converted(tmp_path / 'out.pth')(x)[0], features(src, x),
                               atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize('save', [torch.save, save_like_numpy1], ids=['numpy2', 'numpy1'])
def test_ibot_training_layout_loads_and_converts(tmp_path, save):
    teacher, student = source_vit(), source_vit()
    ckpt = ibot_training_checkpoint(teacher, student)
    save(ckpt, tmp_path / 'checkpoint.pth')
    loaded = load_checkpoint_file(tmp_path / 'checkpoint.pth')
    assert vars(loaded['args']) == vars(ibot_args())
    assert isinstance(loaded['args'].teacher_temp, np.float32)
    torch.testing.assert_close(loaded['ibot_loss']['center'], ckpt['ibot_loss']['center'])
    x = torch.randn(2, 3, 32, 32)
    for key, model in (('teacher', teacher), ('student', student)):
        out = tmp_path / f'{key}.pth'
        convert_ok(tmp_path / 'checkpoint.pth', out, 'ibot', key)
        torch.testing.assert_close(load_converted(out)(x)[0], features(model, x),
                                   atol=1e-5, rtol=1e-5)


def test_timm_training_layout_loads_and_converts(tmp_path):
    src = source_vit(num_classes=7)
    torch.save(timm_training_checkpoint(src), tmp_path / 'model_best.pth.tar')
    loaded = load_checkpoint_file(tmp_path / 'model_best.pth.tar')
    assert loaded['args'].input_size == [3, 32, 32] and loaded['metric'] == 72.5
    convert_ok(tmp_path / 'model_best.pth.tar', tmp_path / 'out.pth', 'timm')
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(load_converted(tmp_path / 'out.pth')(x)[0], features(src, x),
                               atol=1e-5, rtol=1e-5)


class _Shell:
    """Unpickling this object would run a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


class Transform:
    """A non-plain object, as an args entry that holds a callable or a config object would."""


def test_code_in_args_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / 'pwned'
    ckpt = mae_training_checkpoint(source_vit())
    ckpt['args'].hook = _Shell(marker)
    torch.save(ckpt, tmp_path / 'evil.pth')
    with pytest.raises(CheckpointError, match=r'refused to load .*evil.pth: its pickle needs '
                                              r'posix.system, which is not plain'):
        load_checkpoint_file(tmp_path / 'evil.pth')
    with pytest.raises(CheckpointError, match=r'refused to load .*posix\.system'):
        convert_checkpoint(str(tmp_path / 'evil.pth'), str(tmp_path / 'out.pth'), 'mae')
    assert not marker.exists() and not (tmp_path / 'out.pth').exists()


def test_non_plain_object_in_args_is_refused(tmp_path):
    ckpt = ibot_training_checkpoint(source_vit(), source_vit())
    ckpt['args'].transform = Transform()
    torch.save(ckpt, tmp_path / 'checkpoint.pth')
    with pytest.raises(CheckpointError, match=r'needs test_checkpoint_layouts.Transform, '
                                              r'which is not plain checkpoint content'):
        load_checkpoint_file(tmp_path / 'checkpoint.pth')


def test_release_layouts_given_for_loading_name_the_conversion_command(tmp_path):
    src = source_vit()
    mmseg = {f'backbone.layers.0.ln1.{k}': v for k, v in src.blocks[0].norm1.state_dict().items()}
    layouts = {
        'mae': dict(model=src.state_dict()),                  # mae_pretrain_vit_base.pth
        'ibot': ibot_training_checkpoint(src, source_vit()),
        'timm': source_vit(num_classes=10).state_dict(),      # with its classifier head
        'mmseg': dict(state_dict=mmseg, meta={}),
    }
    for src_format, checkpoint in layouts.items():
        assert release_format(checkpoint) == src_format
    assert release_format(dict(state_dict=src.state_dict())) is None       # converted backbone
    assert release_format(mae_training_checkpoint(src)) == 'mae'
    for role in ('teacher', 'student'):                                    # either network alone
        assert release_format({role: src.state_dict()}) == 'ibot'


def test_visualize_attention_given_an_mae_release_says_how_to_convert_it(tmp_path):
    path = str(tmp_path / 'mae_pretrain_vit_base.pth')
    torch.save(dict(model=source_vit().state_dict()), path)
    config = os.path.join(ROOT, 'configs/pretrain/mixedae_vit-tiny-p8_1xb16-coslr-4e_tiny-32.py')
    out = subprocess.run([sys.executable, os.path.join(ROOT, 'tools/visualize_attention.py'),
                          config, '--checkpoint', f'MAE={path}', '--out', str(tmp_path / 'a.png')],
                         cwd=ROOT, env={**os.environ, 'PYTHONPATH': ROOT, 'OMP_NUM_THREADS': '1'},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert out.stderr == (f'error: {path} is a checkpoint in the mae release layout, which a '
                          'mixedae.ViT does not load as it is: convert it first with .venv/bin/python '
                          f'tools/convert_checkpoint.py {path} OUT.pth --src-format mae, then '
                          'give OUT.pth\n')
