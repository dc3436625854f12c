"""Dataset layout checks: the label range (boundary classes included), ADE20K pairing and sizes,
COCO annotation files; each problem names its file."""
import json
import os
import re

import cv2
import numpy as np
import pytest

from mixedae.datasets.checks import (ADE_MAX_LABEL, CHECKS, FULL_SPLIT_IMAGES, Problem,
                                     bad_label_values, cap_problems, check_ade20k, check_coco,
                                     is_data_file, split_size_warning)
from mixedae.utils.errors import MissingInputError
from support import load_tool


@pytest.mark.parametrize('values,num_classes,allowed,bad', [
    ([0, 1, 2], 3, (), []),                      # 0 and the last class num_classes - 1
    ([2, 3], 3, (), [3]),                        # num_classes itself is outside
    ([-1, 0], 3, (), [-1]),
    ([0, 255, 3, 3, 7], 3, (255,), [3, 7]),      # sorted, unique
    ([255, 4], 3, [255, 4], []),
])
def test_bad_label_values_at_the_boundaries(values, num_classes, allowed, bad):
    assert bad_label_values(np.array(values).reshape(1, -1), num_classes, allowed) == bad


def ade_tree(root, labels, split_sizes=None):
    """images/ and annotations/ of both splits; ``labels``: stem -> label map (training)."""
    for split in ('training', 'validation'):
        os.makedirs(os.path.join(root, 'images', split))
        os.makedirs(os.path.join(root, 'annotations', split))
    for stem, label in labels.items():
        cv2.imwrite(os.path.join(root, 'images', 'training', stem + '.jpg'),
                    np.zeros(label.shape[:2] + (3,), np.uint8))
        cv2.imwrite(os.path.join(root, 'annotations', 'training', stem + '.png'), label)
    return root


def test_ade_labels_up_to_150_pass_and_151_is_named(tmp_path, capsys):
    assert ADE_MAX_LABEL == 150
    label = np.zeros((6, 8), np.uint8)
    label[0, :2] = [ADE_MAX_LABEL, 1]                  # the last class is valid
    root = ade_tree(str(tmp_path / 'ok'), dict(a=label))
    assert check_ade20k(root) == []
    label[1, 0] = 151
    root = ade_tree(str(tmp_path / 'bad'), dict(a=label))
    assert check_ade20k(root) == [
        f'{root}/annotations/training/a.png: label values [151] outside 0-150']
    assert capsys.readouterr().out == ''                   # quiet unless verbose


def test_ade_pairing_channels_and_sizes_are_checked(tmp_path, capsys):
    root = ade_tree(str(tmp_path), dict(a=np.zeros((6, 8), np.uint8)))
    train_img, train_ann = f'{root}/images/training', f'{root}/annotations/training'
    cv2.imwrite(f'{train_img}/only_image.jpg', np.zeros((6, 8, 3), np.uint8))
    cv2.imwrite(f'{train_ann}/only_label.png', np.zeros((6, 8), np.uint8))
    cv2.imwrite(f'{train_img}/small.jpg', np.zeros((6, 8, 3), np.uint8))
    cv2.imwrite(f'{train_ann}/small.png', np.zeros((4, 8), np.uint8))
    cv2.imwrite(f'{train_img}/rgb.jpg', np.zeros((6, 8, 3), np.uint8))
    cv2.imwrite(f'{train_ann}/rgb.png', np.zeros((6, 8, 3), np.uint8))
    open(f'{train_img}/broken.jpg', 'w').write('no image')
    cv2.imwrite(f'{train_ann}/broken.png', np.zeros((6, 8), np.uint8))
    cv2.imwrite(f'{train_img}/nolabel.jpg', np.zeros((6, 8, 3), np.uint8))
    open(f'{train_ann}/nolabel.png', 'w').write('no image')
    open(f'{train_img}/notes.txt', 'w').write('ignored')
    assert check_ade20k(root, verbose=True) == [
        f'{train_img}/only_image.jpg: no annotation only_image.png',
        f'{train_ann}/only_label.png: no image',
        f'{train_img}/broken.jpg: unreadable image',
        f'{train_ann}/nolabel.png: unreadable annotation',
        f'{train_ann}/rgb.png: annotation must be single-channel, has shape (6, 8, 3)',
        f'{train_ann}/small.png: size (4, 8) differs from the image (6, 8)']
    assert [line for line in capsys.readouterr().out.splitlines()
            if not line.startswith('warning:')] == ['training: 6 images, 6 annotations',
                                                     'validation: 0 images, 0 annotations']


