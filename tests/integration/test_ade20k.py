"""ADE20K transfer end to end on generated data (CPU): train, evaluate, resume, distribute."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import torch

from mixedae.datasets import checks
from mixedae.datasets.synthetic import write_dataset
from mixedae.models.backbones.checkpoint_layouts import convert_checkpoint
from support import ROOT, data_root_options, free_port, run_in_repo

TINY = os.path.join(ROOT, 'configs/ade20k/upernet_vit-tiny-p8_1xb4-40iter_ade20k-synthetic-64.py')
PY = sys.executable


def test_generated_labels_follow_the_image(ade_root):
    img = cv2.imread(os.path.join(ade_root, 'images/training/ADE_train_00000000.jpg'))
    label = cv2.imread(os.path.join(ade_root, 'annotations/training/ADE_train_00000000.png'),
                       cv2.IMREAD_UNCHANGED)
    assert img.shape[:2] == label.shape == (64, 80)
    assert set(np.unique(label)) <= set(range(6)) and label.max() > 0
    # object pixels differ in colour from the background they cover
    fg, bg = img[label > 0].mean(0), img[label == 0].mean(0)
    assert np.abs(fg - bg).max() > 10


def test_check_dataset_accepts_generated_and_reports_problems(ade_root, tmp_path):
    assert checks.check_ade20k(ade_root) == []
    broken = tmp_path / 'ade'
    write_dataset(str(tmp_path), num_train=3, num_val=1, size=(32, 32), seed=1,
                  views=('ade20k',))
    os.remove(broken / 'annotations/training/ADE_train_00000001.png')
    cv2.imwrite(str(broken / 'annotations/validation/ADE_valid_00000000.png'),
                np.full((32, 32), 200, np.uint8))
    problems = checks.check_ade20k(str(broken))
    text = '\n'.join(problems)
    assert 'ADE_train_00000001' in text and 'no annotation' in text
    assert 'ADE_valid_00000000.png' in text and '200' in text
    # the tool: the same problems, one per line, and the exit status
    for root, status in ((ade_root, 0), (str(broken), 1)):
        out = run_in_repo([PY, 'tools/check_dataset.py', 'ade20k', root])
        assert out.returncode == status, out.stderr[-2000:]
        # the generated set passes, and is said not to be the full dataset
        assert 'this is not the full dataset' in out.stdout
    assert set(problems) <= set(out.stdout.splitlines())


def test_ground_truth_as_prediction_gives_miou_100(ade_root):
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmseg.registry import DATASETS, METRICS
    import mixedae  # noqa: F401
    cfg = Config.fromfile(TINY)
    cfg.val_dataloader.dataset.data_root = ade_root
    with DefaultScope.overwrite_default_scope('mmseg'):
        dataset = DATASETS.build(cfg.val_dataloader.dataset)
        metric = METRICS.build(cfg.val_evaluator)
    metric.dataset_meta = dataset.metainfo
    for i in range(len(dataset)):
        sample = dataset[i]['data_samples']
        pred = sample.to_dict()
        pred['pred_sem_seg'] = dict(data=sample.gt_sem_seg.data)
        metric.process({}, [pred])
    metrics = metric.compute_metrics(metric.results)
    assert metrics['mIoU'] == pytest.approx(100.0)
    assert metrics['aAcc'] == pytest.approx(100.0)


#: a --tta of one view, the image mirrored (tools/test.py --tta with the tiny config)
FLIP_ONLY_TTA = """tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 64), keep_ratio=True),
    dict(type='TestTimeAug', transforms=[
        [dict(type='RandomFlip', prob=1., direction='horizontal')],
        [dict(type='LoadAnnotations')], [dict(type='PackSegInputs')]])]
"""


def read_label_maps(folder) -> dict:
    """Every ``*.png`` label map of ``folder`` by file name: (H, W) uint8."""
    return {name: cv2.imread(os.path.join(folder, name), cv2.IMREAD_UNCHANGED)
            for name in sorted(os.listdir(folder)) if name.endswith('.png')}


def miou(preds: dict, gts: dict) -> float:
    """mIoU (%) of ADE20K-style label maps (0 ignored, class k as k + 1), accumulated over the
    images as mmseg's IoUMetric does; classes absent from both are left out."""
    inter, union = np.zeros(6), np.zeros(6)
    for name, gt in gts.items():
        valid = gt > 0
        pred, gt = preds[name][valid], gt[valid]
        inter += np.bincount(pred[pred == gt], minlength=6)
        union += np.bincount(pred, minlength=6) + np.bincount(gt, minlength=6) \
            - np.bincount(pred[pred == gt], minlength=6)
    present = union[1:] > 0
    return float((inter[1:][present] / union[1:][present]).mean() * 100)


