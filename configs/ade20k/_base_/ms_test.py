# Multi-scale (0.5-1.75) + horizontal-flip test-time augmentation; tools/test.py applies
# tta_model / tta_pipeline when a config defines them.
img_ratios = [0.5, 0.75, 1.0, 1.25, 1.5, 1.75]
tta_model = dict(type='SegTTAModel')
tta_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='TestTimeAug', transforms=[
        [dict(type='Resize', scale_factor=r, keep_ratio=True) for r in img_ratios],
        [dict(type='RandomFlip', prob=0., direction='horizontal'),
         dict(type='RandomFlip', prob=1., direction='horizontal')],
        [dict(type='LoadAnnotations')],
        [dict(type='mixedae.CheckSegAnnotation', num_classes=150)],
        [dict(type='PackSegInputs')],
    ]),
]
