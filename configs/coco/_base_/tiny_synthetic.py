# Shared scaling-down of the two COCO protocols for CPU runs on the synthetic COCO-format data
# (5 shape classes, 64x80 images): a 4-block 64-d ViT with 8x8 patches, 32-channel heads,
# fewer sampled RoIs, 20 iterations. The tiny configs assign these (names prefixed with
# ``tiny_`` so that they do not clash with the protocol's own base files).
tiny_data_root = 'data/synthetic/coco/'
tiny_val_ann = tiny_data_root + 'annotations/instances_val2017.json'
tiny_metainfo = dict(classes=('disc', 'square', 'triangle', 'cross', 'bar'))
tiny_vit = dict(img_size=(64, 64), patch_size=8, embed_dim=64, depth=4, num_heads=4,
                drop_path_rate=0.0, with_cp=False)
tiny_backbone_fpn = dict(**tiny_vit, out_indices=(0, 1, 2, 3))
tiny_backbone_vitdet = dict(**tiny_vit, out_indices=(3,), window_size=4,
                            window_block_indexes=(0, 2))
tiny_rpn_head = dict(in_channels=32, feat_channels=32)
tiny_roi_head = dict(
    bbox_roi_extractor=dict(out_channels=32),
    bbox_head=dict(in_channels=32, fc_out_channels=64, num_classes=5),
    mask_roi_extractor=dict(out_channels=32),
    mask_head=dict(in_channels=32, conv_out_channels=32, num_classes=5))
tiny_roi_head_vitdet = dict(
    tiny_roi_head, bbox_head=dict(tiny_roi_head['bbox_head'], conv_out_channels=32))
tiny_model_train_cfg = dict(rpn=dict(sampler=dict(num=64)), rcnn=dict(sampler=dict(num=64)))
tiny_model_test_cfg = dict(rpn=dict(nms_pre=200, max_per_img=100), rcnn=dict(max_per_img=20))
tiny_train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=20, val_interval=20)
tiny_param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=5),
    dict(type='MultiStepLR', begin=0, by_epoch=False, milestones=[15], gamma=0.1),
]
tiny_default_hooks = dict(logger=dict(interval=5),
                          checkpoint=dict(by_epoch=False, interval=10, max_keep_ckpts=2),
                          visualization=dict(draw=False))