def test_ade_missing_folders_are_listed(tmp_path):
    os.makedirs(tmp_path / 'images' / 'training')
    assert check_ade20k(str(tmp_path)) == [
        f'{tmp_path}/annotations/training: folder missing',
        f'{tmp_path}/images/validation: folder missing',
        f'{tmp_path}/annotations/validation: folder missing']


def coco_tree(root, annotations, categories=({'id': 1}, {'id': 2}), images=None):
    os.makedirs(os.path.join(root, 'annotations'))
    images = images if images is not None else [dict(id=1, file_name='a.jpg', height=10,
                                                     width=20)]
    for split in ('train2017', 'val2017'):
        os.makedirs(os.path.join(root, split))
        cv2.imwrite(os.path.join(root, split, 'a.jpg'), np.zeros((10, 20, 3), np.uint8))
        with open(os.path.join(root, 'annotations', f'instances_{split}.json'), 'w') as f:
            json.dump(dict(images=images, annotations=annotations if split == 'train2017' else [],
                           categories=list(categories)), f)
    return root


def ann(i, **kw):
    base = dict(id=i, image_id=1, category_id=1, bbox=[1, 1, 5, 5],
                segmentation=[[1, 1, 6, 1, 6, 6]])
    base.update(kw)
    return base


def test_a_valid_coco_tree_passes(tmp_path, capsys):
    edge = ann(2, bbox=[0, 0, 21, 11], segmentation=[[-1, -1, 21, -1, 21, 11]])   # 1 px slack
    rle = ann(3, segmentation=dict(size=[10, 20], counts=[0, 200]))
    thin = ann(4, bbox=[2, 2, 1, 1], segmentation=[[1, 1, 2, 1, 2, 2, 1, 2]])  # 1 px, 4 points
    root = coco_tree(str(tmp_path), [ann(1), edge, rle, thin])
    assert check_coco(root) == [] and capsys.readouterr().out == ''
    assert check_coco(root, verbose=True) == []
    assert [line for line in capsys.readouterr().out.splitlines()
            if not line.startswith(('warning:', 'train2017: reading', 'val2017: reading'))] == [
        'train2017: 1 images, 4 annotations, 2 categories',
        'val2017: 1 images, 0 annotations, 2 categories']
    assert CHECKS == dict(ade20k=check_ade20k, coco=check_coco)


@pytest.mark.parametrize('bad,problem', [
    (dict(image_id=9), 'unknown image_id 9'),
    (dict(category_id=7), 'unknown category_id 7'),
    (dict(bbox=[0, 0, 0, 5]), 'bbox [0, 0, 0, 5] is empty (width or height <= 0)'),
    (dict(bbox=[0, 0, 5, 0]), 'bbox [0, 0, 5, 0] is empty (width or height <= 0)'),
    (dict(bbox=[-1, 0, 5, 5]), 'bbox [-1, 0, 5, 5] outside the image (20x10)'),
    (dict(bbox=[0, -1, 5, 5]), 'bbox [0, -1, 5, 5] outside the image (20x10)'),
    (dict(bbox=[0, 0, 22, 5]), 'bbox [0, 0, 22, 5] outside the image (20x10)'),
    (dict(bbox=[0, 0, 5]), 'bbox [0, 0, 5] is not 4 numbers [x, y, w, h]'),
    (dict(bbox=None), 'bbox None is not 4 numbers'),
    (dict(bbox=[0, 0, '5', 5]), "bbox [0, 0, '5', 5] is not 4 numbers"),
    (dict(bbox=[0, 0, 5, 12]), 'bbox [0, 0, 5, 12] outside the image (20x10)'),
    (dict(segmentation=[]), 'empty polygon list'),
    (dict(segmentation=[[1, 1, 2, 2]]), 'a polygon needs an even number (>= 6) of coordinates'),
    (dict(segmentation=[[1, 1, 2, 2, 3, 3, 4]]), 'a polygon needs an even number'),
    (dict(segmentation=[[1, 1, 2, 2, 3, 3], 5]), 'a polygon needs an even number'),
    (dict(segmentation=[[1, 1, 2, 2, 22, 3]]), 'polygon outside the image'),
    (dict(segmentation=[[1, 1, 2, 12, 3, 3]]), 'polygon outside the image'),
    (dict(segmentation=[[-2, 1, 2, 2, 3, 3]]), 'polygon outside the image'),
    (dict(segmentation=[[1, -2, 2, 2, 3, 3]]), 'polygon outside the image'),
    (dict(segmentation=dict(size=[20, 10], counts=[0, 200])),
     'RLE size [20, 10] differs from the image (10, 20)'),
    (dict(segmentation=dict(size=[10, 20], counts=[-5, 300])), 'invalid RLE (Python integer'),
    (dict(segmentation=dict(size=[10, 20], counts=12)), 'invalid RLE (Expected bytes'),
    (dict(segmentation='x'), 'segmentation is neither polygons nor RLE'),
    (dict(segmentation=dict(counts=[0, 200])), 'segmentation is neither polygons nor RLE'),
])
def test_each_bad_annotation_is_named(tmp_path, bad, problem):
    root = coco_tree(str(tmp_path), [ann(1), ann(5, **bad)])
    problems = check_coco(root)
    assert len(problems) == 1
    assert problems[0].startswith(
        f'{root}/annotations/instances_train2017.json: annotation 5: {problem}')


