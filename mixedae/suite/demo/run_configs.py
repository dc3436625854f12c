"""The configs of the demo's runs: the tiny configs with a preset's sizes set by key.

List entries (pipeline transforms, necks, schedulers) are found by their ``type``, never by
position. The demo writes each run's config to its output folder, so a run can be repeated
with ``tools/train.py <that file>``.
"""
from __future__ import annotations

from typing import List

from mmengine.config import Config

from mixedae.datasets.synthetic import DEFAULT_FAMILY
from mixedae.models.backbones.loading import set_backbone_checkpoint
from ..repo import Repo, set_data_root
from .presets import PRETRAINS, Preset, out_indices

#: run kind -> config name in :data:`~mixedae.suite.repo.CONFIGS`
CONFIG_NAMES = dict(mae='mae-tiny', mixedae='mixedae-tiny', probe='ade20k_linear-tiny',
                    ade20k='ade20k-tiny', coco='coco_a-tiny')


def entry_of_type(entries: List[dict], type_name: str) -> dict:
    """The one entry of a config list (pipeline, necks, schedulers) whose ``type`` is
    ``type_name`` (a scope prefix such as ``mmseg.`` is ignored)."""
    found = [e for e in entries if str(e.get('type', '')).split('.')[-1] == type_name]
    if len(found) != 1:
        types = [e.get('type') for e in entries]
        raise KeyError(f'expected one {type_name!r} entry, found {len(found)} in {types}')
    return found[0]


def _load(repo: Repo, kind: str) -> Config:
    return Config.fromfile(repo.config(CONFIG_NAMES[kind]), import_custom_modules=False)


def _set_schedule(cfg: Config, seed: int, deterministic: bool) -> None:
    cfg.randomness = dict(cfg.get('randomness', {}), seed=seed, deterministic=deterministic)


def pretrain_config(repo: Repo, p: Preset, name: str, data: str, seed: int) -> Config:
    """The config of pretraining run ``name`` (a key of :data:`PRETRAINS`) at preset ``p``."""
    kind, backbone, model = PRETRAINS[name]
    cfg = _load(repo, kind)
    cfg.model.update(model)
    cfg.model.backbone.update(p.arch, img_size=p.pretrain_size, **backbone)
    cfg.model.decoder.update(p.decoder)
    loader = cfg.train_dataloader
    entry_of_type(loader.dataset.pipeline, 'RandomResizedCrop').size = p.pretrain_size
    loader.update(batch_size=p.pretrain_batch, num_workers=p.workers,
                  persistent_workers=p.workers > 0)
    loader.dataset.data_root = f'{data}/pretrain'
    # chosen here: batches of whole families of look-alike scenes, so each mixing group (G
    # consecutive images) is one family and colour alone cannot tell its images apart; every
    # method, MAE included, reads the same batches
    loader.sampler = dict(type='mixedae.FamilySampler', family=DEFAULT_FAMILY, shuffle=True)
    cfg.optim_wrapper.optimizer.lr = p.pretrain_lr
    cfg.train_cfg.max_epochs = p.pretrain_epochs
    cfg.default_hooks.logger.interval = p.log_interval
    cfg.log_processor.window_size = p.log_interval
    _set_schedule(cfg, seed, p.deterministic)
    return cfg


def _set_iters(cfg: Config, iters: int, batch: int) -> None:
    cfg.train_dataloader.batch_size = batch
    cfg.train_cfg.update(max_iters=iters, val_interval=iters)
    cfg.default_hooks.checkpoint.interval = max(iters // 3, 1)
    cfg.default_hooks.logger.interval = max(iters // 10, 1)


def probe_config(repo: Repo, p: Preset, data: str, seed: int, backbone: str) -> Config:
    """The config of one linear probe: batch norm and a 1x1 classifier on the last block's
    patch features of the frozen encoder ``backbone`` (a converted checkpoint)."""
    cfg = _load(repo, 'probe')
    d = p.arch['embed_dim']
    cfg.model.backbone.update(p.arch, out_indices=[p.arch['depth'] - 1])
    set_backbone_checkpoint(cfg, backbone)
    cfg.model.decode_head.update(in_channels=d, channels=d)
    set_data_root(cfg, 'ade20k', f'{data}/ade')
    _set_iters(cfg, p.probe_iters, p.probe_batch)
    _set_schedule(cfg, seed, p.deterministic)
    return cfg


def finetune_config(repo: Repo, p: Preset, task: str, data: str, seed: int,
                    backbone: str) -> Config:
    """The config of one fine-tuning run from the converted encoder ``backbone``."""
    cfg = _load(repo, task)
    d = p.arch['embed_dim']
    cfg.model.backbone.update(p.arch, out_indices=out_indices(p.arch['depth']))
    set_backbone_checkpoint(cfg, backbone)
    if task == 'ade20k':
        cfg.model.neck.embed_dim = d
        cfg.model.decode_head.in_channels = [d] * 4
        cfg.model.auxiliary_head.in_channels = d
    else:
        entry_of_type(cfg.model.neck, 'Feature2Pyramid').embed_dim = d
        entry_of_type(cfg.model.neck, 'FPN').in_channels = [d] * 4
    set_data_root(cfg, task, f'{data}/ade' if task == 'ade20k' else f'{data}/coco/')
    iters = p.finetune_iters[task]
    _set_iters(cfg, iters, p.finetune_batch[task])
    if task == 'coco':
        entry_of_type(cfg.param_scheduler, 'MultiStepLR').milestones = [int(iters * 0.75)]
    _set_schedule(cfg, seed, p.deterministic)
    return cfg
