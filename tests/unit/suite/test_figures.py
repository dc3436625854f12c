"""The attention and mixing figures (mixedae.suite.figures), and their tools' one-line errors."""
import os
import statistics
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from support import ROOT
from mixedae.datasets.synthetic import write_dataset
from mixedae.models.backbones.checkpoint_layouts import extract_backbone
from mixedae.suite.figures import (MIXING_ROWS, attention_figure, build_pretrain_model,
                                   cls_attention_maps, list_images, load_images,
                                   load_pretrain_weights, mixing_figure, normalization_of,
                                   text_tile, text_width, vit_from_pretrain_config)
from mixedae.suite.pretrain_checkpoint import CheckpointKindError
from mixedae.suite.plots import seeds_figure

TINY_PRE = os.path.join(ROOT, 'configs/pretrain/mixedae_vit-tiny-p8_1xb16-coslr-4e_tiny-32.py')


@pytest.fixture(scope='module')
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp('img')
    return write_dataset(str(root), 4, 1, (48, 48), seed=0, views=('pretrain',))['pretrain']


@pytest.fixture(scope='module')
def pretrain_ckpt(tmp_path_factory):
    model, _ = build_pretrain_model(TINY_PRE)
    path = tmp_path_factory.mktemp('ckpt') / 'pre.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict(epoch=1)), path)
    return str(path)


@pytest.fixture(scope='module')
def backbone_ckpt(pretrain_ckpt, tmp_path_factory):
    sd, _ = extract_backbone(torch.load(pretrain_ckpt), 'mixedae', pretrain_ckpt)
    path = tmp_path_factory.mktemp('ckpt') / 'vit.pth'
    torch.save(dict(state_dict=sd), path)
    return str(path)


def test_attention_figure_grid(images, pretrain_ckpt, backbone_ckpt):
    a = vit_from_pretrain_config(TINY_PRE, pretrain_ckpt)
    b = vit_from_pretrain_config(TINY_PRE, backbone_ckpt)
    for pa, pb in zip(a.parameters(), b.parameters()):   # both kinds load the same encoder
        torch.testing.assert_close(pa, pb, rtol=0, atol=0)
    mean, std = normalization_of(TINY_PRE)
    imgs = load_images(list_images(images, 3), (32, 32))
    png = attention_figure([('A', a), ('B', b)], imgs, mean, std, tile=64)
    assert png.shape == (14 + 3 * 64 + 4 * 4, 3 * 64 + 4 * 4, 3)
    np.testing.assert_array_equal(png[18:82, 4:68], cv2.resize(imgs[0], (64, 64),
                                                               interpolation=cv2.INTER_NEAREST))
    # identical encoders give identical overlays
    np.testing.assert_array_equal(png[18:82, 72:136], png[18:82, 140:204])


def test_attention_maps_are_distributions():
    from mixedae.models import ViT
    vit = ViT(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=4).eval()
    maps = cls_attention_maps(vit, torch.randn(2, 3, 32, 32))
    assert maps.shape == (2, 4, 4)
    # the class token's weights over patches sum to < 1 (the rest is on itself)
    assert ((maps.sum((1, 2)) > 0) & (maps.sum((1, 2)) < 1)).all()


def test_mixing_figure_rows(images, pretrain_ckpt):
    model, cfg = build_pretrain_model(TINY_PRE)
    load_pretrain_weights(model, pretrain_ckpt)
    mean, std = normalization_of(TINY_PRE)
    imgs = load_images(list_images(images, 4), (32, 32))
    png = mixing_figure(model, imgs, mean, std, tile=64)
    left = text_width('reconstruction') + 4                      # the row label strip
    assert png.shape == (14 + 3 * 64 + 4 * 4, left + 5 * 64 + 6 * 4, 3)
    # each row is labelled on the left, and the labels are the ones the docstring names
    assert MIXING_ROWS == ('input', 'visible', 'reconstruction')
    for i, text in enumerate(MIXING_ROWS):
        y = 18 + i * 68
        np.testing.assert_array_equal(png[y:y + 64, :left], text_tile(text, left, 64))
        assert (png[y:y + 64, :left] < 128).any()                 # ink, not a blank strip
    assert (text_tile('input', left, 64) != text_tile('visible', left, 64)).any()
    np.testing.assert_array_equal(png[:14, left + 4:left + 68], text_tile('mixed input', 64, 14))
    png = png[:, left:]                                           # the tiles, as without labels
    blank = png[14 + 4 + 64 + 4:14 + 4 + 2 * 64 + 4, 4:4 + 64]    # row 2, column 1: empty
    assert (blank == 255).all()
    # row 1 shows the source images undone from normalisation (up to rounding)
    src = png[18:82, 72:136].astype(int)
    ref = cv2.resize(imgs[0], (64, 64), interpolation=cv2.INTER_NEAREST).astype(int)
    assert np.abs(src - ref).max() <= 1
    # every patch of the mixed input is the same patch of one of the sources
    mixed = cv2.resize(png[18:82, 4:68], (32, 32), interpolation=cv2.INTER_NEAREST).astype(int)
    for i in range(4):
        for j in range(4):
            cell = mixed[8 * i:8 * i + 8, 8 * j:8 * j + 8]
            assert min(np.abs(cell - im[8 * i:8 * i + 8, 8 * j:8 * j + 8].astype(int)).max()
                       for im in imgs) <= 1


