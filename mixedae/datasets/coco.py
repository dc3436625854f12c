"""``mixedae.CocoDataset``: mmdet's COCO dataset whose errors name the file at fault."""
from __future__ import annotations

import json
from typing import List

from mmdet.datasets import CocoDataset as _CocoDataset

from mixedae.registry import DATASETS

from .validation import DataError, NamedSampleErrors


#: the top-level sections of a COCO annotation file
COCO_SECTIONS = ('images', 'annotations', 'categories')


@DATASETS.register_module()
class CocoDataset(NamedSampleErrors, _CocoDataset):
    """mmdet's ``CocoDataset`` with the annotation file named in its errors.

    Invalid JSON, a file without one of :data:`COCO_SECTIONS` and annotations whose
    ``category_id`` is not one of the dataset's categories
    (mmdet: a bare ``KeyError``) raise :class:`DataError` naming ``ann_file``; a failing sample
    is re-raised naming its image.
    """

    def load_data_list(self) -> List[dict]:
        try:
            return super().load_data_list()
        except json.JSONDecodeError as err:
            raise DataError(f'{self.ann_file}: not valid JSON ({err})') from err
        except KeyError as err:   # pycocotools and mmdet index the file's sections by name
            with open(self.ann_file) as f:
                sections = json.load(f)
            missing = [k for k in COCO_SECTIONS if k not in sections]
            if not missing:
                raise
            raise DataError(f'{self.ann_file}: no {", ".join(missing)} section (a COCO '
                            f'annotation file has {", ".join(COCO_SECTIONS)})') from err

    def parse_data_info(self, raw_data_info: dict) -> dict:
        for ann in raw_data_info['raw_ann_info']:
            if ann.get('category_id') not in self.cat2label:
                raise DataError(
                    f'{self.ann_file}: annotation {ann.get("id")} of image '
                    f'{raw_data_info["raw_img_info"].get("file_name")} has category_id '
                    f'{ann.get("category_id")}, not one of the dataset\'s categories '
                    f'{sorted(self.cat2label)}')
        return super().parse_data_info(raw_data_info)
