# Multi-scale + flip test of upernet_vit-b16-scratch_...; test only.
_base_ = ['./upernet_vit-b16-scratch_8xb2-160k_ade20k-512x512.py', './_base_/ms_test.py']
