# ImageNet-1K train images with MAE's pretraining augmentation.
data_root = 'data/imagenet/'
batch_size = 512  # per GPU; a multiple of model.backbone.group_size (checked before training)

train_pipeline = [
    dict(type='LoadRGBImage'),
    dict(type='RandomResizedCrop', size=224, scale=(0.2, 1.0), interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackImageInputs'),
]
train_dataloader = dict(
    batch_size=batch_size,
    # 4 loader workers and the main process: the 5 cores per GPU that tools/slurm_train.sh
    # reserves by default (CPUS_PER_TASK), as mmseg's configs; with more cores, raise both:
    # CPUS_PER_TASK=11 ... --cfg-options train_dataloader.num_workers=10 (MAE's own setting)
    num_workers=4,
    persistent_workers=True,
    pin_memory=True,
    drop_last=True,  # as MAE: every batch holds whole mixing groups
    sampler=dict(type='DefaultSampler', shuffle=True),
    collate_fn=dict(type='pseudo_collate'),
    dataset=dict(
        type='ImageFolder',
        data_root=data_root,
        data_prefix=dict(img_path='train/'),
        pipeline=train_pipeline))