def test_text_tile_cuts_what_does_not_fit():
    assert text_width('reconstruction') > text_width('input') > 0
    narrow = text_tile('reconstruction', text_width('recon') + 2, 14)
    np.testing.assert_array_equal(narrow, text_tile('recon', text_width('recon') + 2, 14))


def test_mixing_refuses_converted_backbone_in_one_line(backbone_ckpt, images, tmp_path):
    model, _ = build_pretrain_model(TINY_PRE)
    with pytest.raises(CheckpointKindError, match='needs a pretraining checkpoint'):
        load_pretrain_weights(model, backbone_ckpt)


@pytest.mark.slow
def test_visualize_mixing_tool_says_one_line(backbone_ckpt, images, tmp_path):
    proc = subprocess.run([sys.executable, 'tools/visualize_mixing.py', TINY_PRE,
                           '--checkpoint', backbone_ckpt, '--image-dir', images,
                           '--out', str(tmp_path / 'm.png')], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f'error: {backbone_ckpt} has no decoder.* weights: this needs a pretraining checkpoint '
        '(work_dirs/<run>/epoch_N.pth from tools/train.py), not a converted backbone']


def test_list_images_skips_own_output_and_non_images(tmp_path):
    for name in ('a.jpg', 'b.png', 'notes.txt', 'z.jpg'):
        (tmp_path / name).write_bytes(b'x')
    assert list_images(str(tmp_path), 10, exclude=[str(tmp_path / 'b.png')]) == [
        str(tmp_path / 'a.jpg'), str(tmp_path / 'z.jpg')]
    assert list_images(str(tmp_path), 1) == [str(tmp_path / 'a.jpg')]
    with pytest.raises(FileNotFoundError, match='nope'):
        list_images(str(tmp_path / 'nope'), 1)


def test_load_images_centre_crops_instead_of_stretching(tmp_path):
    img = np.zeros((40, 80, 3), np.uint8)      # wide: red side bands, a blue square centre
    img[:, :20] = img[:, 60:] = (0, 0, 255)   # BGR red
    img[:, 20:60] = (255, 0, 0)               # BGR blue
    cv2.imwrite(str(tmp_path / 'wide.png'), img)
    out = load_images([str(tmp_path / 'wide.png')], (16, 16))[0]
    assert out.shape == (16, 16, 3)
    assert (out == (0, 0, 255)).all()          # RGB blue only: the bands are cropped away
    tall = load_images([str(tmp_path / 'wide.png')], (8, 32))[0]   # wider target: full width
    assert (tall[:, :6] == (255, 0, 0)).all() and (tall[:, 10:22] == (0, 0, 255)).all()


def test_seed_bars_one_panel_per_family_labels_clear_of_error_bars():
    values = {'ADE20K mIoU': {'MAE': [50.0, 56.0], 'MixedAE': [55.0, 57.0]},
              'COCO box AP': {'MAE': [3.0, 3.4], 'MixedAE': [2.0, 4.4]},
              'COCO mask AP': {'MAE': [1.0, 1.4, 4.0], 'MixedAE': []}}
    fig = seeds_figure(values, 'demo')
    fig.canvas.draw()
    ade, coco = fig.axes
    assert [t.get_text() for t in ade.get_xticklabels()] == ['ADE20K mIoU']
    assert [t.get_text() for t in coco.get_xticklabels()] == [
        'COCO box AP', 'COCO mask AP\n(missing: MixedAE)']
    assert coco.get_ylim()[1] < 10 < ade.get_ylim()[1]         # COCO AP readable on its own axis
    renderer = fig.canvas.get_renderer()
    for ax, metrics in ((ade, ['ADE20K mIoU']), (coco, ['COCO box AP', 'COCO mask AP'])):
        bars = [(metric, seeds) for metric in metrics for seeds in values[metric].values()
                if seeds]
        assert [t.get_text() for t in ax.texts] == [f'{statistics.fmean(s):.1f}' for _, s in bars]
        frame = ax.get_window_extent(renderer)
        for label, (_, seeds) in zip(ax.texts, bars):
            box = label.get_window_extent(renderer)
            mean, std = statistics.fmean(seeds), statistics.stdev(seeds)
            top = ax.transData.transform((0, max(mean + std, *seeds)))[1]   # error bar or dot
            assert top < box.y0 and box.y1 <= frame.y1                     # clear, and inside
