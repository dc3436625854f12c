"""Markdown tables of results: the displayed metric columns, the published reference rows and
the one table renderer every report of the suite uses."""
from __future__ import annotations

from typing import Dict, List, Sequence

#: displayed columns: (task, metrics-file key, column title, scale to percent)
COLUMNS = [
    ('ade20k', 'mIoU', 'ADE20K mIoU', 1.0),
    ('coco', 'coco/bbox_mAP', 'COCO box AP', 100.0),
    ('coco', 'coco/segm_mAP', 'COCO mask AP', 100.0),
]
#: a cell of a method/task pair that no run provides
NOT_IN_MATRIX = '–'

#: published ViT-B numbers (README, "Results"), shown as reference rows with where each is published;
#: each names the protocol its numbers come from (docs/protocols.md). Our COCO protocol A
#: (Mask R-CNN + FPN, 1x/3x multi-scale) matches none of the published COCO rows; protocol B is
#: mmdet's ViTDet.
ANCHORS = [
    dict(method='MAE 1600ep (MAE paper; COCO: Mask R-CNN, LSJ 100 ep of Li et al. 2021, '
                'neither protocol A nor B)',
         values={'ADE20K mIoU': '48.1', 'COCO box AP': '50.3', 'COCO mask AP': '44.9'},
         source='https://arxiv.org/abs/2111.06377'),
    dict(method='MAE (mmseg reproduction = our ADE20K protocol)',
         values={'ADE20K mIoU': '48.13'},
         source='https://github.com/open-mmlab/mmsegmentation/tree/main/configs/mae'),
    dict(method='MAE ViTDet 100ep (mmdet projects/ViTDet = our COCO protocol B)',
         values={'COCO box AP': '51.6', 'COCO mask AP': '45.7'},
         source='https://github.com/open-mmlab/mmdetection/tree/main/projects/ViTDet'),
    # iBOT's README (github.com/bytedance/ibot): ViT-B/16, COCO with Cascade Mask R-CNN, ADE20K
    # with UperNet; 51.2 box AP since 2021-12-13 (its first version, 2021-12-09, said 51.4).
    dict(method='iBOT (iBOT repo; COCO: Cascade Mask R-CNN 1x, not protocol A)',
         values={'ADE20K mIoU': '50.0', 'COCO box AP': '51.2', 'COCO mask AP': '44.2'},
         source='https://github.com/bytedance/ibot'),
    dict(method="MixedAE (abstract: vs the paper's own MAE run; its '+0.9 AP' on COCO does "
                "not say box or mask, so it is in no column)",
         values={'ADE20K mIoU': 'MAE + 1.7'},
         source='https://arxiv.org/abs/2303.17152'),
]

#: the heading row between our rows and the published ones.
ANCHOR_HEADING = '**published, full scale (ViT-B/16), for reference:**'


def markdown_table(rows: Sequence[Dict[str, str]], header: Sequence[str]) -> str:
    """A markdown table of ``rows`` in the order of ``header``; absent cells show '–'."""
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    lines += ['| ' + ' | '.join(str(r.get(h, NOT_IN_MATRIX)) for h in header) + ' |'
              for r in rows]
    return '\n'.join(lines)


def published_rows() -> List[Dict[str, str]]:
    """The published full-scale rows (:data:`ANCHORS`) as table rows, method names in italics."""
    return [dict(method=f'*{a["method"]}*', **a['values']) for a in ANCHORS]


def published_sources() -> str:
    """One line naming where each published row comes from, with links."""
    return 'Sources of the reference rows: ' + ', '.join(
        f'[{a["method"]}]({a["source"]})' for a in ANCHORS) + '.'
