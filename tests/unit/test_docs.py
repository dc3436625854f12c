"""The documentation names what exists: every ``configs/...`` and ``tools/...`` path and
``make`` target in README.md and docs/*.md, and every checkpoint layout that
tools/convert_checkpoint.py accepts."""
import ast
import glob
import itertools
import os
import re
from typing import List

from support import ROOT
from mixedae.models.backbones.checkpoint_layouts import FORMATS

DOCS = ['README.md', *sorted(os.path.relpath(p, ROOT) for p in glob.glob(f'{ROOT}/docs/*.md'))]
#: paths in mmseg's and mmdet's repositories that the docs cite as references
UPSTREAM = {'configs/mae', 'configs/mae/mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py',
            'configs/mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py'}
#: shell variables the docs' command lines range over, with their values
VARIABLES = {'${METHOD}': '{mixedae,mae,ibot,scratch}', '${SCHED}': '{1x,3x}'}
PATH = re.compile(r'(?<![\w/.-])((?:configs|tools)/[\w./{},*$-]*[\w}*])')


def expand(path: str) -> List[str]:
    """Glob patterns a path written in the docs stands for: shell variables replaced by their
    values, ``{a,b}`` expanded (a ``...`` alternative dropped), a name cut at ``_`` (a prefix,
    as in ``upernet_vit-b16-scratch_...``) completed with ``*``."""
    for name, values in VARIABLES.items():
        path = path.replace(name, values)
    parts = re.split(r'\{([^}]*)\}', path)
    options = [[p] if i % 2 == 0 else [a for a in p.split(',') if a != '...']
               for i, p in enumerate(parts)]
    return [''.join(c) + ('*' if path.endswith('_') else '') for c in itertools.product(*options)]


def test_expand():
    assert expand('configs/a-{x,y}_{1,...}.py') == ['configs/a-x_1.py', 'configs/a-y_1.py']
    assert expand('configs/c/m-${SCHED}_') == ['configs/c/m-1x_*', 'configs/c/m-3x_*']


def test_every_config_and_tool_path_in_the_docs_exists():
    missing = []
    for doc in DOCS:
        for path in PATH.findall(open(os.path.join(ROOT, doc)).read()):
            if path in UPSTREAM:
                continue
            missing += [f'{doc}: {path} ({p})' for p in expand(path)
                        if not glob.glob(os.path.join(ROOT, p))]
    assert not missing, '\n'.join(missing)


def test_conversion_table_lists_exactly_the_formats():
    text = open(os.path.join(ROOT, 'docs/checkpoints.md')).read()
    assert re.findall(r'^\| `(\w+)` \|', text, re.M) == list(FORMATS)
    usage = '--src-format {' + ','.join(FORMATS) + '}'
    assert usage in text
    assert usage in open(os.path.join(ROOT, 'tools/convert_checkpoint.py')).read()


def test_tool_help_states_no_duration_that_can_go_stale():
    """Measured times live in the docs, dated; a tool's --help (its docstring) names none."""
    stale = []
    for path in sorted(glob.glob(os.path.join(ROOT, 'tools', '*.py'))):
        doc = ast.get_docstring(ast.parse(open(path).read())) or ''
        stale += [f'{os.path.basename(path)}: {m.group(0)}'
                  for m in re.finditer(r'\d+ ?(minutes?|hours?|min)\b', doc)]
    assert not stale, stale


def test_every_make_target_in_the_docs_exists():
    targets = set(re.findall(r'^([\w-]+):', open(os.path.join(ROOT, 'Makefile')).read(), re.M))
    named = {t for doc in DOCS
             for t in re.findall(r'`make ([\w-]+)', open(os.path.join(ROOT, doc)).read())}
    assert named and named <= targets, named - targets