def test_every_bad_annotation_is_listed_and_a_missing_box_is_missing_not_empty(tmp_path):
    no_box = ann(7)
    del no_box['bbox']
    root = coco_tree(str(tmp_path), [ann(5, image_id=9), ann(6, category_id=8), no_box,
                                     ann(8, bbox=[1, 1, 0, 0])])
    where = f'{root}/annotations/instances_train2017.json: annotation'
    problems = check_coco(root)
    assert problems == [f'{where} 5: unknown image_id 9',
                        f'{where} 6: unknown category_id 8',
                        f"{where} 7: no 'bbox' key (mmdet needs one [x, y, w, h] per annotation)",
                        f'{where} 8: bbox [1, 1, 0, 0] is empty (width or height <= 0)']
    assert [p.kind for p in problems] == ['unknown image_id', 'unknown category_id', 'no bbox',
                                          'empty bbox']


def test_repeated_problems_are_capped_per_kind_in_order():
    problems = [Problem(f'f{i}: no bbox', 'no bbox') for i in range(7)]
    problems.insert(2, Problem('g: unknown image_id 3', 'unknown image_id'))
    assert cap_problems(problems, first=3) == [
        'f0: no bbox', 'f1: no bbox', 'f2: no bbox', '... and 4 more of this kind (no bbox)',
        'g: unknown image_id 3']
    assert cap_problems(problems, first=7) == problems[:2] + problems[3:] + problems[2:3]
    assert cap_problems(problems, first=0) == problems           # 0: no cap
    assert cap_problems(['a', 'b', 'a'], first=1) == ['a', '... and 1 more of this kind (a)',
                                                      'b']


@pytest.mark.parametrize('found,warned', [(20210, False), (20209, True), (64, True),
                                          (20211, True)])
def test_split_size_warning_names_split_expected_and_found(found, warned):
    warning = split_size_warning('ade20k', 'training', found)
    if not warned:
        assert warning is None
        return
    assert warning == (f'warning: ade20k training: {found:,} images, the full split has 20,210: '
                       'this is not the full dataset (a subset or generated stand-in data); '
                       'results on it are not comparable with published numbers')
    assert FULL_SPLIT_IMAGES == {'ade20k': {'training': 20210, 'validation': 2000},
                                 'coco': {'train2017': 118287, 'val2017': 5000}}
    assert split_size_warning('coco', 'val2017', 5000) is None
    assert 'coco val2017: 4,999 images, the full split has 5,000' in \
        split_size_warning('coco', 'val2017', 4999)


def test_verbose_check_prints_progress_every_n_images_then_counts_and_warning(tmp_path, capsys):
    labels = {f'x{i}': np.zeros((6, 8), np.uint8) for i in range(5)}
    root = ade_tree(str(tmp_path), labels)
    assert check_ade20k(root, verbose=True, every=2) == []
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(' (')[0] for line in lines[:2]] == [
        'training: 2/5 images checked', 'training: 4/5 images checked']
    assert all(re.fullmatch(r'training: \d/5 images checked \(\d+/s, about \d+ s left\)', line)
               for line in lines[:2])
    assert lines[2:] == [
        'training: 5 images, 5 annotations',
        'warning: ade20k training: 5 images, the full split has 20,210: this is not the full '
        'dataset (a subset or generated stand-in data); results on it are not comparable with '
        'published numbers',
        'validation: 0 images, 0 annotations',
        'warning: ade20k validation: 0 images, the full split has 2,000: this is not the full '
        'dataset (a subset or generated stand-in data); results on it are not comparable with '
        'published numbers']


def test_coco_progress_counts_listed_images(tmp_path, capsys):
    images = [dict(id=i, file_name='a.jpg', height=10, width=20) for i in range(1, 4)]
    root = coco_tree(str(tmp_path), [ann(1)], images=images)
    assert check_coco(root, verbose=True, every=1) == []
    out = capsys.readouterr().out
    assert [line.split(' (')[0] for line in out.splitlines() if 'checked' in line] == [
        'train2017: 1/3 images checked', 'train2017: 2/3 images checked',
        'val2017: 1/3 images checked', 'val2017: 2/3 images checked']
    assert 'warning: coco train2017: 3 images, the full split has 118,287' in out