def png_copy(root: str, dest, mirror: bool) -> str:
    """The validation split of ``root`` with its images as PNG (no JPEG loss), every image and
    label map mirrored left-right if ``mirror``."""
    for sub in ('images/validation', 'annotations/validation'):
        os.makedirs(os.path.join(dest, sub))
        for name in os.listdir(os.path.join(root, sub)):
            img = cv2.imread(os.path.join(root, sub, name), cv2.IMREAD_UNCHANGED)
            cv2.imwrite(os.path.join(dest, sub, os.path.splitext(name)[0] + '.png'),
                        np.ascontiguousarray(img[:, ::-1] if mirror else img))
    return str(dest)


@pytest.mark.slow
def test_tiny_config_trains_evaluates_and_writes_metrics(ade_root, tmp_path):
    work = tmp_path / 'work'
    out = run_in_repo([PY, 'tools/train.py', TINY, '--work-dir', str(work),
               '--cfg-options', *data_root_options(ade_root), 'train_cfg.max_iters=10',
               'train_cfg.val_interval=10'])
    assert out.returncode == 0, out.stderr[-4000:]
    assert (work / 'iter_10.pth').exists()
    metrics_file = tmp_path / 'metrics.json'
    out = run_in_repo([PY, 'tools/test.py', TINY, str(work / 'iter_10.pth'), '--work-dir', str(work),
               '--out-metrics', str(metrics_file), '--out', str(tmp_path / 'pred'),
               '--show-dir', str(tmp_path / 'show'), '--cfg-options', *data_root_options(ade_root)])
    assert out.returncode == 0, out.stderr[-4000:]
    metrics = json.loads(metrics_file.read_text())
    assert {'mIoU', 'aAcc', 'mAcc'} <= set(metrics)
    assert 0.0 <= metrics['mIoU'] <= 100.0 and metrics['aAcc'] > 0
    # --out: one label map per validation image, in the dataset's labels (class k as k + 1),
    # from which the logged metrics are recomputed
    preds = read_label_maps(tmp_path / 'pred')
    gts = read_label_maps(os.path.join(ade_root, 'annotations/validation'))
    assert preds.keys() == gts.keys() and len(preds) == 4
    assert all(preds[n].shape == gts[n].shape and preds[n].max() <= 5 for n in preds)
    assert miou(preds, gts) == pytest.approx(metrics['mIoU'], abs=0.005)
    # --show-dir (the same run) saves one visualised prediction per validation image
    assert len(list((tmp_path / 'show').rglob('*.png'))) == 4
    # --tta: the config's multi-scale + flip, a prediction that differs from the plain one
    out = run_in_repo([PY, 'tools/test.py', TINY, str(work / 'iter_10.pth'), '--work-dir', str(work),
               '--tta', '--out', str(tmp_path / 'tta'), '--cfg-options', *data_root_options(ade_root)])
    assert out.returncode == 0, out.stderr[-4000:]
    tta = read_label_maps(tmp_path / 'tta')
    assert tta.keys() == preds.keys() and all(tta[n].shape == preds[n].shape for n in tta)
    assert any((tta[n] != preds[n]).any() for n in tta)
    # flip-only --tta is the plain prediction of the mirrored image, mirrored back
    flip_cfg = tmp_path / 'flip_tta.py'
    flip_cfg.write_text(f"_base_ = ['{TINY}']\n" + FLIP_ONLY_TTA)
    runs = {'flip_tta': (str(flip_cfg), png_copy(ade_root, tmp_path / 'png', False), ['--tta']),
            'mirrored': (TINY, png_copy(ade_root, tmp_path / 'png_mirrored', True), [])}
    for name, (config, root, flags) in runs.items():
        out = run_in_repo([PY, 'tools/test.py', config, str(work / 'iter_10.pth'), '--work-dir',
                           str(work), *flags, '--out', str(tmp_path / name), '--cfg-options',
                           *data_root_options(root), 'test_dataloader.dataset.img_suffix=.png'])
        assert out.returncode == 0, out.stderr[-4000:]
    flip_tta = read_label_maps(tmp_path / 'flip_tta')
    mirrored = read_label_maps(tmp_path / 'mirrored')
    assert flip_tta.keys() == preds.keys()
    for name in flip_tta:
        assert np.array_equal(flip_tta[name], mirrored[name][:, ::-1])


