"""What ``tools/test.py`` adds to a config beyond the metrics, as mmseg's and mmdet's own
``tools/test.py`` do: test-time augmentation (``--tta``), the raw predictions (``--out``) and
drawn predictions (``--show-dir``).

The config decides which library's convention applies (:func:`task_of`): an mmseg config
dumps one label PNG per image into a folder (``IoUMetric``'s ``output_dir``), an mmdet config
a pickle of every image's predictions (``DumpDetResults``, masks as RLE). Unlike both libraries, an existing output is never overwritten.
"""
from __future__ import annotations

import os
import os.path as osp

from mmengine.config import Config, ConfigDict

from mixedae.utils.errors import InvalidInputError

#: the visualisation hook each task's configs use (``--show-dir``)
VIS_HOOKS = {'seg': 'SegVisualizationHook', 'det': 'DetVisualizationHook'}


def task_of(cfg: Config, path: str) -> str:
    """``'seg'`` for an mmseg config, ``'det'`` for an mmdet one, from ``default_scope``."""
    scope = cfg.get('default_scope')
    if scope in ('mmseg', 'mmdet'):
        return scope[2:]
    raise InvalidInputError(f'{path}: default_scope is {scope!r}; tools/test.py evaluates mmseg '
                            "(default_scope='mmseg') and mmdet (default_scope='mmdet') configs")


def use_tta(cfg: Config, path: str) -> None:
    """Wrap the model in the config's ``tta_model`` and test with its ``tta_pipeline``
    (mmseg's and mmdet's ``--tta``); refused when either is missing."""
    missing = [key for key in ('tta_model', 'tta_pipeline') if not cfg.get(key)]
    if missing:
        raise InvalidInputError(f'{path} defines no {" / ".join(missing)}, so --tta has nothing '
                                'to apply: test without --tta, or add them to the config (the '
                                'ADE20K configs have them; mmdet has no test-time augmentation '
                                'for Mask R-CNN)')
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline


def evaluators_of(cfg: Config) -> list:
    """The config's ``test_evaluator`` as a list (a config may give one or several)."""
    evaluators = cfg.test_evaluator
    return evaluators if isinstance(evaluators, list) else [evaluators]


def dump_predictions(cfg: Config, out: str, task: str) -> None:
    """Write the raw predictions to ``out``: for ``'seg'`` a folder of label PNGs named after
    the images (ADE20K's 1-150 labels when the dataset reduces the zero label), for ``'det'``
    a ``.pkl`` / ``.pickle`` file (a list of one dict per image). An existing file, or a
    folder that is not empty, is refused."""
    if task == 'seg':
        if osp.isfile(out) or (osp.isdir(out) and os.listdir(out)):
            raise InvalidInputError(f'--out {out}: already exists and is not an empty folder; '
                                    'the label maps are not written over it: remove it or give '
                                    'another folder')
        for evaluator in evaluators_of(cfg):
            evaluator['output_dir'] = out
        return
    if not out.endswith(('.pkl', '.pickle')):
        raise InvalidInputError(f'--out {out}: the predictions of a detection config are written '
                                'as a pickle; give a path ending in .pkl or .pickle')
    if osp.exists(out):
        raise InvalidInputError(f'--out {out}: already exists and is not written over: remove it '
                                'or give another path')
    cfg.test_evaluator = [*evaluators_of(cfg), dict(type='DumpDetResults', out_file_path=out)]


def show_predictions(cfg: Config, show_dir: str, path: str, task: str) -> None:
    """Draw every test image's prediction (beside its ground truth) as a PNG under
    ``show_dir``, through the config's visualisation hook."""
    hook = (cfg.get('default_hooks') or {}).get('visualization')
    if hook is None:
        raise InvalidInputError(f'{path}: --show-dir needs default_hooks.visualization (e.g. '
                                f"dict(type='{VIS_HOOKS[task]}'))")
    hook.update(draw=True, interval=1)   # every test image
    cfg.visualizer.save_dir = show_dir
