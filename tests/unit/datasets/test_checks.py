"""Dataset layout checks: the label range (boundary classes included), ADE20K pairing and sizes,
COCO annotation files; each problem names its file."""
import json
import os

import cv2
import numpy as np
import pytest

from mixedae.datasets.checks import (ADE_MAX_LABEL, CHECKS, bad_label_values, check_ade20k,
                                     check_coco)
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
    assert capsys.readouterr().out == ('training: 6 images, 6 annotations\n'
                                       'validation: 0 images, 0 annotations\n')


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
    assert capsys.readouterr().out == ('train2017: 1 images, 4 annotations, 2 categories\n'
                                       'val2017: 1 images, 0 annotations, 2 categories\n')
    assert CHECKS == dict(ade20k=check_ade20k, coco=check_coco)


@pytest.mark.parametrize('bad,problem', [
    (dict(image_id=9), 'unknown image_id 9'),
    (dict(category_id=7), 'unknown category_id 7'),
    (dict(bbox=[0, 0, 0, 5]), 'bbox [0, 0, 0, 5] empty or outside the image'),
    (dict(bbox=[0, 0, 5, 0]), 'bbox [0, 0, 5, 0] empty or outside the image'),
    (dict(bbox=[-1, 0, 5, 5]), 'bbox [-1, 0, 5, 5] empty or outside the image'),
    (dict(bbox=[0, -1, 5, 5]), 'bbox [0, -1, 5, 5] empty or outside the image'),
    (dict(bbox=[0, 0, 22, 5]), 'bbox [0, 0, 22, 5] empty or outside the image'),
    (dict(bbox=[0, 0, 5, 12]), 'bbox [0, 0, 5, 12] empty or outside the image'),
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


def test_every_bad_annotation_is_listed_and_a_missing_box_is_empty(tmp_path):
    no_box = ann(7)
    del no_box['bbox']
    root = coco_tree(str(tmp_path), [ann(5, image_id=9), ann(6, category_id=8), no_box])
    where = f'{root}/annotations/instances_train2017.json: annotation'
    assert check_coco(root) == [f'{where} 5: unknown image_id 9',
                                f'{where} 6: unknown category_id 8',
                                f'{where} 7: bbox [0, 0, 0, 0] empty or outside the image']


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


def test_check_dataset_tool_refuses_a_missing_root(tmp_path):
    with pytest.raises(MissingInputError, match=f'{tmp_path}/none: dataset root not found'):
        load_tool('check_dataset').main(['ade20k', str(tmp_path / 'none')])
