"""tools/convert_checkpoint.py: every source layout gives the source model's features."""
import hashlib
import re
import subprocess
import sys

import pytest
import torch
from mmengine.logging import MMLogger
from timm.models.vision_transformer import VisionTransformer

from mixedae.models import ViT
from mixedae.utils.checkpoint import CheckpointError
from mixedae.models.backbones.loading import (convert_checkpoint, extract_backbone,
                                              mmseg_to_timm_names)
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
    with pytest.raises(FileNotFoundError, match='init_cfg.checkpoint'):
        ViT(**TINY, init_cfg=dict(type='Pretrained', checkpoint=str(tmp_path / 'none.pth')))


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