def test_hidden_and_temporary_files_are_not_data(tmp_path):
    assert [n for n in ('a.jpg', '.a.jpg', '._a.jpg', 'a.jpg.tmp', 'a.jpg.partial', 'a.jpg~',
                        'tmp.jpg', 'partial.png') if is_data_file(n)] == [
        'a.jpg', 'tmp.jpg', 'partial.png']
    root = ade_tree(str(tmp_path), dict(a=np.zeros((6, 8), np.uint8)))
    img_dir = f'{root}/images/training'
    for name in ('._a.jpg', '.b.jpg', 'c.jpg~'):                 # macOS forks, editor backups
        open(f'{img_dir}/{name}', 'w').write('not an image')
    assert check_ade20k(root) == []


def test_coco_image_sizes_are_the_stored_ones(tmp_path):
    """A JPEG with an EXIF rotation is listed with its stored size (as COCO's tools read it),
    not the size after rotation."""
    from PIL import Image
    root = coco_tree(str(tmp_path), [ann(1)])
    exif = Image.Exif()
    exif[0x0112] = 6                                           # orientation: rotate 90 degrees
    for split in ('train2017', 'val2017'):
        Image.new('RGB', (20, 10)).save(f'{root}/{split}/a.jpg', exif=exif)
    assert check_coco(root) == []


def test_coco_files_images_and_categories(tmp_path):
    root = coco_tree(str(tmp_path / 'a'), [ann(1)], categories=({'id': 1}, {'id': 1}),
                     images=[dict(id=1, file_name='a.jpg', height=10, width=20),
                             dict(id=2, file_name='gone.jpg', height=10, width=20),
                             dict(id=3, file_name='a.jpg', height=11, width=20)])
    ann_file = f'{root}/annotations/instances_train2017.json'
    assert check_coco(root)[:4] == [
        f'{ann_file}: duplicate category ids',
        f'{root}/train2017/gone.jpg: image 2 listed in {ann_file} is missing',
        f'{root}/train2017/a.jpg: size (10, 20) differs from the listed (11, 20)',
        f'{root}/annotations/instances_val2017.json: duplicate category ids']
    with open(ann_file, 'w') as f:
        json.dump(dict(images=[]), f)
    open(f'{root}/val2017/a.jpg', 'w').write('broken')
    problems = check_coco(root)
    assert problems[0] == f"{ann_file}: missing keys ['annotations', 'categories']"
    assert f'{root}/val2017/a.jpg: unreadable image' in problems
    os.remove(ann_file)
    problems = check_coco(root)
    assert problems[0].startswith(f'{ann_file}: cannot read ([Errno 2]')
    assert f'{root}/val2017/a.jpg: unreadable image' in problems[1:]     # val still checked
    with open(ann_file, 'w') as f:
        f.write('{')
    assert check_coco(root)[0].startswith(f'{ann_file}: cannot read (Expecting')


def test_tool_caps_each_kind_and_passes_a_small_set_with_the_size_warning(tmp_path, capsys):
    tool = load_tool('check_dataset')
    root = coco_tree(str(tmp_path / 'ok'), [ann(1)])
    assert tool.main(['coco', root]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f'coco at {root}: 0 problem(s)'
    assert ('warning: coco val2017: 1 images, the full split has 5,000: this is not the full '
            'dataset (a subset or generated stand-in data); results on it are not comparable '
            'with published numbers') in out
    boxless = [{k: v for k, v in ann(i).items() if k != 'bbox'} for i in range(10, 17)]
    root = coco_tree(str(tmp_path / 'bad'), boxless + [ann(5, image_id=9)])
    assert tool.main(['coco', root, '--max-per-kind', '2']) == 1
    where = f'{root}/annotations/instances_train2017.json: annotation'
    out = [line for line in capsys.readouterr().out.splitlines()
           if not line.startswith(('warning:', 'train2017:', 'val2017:'))]
    no_box = "no 'bbox' key (mmdet needs one [x, y, w, h] per annotation)"
    assert out == [f'{where} 10: {no_box}', f'{where} 11: {no_box}',
                   '... and 5 more of this kind (no bbox)', f'{where} 5: unknown image_id 9',
                   f'coco at {root}: 8 problem(s)']
    with pytest.raises(MissingInputError, match=f'^{tmp_path}/none: dataset root not found$'):
        tool.main(['coco', str(tmp_path / 'none')])


def test_tool_refuses_progress_every_zero_images(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        load_tool('check_dataset').main(['coco', str(tmp_path), '--every', '0'])
    assert exit_.value.code == 2
    assert "--every: must be a positive integer, got '0'" in capsys.readouterr().err
