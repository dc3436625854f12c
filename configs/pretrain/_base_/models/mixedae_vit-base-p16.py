# MixedAE with a ViT-B/16 encoder and MAE's 512-d x 8 decoder (docs/method.md).
# Baselines and ablations override the knobs marked "switch".
model = dict(
    type='MixedAE',
    data_preprocessor=dict(
        type='ImgDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=False),  # images are loaded as RGB
    backbone=dict(
        type='MixedViT',
        img_size=224,
        patch_size=16,
        embed_dim=768,
        depth=12,
        num_heads=12,
        group_size=4,              # switch: G = 1/r (1 = MAE)
        attn_mode='topk',          # switch: topk | vanilla | oracle
        homologous_layers='all',   # switch: all | last_half | [indices]
        topk=None,                 # switch: None = N/G + 1
        use_segment_embed=True,    # switch
        tied_qk_init=False,        # switch: start keys = queries in homologous layers
        attn_impl='auto'),         # fused Triton top-K kernel on CUDA, PyTorch elsewhere
    decoder=dict(type='MAEDecoder', decoder_embed_dim=512, depth=8, num_heads=16),
    mix_mode='compose',            # switch: compose | full
    mask_ratio=0.75,               # used by MAE (G = 1)
    contrast_weight=0.1,           # switch: lambda (0 = off)
    contrast_tau=0.25,             # switch: tau
    contrast_dim=256,
    norm_pix_loss=True)
