"""Data errors that name their files: the label-map check and the dataset mixin.

``CheckSegAnnotation`` validates each label map where it is read; :class:`NamedSampleErrors`
re-raises any exception while loading sample ``i`` as a :class:`DataError` with the sample's
file paths. ``mixedae.datasets.ade20k`` and ``mixedae.datasets.coco`` apply the mixin to
mmseg's and mmdet's datasets (kept in their own modules so that importing mixedae does not
import mmseg and mmdet; the transfer configs import them through ``custom_imports``).
"""
from __future__ import annotations

from mmcv.transforms import BaseTransform

from mixedae.registry import TRANSFORMS
from mixedae.utils.errors import UserInputError

from .checks import bad_label_values


class DataError(UserInputError, RuntimeError):
    """A sample or annotation file is unusable; the message names the file(s)."""


@TRANSFORMS.register_module()
class CheckSegAnnotation(BaseTransform):
    """Reject a label map that does not fit its image or holds values outside the classes.

    Put it right after ``LoadAnnotations``. The label map must have the size the image had
    when read (``ori_shape``, so it also works after a ``Resize`` of the image), and every
    value must be a class in ``[0, num_classes)`` or ``ignore_index`` (after mmseg's
    ``reduce_zero_label``, ADE20K's "other" = 0 becomes 255). Cost: one ``np.unique``.

    Raises:
        DataError: naming the annotation (and image) file, the sizes or the bad values.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f'CheckSegAnnotation: num_classes must be a positive int, got '
                             f'{num_classes!r}')
        self.num_classes, self.ignore_index = num_classes, ignore_index

    def transform(self, results: dict) -> dict:
        label, path = results['gt_seg_map'], results['seg_map_path']
        image_hw = tuple(results['ori_shape'][:2])
        if label.shape[:2] != image_hw:
            raise DataError(f'{path}: annotation size {label.shape[:2]} (h, w) differs from '
                            f'its image {results["img_path"]} of size {image_hw}')
        bad = bad_label_values(label, self.num_classes, (self.ignore_index,))
        if bad:
            message = (f'{path}: label values {bad} are neither classes 0-{self.num_classes - 1} '
                       f'nor the ignore index {self.ignore_index}')
            if results.get('reduce_zero_label'):
                message += f' (values in the file: {[v + 1 for v in bad]}; reduce_zero_label)'
            raise DataError(message)
        return results

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(num_classes={self.num_classes}, '
                f'ignore_index={self.ignore_index})')


class NamedSampleErrors:
    """Mixin for an MMEngine dataset: a failing sample is re-raised with its file paths."""

    def prepare_data(self, idx: int):
        try:
            return super().prepare_data(idx)
        except DataError:
            raise                      # already names its file
        except Exception as err:
            info = self.get_data_info(idx)
            paths = ', '.join(f'{k}={v}' for k, v in info.items()
                              if k.endswith('_path') and v)
            raise DataError(f'sample {idx} ({paths}): {type(err).__name__}: {err}') from err