@pytest.mark.slow
def test_killed_training_resumes_without_losing_checkpoints(ade_root, tmp_path):
    work = tmp_path / 'work'
    cmd = [PY, 'tools/train.py', TINY, '--work-dir', str(work), '--cfg-options',
           *data_root_options(ade_root), 'train_cfg.val_interval=1000',
           'default_hooks.checkpoint.interval=5', 'default_hooks.checkpoint.max_keep_ckpts=10']
    proc = subprocess.Popen(cmd + ['train_cfg.max_iters=1000'], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (work / 'iter_10.pth').exists() and time.time() < deadline \
            and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, 'the run ended before it could be killed'
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (work / 'iter_10.pth').exists()
    before = {p.name for p in work.glob('iter_*.pth')}
    out = run_in_repo(cmd + ['train_cfg.max_iters=20', '--resume'])
    assert out.returncode == 0, out.stderr[-4000:]
    assert 'resumed epoch' in out.stdout + out.stderr
    after = {p.name for p in work.glob('iter_*.pth')}
    assert before <= after and 'iter_20.pth' in after


@pytest.mark.slow
def test_dist_train_two_gloo_processes(ade_root, tmp_path):
    work = tmp_path / 'dist'
    env = dict(os.environ, PORT=str(free_port()))
    out = run_in_repo(['bash', 'tools/dist_train.sh', TINY, '2', '--work-dir', str(work),
               '--cfg-options', *data_root_options(ade_root), 'train_cfg.max_iters=6',
               'train_cfg.val_interval=6', 'train_dataloader.batch_size=2',
               'default_hooks.checkpoint.interval=6'], env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    assert (work / 'iter_6.pth').exists()
    # rank 1 shows no Python warning (MMEngine's logger shows it only errors): each once
    warned = [line for line in (out.stdout + out.stderr).splitlines() if 'Warning: ' in line]
    assert warned and len(warned) == len(set(warned)), warned
    metrics_file = tmp_path / 'm.json'
    out = run_in_repo(['bash', 'tools/dist_test.sh', TINY, str(work / 'iter_6.pth'), '2',
               '--work-dir', str(work), '--out-metrics', str(metrics_file),
               '--cfg-options', *data_root_options(ade_root)], env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    tested = json.loads(metrics_file.read_text())
    assert not list(tmp_path.glob('m.json.tmp'))
    # the validation at iteration 6 evaluated the weights saved as iter_6.pth: the same numbers
    # (rank 1 validated with its own BN statistics before mixedae.BroadcastBuffersHook)
    scalars, = work.glob('*/vis_data/scalars.json')
    validated = [json.loads(line) for line in scalars.read_text().splitlines()
                 if 'mIoU' in line][-1]
    assert validated['step'] == 6
    assert {k: validated[k] for k in ('aAcc', 'mIoU', 'mAcc')} == \
        {k: tested[k] for k in ('aAcc', 'mIoU', 'mAcc')}


def test_converted_checkpoint_loads_into_the_config_backbone(tmp_path):
    from mmengine.config import Config
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS
    from mixedae.models import MixedViT
    encoder = MixedViT(img_size=32, patch_size=8, embed_dim=64, depth=4, num_heads=4)
    torch.save(dict(state_dict={f'backbone.{k}': v for k, v in encoder.state_dict().items()}),
               tmp_path / 'pre.pth')
    convert_checkpoint(str(tmp_path / 'pre.pth'), str(tmp_path / 'vit.pth'), 'mixedae')
    cfg = Config.fromfile(TINY)
    cfg.model.backbone.init_cfg = dict(type='Pretrained', checkpoint=str(tmp_path / 'vit.pth'))
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(cfg.model)
    model.backbone.init_weights()   # rel-pos tables and layer scale are the expected misses
    torch.testing.assert_close(model.backbone.blocks[2].attn.qkv.weight,
                               encoder.blocks[2].attn.qkv.weight)
    assert model.backbone.pos_embed.shape == (1, 1 + 64, 64)   # resampled 4x4 -> 8x8


def test_load_backbone_option_starts_a_scratch_config_from_a_converted_backbone(tmp_path):
    from mmengine.registry import DefaultScope
    from mmseg.registry import MODELS
    from mixedae.models import MixedViT
    from mixedae.utils.errors import InvalidInputError, MissingInputError
    from mixedae.apis.inputs import check_inputs_exist
    from support import load_tool
    encoder = MixedViT(img_size=32, patch_size=8, embed_dim=64, depth=4, num_heads=4)
    torch.save(dict(state_dict={f'backbone.{k}': v for k, v in encoder.state_dict().items()}),
               tmp_path / 'pre.pth')
    ckpt = str(tmp_path / 'vit.pth')
    convert_checkpoint(str(tmp_path / 'pre.pth'), ckpt, 'mixedae')
    train = load_tool('train')
    cfg = train.build_config(train.parse_args([TINY, '--load-backbone', ckpt]))
    assert cfg.model.backbone.init_cfg == dict(type='Pretrained', checkpoint=ckpt)
    with DefaultScope.overwrite_default_scope('mmseg'):
        model = MODELS.build(cfg.model)
    model.backbone.init_weights()
    torch.testing.assert_close(model.backbone.blocks[3].mlp.fc2.weight,
                               encoder.blocks[3].mlp.fc2.weight)
    # the path is checked once, with the run's other inputs, before the model is built
    missing = train.build_config(train.parse_args([TINY, '--load-backbone', ckpt + '.missing']))
    with pytest.raises(MissingInputError, match=re.escape(
            f"model.backbone.init_cfg.checkpoint: checkpoint file not found: '{ckpt}.missing'")):
        check_inputs_exist(missing, 'train')
    (tmp_path / 'no_backbone.py').write_text("model = dict(type='Anything')\n")
    with pytest.raises(InvalidInputError, match='no_backbone.py has no model.backbone'):
        train.build_config(train.parse_args([str(tmp_path / 'no_backbone.py'),
                                             '--load-backbone', ckpt]))


@pytest.mark.slow
def test_missing_pretrained_checkpoint_fails_before_data(tmp_path):
    out = run_in_repo([PY, 'tools/train.py',
               os.path.join(ROOT, 'configs/ade20k/upernet_vit-b16-mixedae_8xb2-160k_ade20k-512x512.py'),
               '--work-dir', str(tmp_path), '--cfg-options',
               f'train_dataloader.dataset.data_root={tmp_path}/nowhere'])
    assert out.returncode != 0
    # both missing inputs are listed at once, before any data is read
    assert 'init_cfg.checkpoint: checkpoint file not found' in out.stderr
    assert f"train_dataloader.dataset.data_root: folder not found: '{tmp_path}/nowhere'" \
        in out.stderr


def _without_checkpoint(cfg):
    d = cfg.to_dict()
    d['model']['backbone'].pop('init_cfg', None)
    return d


@pytest.mark.parametrize('method', ['mixedae', 'mae', 'ibot'])
def test_method_configs_differ_only_in_the_checkpoint(method):
    from mmengine.config import Config
    base = Config.fromfile(os.path.join(
        ROOT, 'configs/ade20k/upernet_vit-b16-scratch_8xb2-160k_ade20k-512x512.py'))
    cfg = Config.fromfile(os.path.join(
        ROOT, f'configs/ade20k/upernet_vit-b16-{method}_8xb2-160k_ade20k-512x512.py'))
    assert cfg.model.backbone.init_cfg.type == 'Pretrained'
    assert method in cfg.model.backbone.init_cfg.checkpoint
    assert _without_checkpoint(cfg) == _without_checkpoint(base)
    # tools/test.py --tta: mmseg's ADE20K multi-scale + flip
    assert cfg.tta_model.type == 'SegTTAModel'
    aug = cfg.tta_pipeline[1].transforms
    assert [t.scale_factor for t in aug[0]] == [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
    assert [t.prob for t in aug[1]] == [0., 1.]


def test_recipe_values():
    from mmengine.config import Config
    cfg = Config.fromfile(os.path.join(
        ROOT, 'configs/ade20k/upernet_vit-b16-mixedae_8xb2-160k_ade20k-512x512.py'))
    assert cfg.model.backbone.out_indices == (3, 5, 7, 11)
    assert cfg.model.neck.rescales == [4, 2, 1, 0.5]
    assert cfg.model.decode_head.num_classes == 150
    assert cfg.optim_wrapper.paramwise_cfg.layer_decay_rate == 0.65
    assert cfg.optim_wrapper.optimizer.lr == 1e-4 and cfg.train_cfg.max_iters == 160000
    assert cfg.param_scheduler[0].end == 1500
    assert cfg.train_dataloader.batch_size * 8 == 16
    assert cfg.model.test_cfg.mode == 'slide' and cfg.model.test_cfg.stride == (341, 341)
    large = Config.fromfile(os.path.join(
        ROOT, 'configs/ade20k/upernet_vit-l16-mixedae_8xb2-160k_ade20k-512x512.py'))
    assert large.model.backbone.depth == 24 and large.model.neck.embed_dim == 1024
