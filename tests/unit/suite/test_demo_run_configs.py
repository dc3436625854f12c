"""mixedae.suite.demo.run_configs: the configs each preset writes for its children, read as a
child reads them, build models that run."""
import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from support import REPO
from mixedae.suite.demo.presets import HOMOLOGOUS, PRESETS, PRETRAINS
from mixedae.suite.demo.run_configs import (entry_of_type, finetune_config, pretrain_config,
                                            probe_config)
from mixedae.suite.demo.stages import Demo


def test_entry_of_type_finds_one_entry_by_type_name():
    entries = [dict(type='LinearLR'), dict(type='mmseg.Feature2Pyramid'), dict(type='FPN')]
    assert entry_of_type(entries, 'Feature2Pyramid') is entries[1]
    assert entry_of_type(entries, 'FPN') is entries[2]
    with pytest.raises(KeyError, match="one 'MultiStepLR' entry, found 0"):
        entry_of_type(entries, 'MultiStepLR')
    with pytest.raises(KeyError, match="found 2"):
        entry_of_type(entries + [dict(type='FPN')], 'FPN')


def _roundtrip(cfg, tmp_path, name):
    """The config as a child process reads it: written by the demo, parsed again."""
    demo = Demo(REPO, str(tmp_path / 'fresh_out'), str(tmp_path / 'data'), PRESETS['cpu'])
    path = demo.write_config(cfg, name)
    assert path == str(tmp_path / 'fresh_out' / 'configs' / f'{name}.py')
    return Config.fromfile(path)


@pytest.mark.parametrize('preset', sorted(PRESETS))
def test_preset_pretraining_configs_build_and_run(preset, tmp_path):
    from mixedae.registry import MODELS
    p = PRESETS[preset]
    for key in PRETRAINS:
        cfg = _roundtrip(pretrain_config(REPO, p, key, str(tmp_path), seed=3), tmp_path, key)
        assert cfg.model.backbone.img_size == p.pretrain_size
        assert cfg.model.backbone.embed_dim == p.arch['embed_dim']
        assert cfg.train_dataloader.dataset.pipeline[1] == dict(
            type='RandomResizedCrop', size=p.pretrain_size, scale=(0.2, 1.0),
            interpolation='bicubic')
        assert cfg.train_dataloader.dataset.data_root == f'{tmp_path}/pretrain'
        # each mixing group of a batch is one family of look-alike generated scenes
        assert cfg.train_dataloader.sampler == dict(type='mixedae.FamilySampler', family=4,
                                                    shuffle=True)
        assert p.pretrain_batch % 4 == 0 and p.num_train % 4 == 0
        assert cfg.train_dataloader.batch_size == p.pretrain_batch
        assert p.pretrain_batch % cfg.model.backbone.group_size == 0
        assert cfg.randomness == dict(seed=3, diff_rank_seed=True,
                                      deterministic=p.deterministic)
        with DefaultScope.overwrite_default_scope('mixedae'):
            model = MODELS.build(cfg.model)
        s = p.pretrain_size
        losses = model.loss(torch.randn(4, 3, s, s))
        assert torch.isfinite(losses['loss_rec'])
        assert ('hr_acc' in losses) == (key in HOMOLOGOUS)
        assert ('loss_hc' in losses) == (key in HOMOLOGOUS)
        # one knob between neighbours: MixedAE starts from MAE's initialisation, only the
        # variant ties q and k; naive mixing has neither top-K nor segment embeddings
        b = cfg.model.backbone
        assert b.get('tied_qk_init', False) == (key == 'mixedae-tied')
        assert (b.group_size == 1) == (key == 'mae')         # no mixing: no segments
        if key != 'mae':
            assert b.use_segment_embed == (key in ('mixedae', 'mixedae-tied'))
            assert (b.attn_mode == 'vanilla') == (key == 'naivemix')


@pytest.mark.parametrize('preset', sorted(PRESETS))
def test_preset_finetuning_configs_build_and_run(preset, tmp_path):
    p = PRESETS[preset]
    d = p.arch['embed_dim']
    ade = _roundtrip(finetune_config(REPO, p, 'ade20k', str(tmp_path), 1, 'i.pth'), tmp_path, 'a')
    assert ade.model.backbone.init_cfg.checkpoint == 'i.pth'
    assert ade.model.decode_head.in_channels == [d] * 4
    assert ade.train_dataloader.batch_size == p.finetune_batch['ade20k']
    assert ade.train_cfg.max_iters == p.finetune_iters['ade20k']
    import mmseg.models  # noqa: F401  (registers the segmentors)
    from mmseg.registry import MODELS as SEG
    with DefaultScope.overwrite_default_scope('mmseg'):
        seg = SEG.build(ade.model).eval()
    with torch.no_grad():
        logits = seg(torch.randn(1, 3, 64, 64), mode='tensor')
    assert logits.shape[:2] == (1, ade.model.decode_head.num_classes)

    probe = _roundtrip(probe_config(REPO, p, str(tmp_path), 2, 'e.pth'), tmp_path, 'p')
    assert probe.model.backbone.init_cfg == dict(type='Pretrained', checkpoint='e.pth')
    assert probe.model.backbone.frozen is True and probe.model.neck is None
    assert list(probe.model.backbone.out_indices) == [p.arch['depth'] - 1]
    assert probe.model.decode_head.in_channels == probe.model.decode_head.channels == d
    assert probe.train_cfg.max_iters == p.probe_iters and probe.randomness.seed == 2
    assert probe.train_dataloader.batch_size == p.probe_batch
    assert probe.val_dataloader.dataset.data_root == f'{tmp_path}/ade'
    probe.model.backbone.init_cfg = None
    with DefaultScope.overwrite_default_scope('mmseg'):
        linear = SEG.build(probe.model).eval()
    with torch.no_grad():
        logits = linear(torch.randn(1, 3, 64, 64), mode='tensor')
    assert logits.shape[:2] == (1, probe.model.decode_head.num_classes)

    coco = _roundtrip(finetune_config(REPO, p, 'coco', str(tmp_path), 1, 'b.pth'), tmp_path, 'c')
    assert coco.model.backbone.init_cfg == dict(type='Pretrained', checkpoint='b.pth')
    assert coco.model.neck[1].in_channels == [d] * 4
    assert coco.param_scheduler[1].milestones == [int(p.finetune_iters['coco'] * 0.75)]
    assert coco.val_evaluator.ann_file.endswith('coco/annotations/instances_val2017.json')
    import mmdet.models  # noqa: F401
    from mmdet.registry import MODELS as DET
    assert [loader.dataset.data_root for loader in (
        coco.train_dataloader, coco.val_dataloader, coco.test_dataloader)] == [
        f'{tmp_path}/coco/'] * 3
    coco.model.backbone.init_cfg = None
    with DefaultScope.overwrite_default_scope('mmdet'):
        det = DET.build(coco.model).eval()
    with torch.no_grad():
        feats = det.extract_feat(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == [coco.model.neck[1].out_channels] * 5
