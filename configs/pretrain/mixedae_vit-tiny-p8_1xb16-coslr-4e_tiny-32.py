# Tiny CPU configuration (tests and `make demo`): a 4-block, 64-d ViT on 32x32 images with 8x8
# patches (16 patches, G = 4 -> 4 visible patches per image), 4 epochs of the MAE schedule.
_base_ = [
    '_base_/models/mixedae_vit-base-p16.py',
    '_base_/datasets/imagenet_pretrain.py',
    '_base_/schedules/adamw_coslr-300e.py',
    '_base_/default_runtime.py',
]
data_root = 'data/synthetic/pretrain/'
batch_size = 16
model = dict(
    # keys start as copies of the queries: at this scale MAE's independent initialisation
    # lets a homologous layer settle on keeping the *other* images' tokens (docs/method.md)
    backbone=dict(img_size=32, patch_size=8, embed_dim=64, depth=4, num_heads=4,
                  tied_qk_init=True),
    decoder=dict(decoder_embed_dim=32, depth=2, num_heads=4),
    contrast_dim=32)
train_pipeline = [
    dict(type='LoadRGBImage'),
    dict(type='RandomResizedCrop', size=32, scale=(0.2, 1.0), interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackImageInputs'),
]
train_dataloader = dict(
    batch_size=batch_size,
    num_workers=0,
    persistent_workers=False,
    pin_memory=False,
    dataset=dict(data_root=data_root, data_prefix=dict(img_path=''), pipeline=train_pipeline))
base_batch_size = batch_size
optim_wrapper = dict(optimizer=dict(lr=1.5e-4 * 16 / 256 * 10))  # 10x: few steps on CPU
warmup_epochs = 1
param_scheduler = [  # 1 warm-up epoch, then cosine to train_cfg.max_epochs
    dict(type='LinearLR', start_factor=1e-2, by_epoch=True, begin=0, end=warmup_epochs,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=0.0, by_epoch=True, begin=warmup_epochs,
         convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=4)
auto_scale_lr = dict(base_batch_size=base_batch_size)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1, max_keep_ckpts=2))
log_processor = dict(window_size=1)
env_cfg = dict(mp_cfg=dict(mp_start_method='fork'))
