"""CheckSegAnnotation (label range and size, boundary classes included) and NamedSampleErrors."""
import re

import numpy as np
import pytest

from mixedae.datasets.validation import CheckSegAnnotation, DataError, NamedSampleErrors


def results(label, shape=(4, 6), reduce_zero_label=False):
    return dict(gt_seg_map=label, seg_map_path='ann/x.png', img_path='img/x.jpg',
                ori_shape=shape, reduce_zero_label=reduce_zero_label)


def test_every_class_and_the_ignore_index_pass_unchanged():
    label = np.array([[0, 1, 2, 3, 9, 9]] * 4, np.uint8)        # 0 and the last class 3
    out = CheckSegAnnotation(num_classes=4, ignore_index=9)(results(label, shape=(4, 6, 3)))
    assert out['gt_seg_map'] is label


@pytest.mark.parametrize('value,reduce_zero_label,message', [
    (4, False, 'ann/x.png: label values [4] are neither classes 0-3 nor the ignore index 255'),
    (4, True, 'ann/x.png: label values [4] are neither classes 0-3 nor the ignore index 255 '
              '(values in the file: [5]; reduce_zero_label)'),
    (254, True, 'label values [254] are neither'),
])
def test_the_first_value_past_the_classes_is_refused(value, reduce_zero_label, message):
    label = np.full((4, 6), 255, np.uint8)
    label[0, 0] = value
    with pytest.raises(DataError, match=re.escape(message)):
        CheckSegAnnotation(num_classes=4)(results(label, reduce_zero_label=reduce_zero_label))


def test_every_bad_value_is_named_once_in_order():
    label = np.full((4, 6), 255, np.uint8)
    label[0, :4] = [9, 4, 9, 0]
    with pytest.raises(DataError, match=re.escape('label values [4, 9] are neither')):
        CheckSegAnnotation(num_classes=4)(results(label))


def test_a_label_map_with_a_channel_axis_is_compared_by_height_and_width():
    label = np.zeros((4, 6, 1), np.uint8)
    assert CheckSegAnnotation(num_classes=4)(results(label))['gt_seg_map'] is label
    with pytest.raises(DataError, match=re.escape('annotation size (4, 5) (h, w) differs')):
        CheckSegAnnotation(num_classes=4)(results(np.zeros((4, 5, 1), np.uint8)))


def test_a_label_map_of_another_size_names_both_files():
    with pytest.raises(DataError, match=re.escape(
            'ann/x.png: annotation size (4, 5) (h, w) differs from its image img/x.jpg of '
            'size (4, 6)')):
        CheckSegAnnotation(num_classes=4)(results(np.zeros((4, 5), np.uint8)))


@pytest.mark.parametrize('num_classes', [0, -1, 2.0, '3'])
def test_num_classes_must_be_a_positive_int(num_classes):
    with pytest.raises(ValueError, match=re.escape(
            f'CheckSegAnnotation: num_classes must be a positive int, got {num_classes!r}')):
        CheckSegAnnotation(num_classes=num_classes)


def test_repr_and_defaults():
    assert repr(CheckSegAnnotation(1)) == 'CheckSegAnnotation(num_classes=1, ignore_index=255)'
    assert repr(CheckSegAnnotation(5, 0)) == 'CheckSegAnnotation(num_classes=5, ignore_index=0)'


class Samples:
    def __init__(self, error):
        self.error = error

    def prepare_data(self, idx):
        if self.error:
            raise self.error
        return dict(idx=idx)

    def get_data_info(self, idx):
        return dict(img_path=f'img/{idx}.jpg', seg_map_path=f'ann/{idx}.png', label_path='',
                    height=3)


class Named(NamedSampleErrors, Samples):
    pass


def test_a_failing_sample_is_reraised_with_its_paths():
    assert Named(None).prepare_data(3) == dict(idx=3)
    with pytest.raises(DataError) as err:
        Named(KeyError('x')).prepare_data(3)
    assert str(err.value) == ("sample 3 (img_path=img/3.jpg, seg_map_path=ann/3.png): "
                              "KeyError: 'x'")
    assert isinstance(err.value.__cause__, KeyError)


def test_a_data_error_passes_through_as_it_is():
    error = DataError('ann/3.png: bad')
    with pytest.raises(DataError) as err:
        Named(error).prepare_data(3)
    assert err.value is error
