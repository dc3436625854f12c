# Multi-scale + flip test (ratios 0.5-1.75) of upernet_vit-b16-ibot_...; test only:
# tools/test.py THIS_CONFIG CHECKPOINT
_base_ = ['./upernet_vit-b16-ibot_8xb2-160k_ade20k-512x512.py', './_base_/ms_test.py']
