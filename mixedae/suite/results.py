"""Transfer results of a run matrix: the matrix file, metric collection and the command lines.

A matrix (JSON) lists the runs of the comparison and, optionally, an ablation sweep:

    {"gpus": 8, "train_args": "--amp", "scale": "ViT-B/16, full schedule",
     "runs": [{"method": "mixedae", "task": "ade20k", "config": "configs/ade20k/....py",
               "checkpoint": "pretrain/mixedae_vit-b16_backbone.pth",
               "work_dir": "work_dirs/ade20k_mixedae",
               "metrics": "work_dirs/metrics/ade_mixedae.json",
               "train_args": "--auto-scale-lr", "test_args": "", "scale": "...", "seed": 0}],
     "reference": "mae",
     "ablations": [{"name": "lam0.05", "task": "ade20k", "metrics": "work_dirs/metrics/abl_lam0.05.json"}]}

``task`` is ``ade20k`` (mIoU) or ``coco`` (box AP and mask AP). ``train_args`` / ``test_args``
(optional strings) are added to the ``dist_train.sh`` / ``dist_test.sh`` lines, the top-level
ones before each run's own. ``scale`` (optional, top level or per run) describes the size of a
run (model, data, schedule); it is shown next to the method so that a small run is never read as
a full-scale one. A run whose metrics file does not exist is reported as missing, never as zero;
a method/task pair absent from the matrix is shown as "–".

``recipe`` (optional, per run) overrides the default fine-tuning recipe for that run, e.g. the
learning rate that a method's own paper fine-tuned with:

    "recipe": {"name": "lr 8e-5", "cfg_options": {"optim_wrapper.optimizer.lr": 8e-05}}

Its ``cfg_options`` join the run's ``--cfg-options`` (training and test) and its ``name`` is
shown in the method's label, ``ibot-official (lr 8e-5)``: runs of a method with and without an
override are separate rows, never averaged together.

``pretrain`` (optional) lists pretraining runs whose converted encoder a transfer run loads:

    "pretrain": [{"name": "mixedae", "config": "configs/pretrain/....py",
                  "work_dir": "work_dirs/mixedae_pretrain", "src_format": "mixedae",
                  "checkpoint": "pretrain/mixedae_vit-b16_backbone.pth", "nodes": 2,
                  "train_args": "--amp", "seed": 0}]

Each is trained (on ``nodes`` machines under Slurm, default 1; on this machine's ``gpus`` by
``results.py run``; ``seed``, optional, sets ``randomness.seed``), then its last checkpoint
is converted (``tools/convert_checkpoint.py --src-format``) to ``checkpoint``. A transfer run
whose ``checkpoint`` is that file waits for it (``results.py submit``: ``--dependency=afterok``
on the pretraining job). A pretraining entry is done when its ``checkpoint`` exists.
``gpus_per_node`` (optional, top level; default ``min(gpus, 8)``) splits ``gpus`` over Slurm
nodes.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
from typing import Dict, List, Optional, Sequence, Tuple

from mmengine.config import Config, DictAction

from mixedae.apis.config import load_config
from mixedae.apis.inputs import missing_inputs
from mixedae.models.backbones.checkpoint_layouts import FORMATS
from mixedae.models.backbones.loading import backbone_checkpoint_options
from mixedae.utils.io import atomic_write
from mixedae.utils.errors import InvalidInputError, MissingInputError
from .stats import compare, family_real, format_comparison, format_spread
from .tables import ANCHOR_HEADING, COLUMNS, NOT_IN_MATRIX, markdown_table, published_rows, \
    published_sources

#: the cell of a run whose metrics file does not exist (never shown as zero)
MISSING = 'missing'
#: the optional string fields of a run that a top-level field of the same name provides.
RUN_OPTIONS = ('train_args', 'test_args', 'scale')


def check_entry(entry: dict, where: str, required: Sequence[str], key: str,
                allowed: List[str]) -> None:
    """``entry`` has every ``required`` field and its ``key`` is one of ``allowed``."""
    missing = set(required) - set(entry)
    if missing:
        raise InvalidInputError(f'{where} lacks {sorted(missing)}')
    if entry[key] not in allowed:
        raise InvalidInputError(f'{where}.{key} {entry[key]!r} not in {allowed}')


def load_matrix(path: str) -> dict:
    """Read and validate a matrix file; errors name the file and the entry at fault."""
    if not os.path.isfile(path):
        raise MissingInputError(f'matrix file not found: {path}')
    with open(path) as f:
        try:
            matrix = json.load(f)
        except json.JSONDecodeError as err:
            raise InvalidInputError(f'{path}: not valid JSON ({err})') from err
    tasks = {t for t, *_ in COLUMNS}
    for i, run in enumerate(matrix.get('runs', [])):
        check_entry(run, f'{path}: runs[{i}]', ('method', 'task', 'config', 'work_dir', 'metrics'),
                    'task', sorted(tasks))
    for name in RUN_OPTIONS:
        for where, entry in [(name, matrix)] + [(f'runs[{i}].{name}', run)
                                                for i, run in enumerate(matrix.get('runs', []))]:
            if not isinstance(entry.get(name, ''), str):
                raise InvalidInputError(f'{path}: {where} must be a string, got {entry[name]!r}')
    seen: Dict[tuple, int] = {}
    for i, run in enumerate(matrix.get('runs', [])):
        _check_seed(run, f'{path}: runs[{i}]')
        _check_recipe(run, f'{path}: runs[{i}]')
        key = (method_label(run), run['task'], run.get('seed'))
        if key in seen:
            raise InvalidInputError(f'{path}: runs[{seen[key]}] and runs[{i}] are both '
                                    f'{key[0]}/{key[1]} with seed {key[2]}: give each run its '
                                    'own "seed"')
        seen[key] = i
    methods = {method_label(run) for run in matrix.get('runs', [])}
    if 'reference' in matrix and matrix['reference'] not in methods:
        raise InvalidInputError(f'{path}: reference {matrix["reference"]!r} is not a method '
                                'of its runs '
                                f'({sorted(methods)})')
    for run in matrix.get('runs', []):
        run['train_args'] = ' '.join(filter(None, [matrix.get('train_args'),
                                                   run.get('train_args')]))
        run['test_args'] = ' '.join(filter(None, [matrix.get('test_args'), run.get('test_args')]))
        run.setdefault('scale', matrix.get('scale', ''))
    _check_pretrain(path, matrix)
    for i, abl in enumerate(matrix.get('ablations', [])):
        if {'name', 'task', 'metrics'} - set(abl) or abl['task'] not in tasks:
            raise InvalidInputError(f'{path}: ablations[{i}] needs name, task in {sorted(tasks)} '
                                    'and metrics')
    return matrix


def _check_seed(entry: dict, where: str) -> None:
    """``entry['seed']``, where given, is an integer."""
    seed = entry.get('seed')
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise InvalidInputError(f'{where}.seed must be an integer, got {seed!r}')


def _check_recipe(run: dict, where: str) -> None:
    """``run['recipe']``, where given, is ``{"name": non-empty text, "cfg_options": non-empty
    {config key: value}}``."""
    if 'recipe' not in run:
        return
    recipe = run['recipe']
    example = '{"name": "lr 8e-5", "cfg_options": {"optim_wrapper.optimizer.lr": 8e-05}}'
    if not isinstance(recipe, dict) or set(recipe) != {'name', 'cfg_options'}:
        raise InvalidInputError(f'{where}.recipe must be {{"name", "cfg_options"}} and nothing '
                                f'else, e.g. {example}; got {recipe!r}')
    if not isinstance(recipe['name'], str) or not recipe['name'].strip():
        raise InvalidInputError(f'{where}.recipe.name must be a non-empty string (shown in the '
                                f'method label), got {recipe["name"]!r}')
    options = recipe['cfg_options']
    if not isinstance(options, dict) or not options or not all(
            isinstance(k, str) and k and ' ' not in k for k in options):
        raise InvalidInputError(f'{where}.recipe.cfg_options must be a non-empty object of '
                                f'config keys (e.g. "optim_wrapper.optimizer.lr") to values, '
                                f'got {options!r}')


def method_label(run: dict) -> str:
    """The method as its row names it: ``method``, or ``method (recipe name)`` for a run with
    a recipe override."""
    return f'{run["method"]} ({run["recipe"]["name"]})' if 'recipe' in run else run['method']


def recipe_options(run: dict) -> Dict[str, str]:
    """The ``--cfg-options`` entries of a run's recipe override ({} without one)."""
    return {k: str(v) for k, v in run.get('recipe', {}).get('cfg_options', {}).items()}


def _check_pretrain(path: str, matrix: dict) -> None:
    """Validate ``matrix['pretrain']`` and the ``gpus`` / ``gpus_per_node`` fields; fill in
    ``nodes`` (default 1) and ``train_args`` (the top-level one first) of each entry."""
    for key in ('gpus', 'gpus_per_node'):
        value = matrix.get(key, 1)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidInputError(f'{path}: {key} must be a positive integer, got {value!r}')
    if matrix.get('gpus', 8) % gpus_per_node(matrix):
        raise InvalidInputError(f'{path}: gpus {matrix["gpus"]} is not a multiple of gpus_per_node '
                                f'{gpus_per_node(matrix)}: set gpus_per_node to a divisor of gpus')
    entries = matrix.setdefault('pretrain', [])
    if not isinstance(entries, list):
        raise InvalidInputError(f'{path}: pretrain must be a list of entries, got {entries!r}')
    seen: Dict[str, str] = {}
    for i, entry in enumerate(entries):
        where = f'{path}: pretrain[{i}]'
        check_entry(entry, where, ('name', 'config', 'work_dir', 'checkpoint', 'src_format'),
                    'src_format', list(FORMATS))
        _check_seed(entry, where)
        nodes = entry.setdefault('nodes', 1)
        if not isinstance(nodes, int) or isinstance(nodes, bool) or nodes < 1:
            raise InvalidInputError(f'{where}.nodes must be a positive integer, got {nodes!r}')
        if not isinstance(entry.get('train_args', ''), str):
            raise InvalidInputError(f'{where}.train_args must be a string, got '
                                    f'{entry["train_args"]!r}')
        for key in ('name', 'checkpoint', 'work_dir'):
            if f'{key}={entry[key]}' in seen:
                raise InvalidInputError(f'{where}.{key} {entry[key]!r} is also that of '
                                        f'{seen[f"{key}={entry[key]}"]}: each entry needs its own')
            seen[f'{key}={entry[key]}'] = f'pretrain[{i}]'
        entry['train_args'] = ' '.join(filter(None, [matrix.get('train_args'),
                                                     entry.get('train_args')]))


def gpus_per_node(matrix: dict) -> int:
    """GPUs (= Slurm tasks) per node: ``gpus_per_node``, default ``min(gpus, 8)``."""
    return matrix.get('gpus_per_node', min(matrix.get('gpus', 8), 8))


def run_name(entry: dict) -> str:
    """``method/task`` of a transfer run, ``pretrain/<name>`` of a pretraining entry."""
    return f'pretrain/{entry["name"]}' if 'name' in entry else f'{entry["method"]}/{entry["task"]}'


def pretraining_of(matrix: dict) -> Dict[str, dict]:
    """checkpoint path -> the pretraining entry that writes it."""
    return {entry['checkpoint']: entry for entry in matrix.get('pretrain', [])}


def metric_text(run: dict) -> str:
    """The displayed metrics of a finished run, e.g. ``ADE20K mIoU 31.25`` ('' if none)."""
    metrics = read_metrics(run['metrics'])
    return ', '.join(f'{title} {_cell(metrics, key, scale)}'
                     for task, key, title, scale in COLUMNS if task == run['task'])


def _cfg_options(args: str) -> Dict[str, object]:
    """The ``--cfg-options`` of a ``train_args`` / ``test_args`` string, parsed as the tools do."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, default={})
    return parser.parse_known_args(shlex.split(args))[0].cfg_options


def unknown_keys(cfg: Config, options: Dict[str, str]) -> List[str]:
    """The dotted keys of ``options`` that ``cfg`` does not have (a recipe override changes
    a value of the recipe; it never adds a key)."""
    unknown = []
    for key in options:
        node = cfg
        for part in key.split('.'):
            if isinstance(node, (list, tuple)) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif hasattr(node, 'keys') and part in node:
                node = node[part]
            else:
                unknown.append(key)
                break
    return unknown


def input_problems(matrix: dict) -> List[str]:
    """Every missing config, backbone checkpoint and data folder or file of every entry of the
    matrix, one line each naming the entry and the fix. A checkpoint that a ``pretrain`` entry
    writes is not required to exist yet."""
    produced = pretraining_of(matrix)
    problems = []
    for entry in [*matrix.get('pretrain', []), *matrix.get('runs', [])]:
        name = run_name(entry)
        if not os.path.isfile(entry['config']):
            problems.append(f'{name}: config file not found: {entry["config"]} (fix the '
                            '"config" path in the matrix)')
            continue
        ckpt = entry.get('checkpoint') if 'name' not in entry else None
        if ckpt and ckpt not in produced and not os.path.isfile(ckpt):
            problems.append(f'{name}: checkpoint not found: {ckpt} (convert the encoder with '
                            'tools/convert_checkpoint.py, or add a "pretrain" entry that '
                            'writes it)')
        options = _cfg_options(entry.get('train_args', ''))
        unknown = unknown_keys(Config.fromfile(entry['config']), recipe_options(entry))
        if unknown:
            problems.append(f'{name}: recipe "{entry["recipe"]["name"]}" sets {unknown}, not '
                            f'keys of {entry["config"]} (fix recipe.cfg_options in the matrix)')
            continue
        options.update(recipe_options(entry))
        if ckpt:
            options.update(backbone_checkpoint_options(ckpt))
        cfg = load_config(entry['config'], options, 'none', entry['work_dir'])
        seen = set()    # a path the train and val loaders share is one problem
        for line in missing_inputs(cfg, 'train'):
            path = line.split(' not found: ', 1)[-1]
            if path not in seen and path not in {repr(p) for p in [*produced, ckpt] if p}:
                seen.add(path)
                problems.append(f'{name}: {line} (fix the path in the config or with '
                                '--cfg-options in the matrix\'s "train_args")')
    return problems


def read_metrics(path: str) -> Optional[Dict[str, float]]:
    """The metrics JSON written by ``tools/test.py --out-metrics``, or None if absent."""
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def _cell(metrics: Optional[dict], key: str, scale: float) -> str:
    if metrics is None or key not in metrics:
        return MISSING
    return f'{float(metrics[key]) * scale:.2f}'


def _methods(runs: Sequence[dict]) -> List[str]:
    """The method labels of the runs (:func:`method_label`), in their first order."""
    return list(dict.fromkeys(method_label(r) for r in runs))


def seed_values(runs: Sequence[dict]) -> Dict[str, Dict[str, Tuple[List[float], int]]]:
    """method -> column title -> (values of the runs whose metrics exist, number of runs)."""
    out: Dict[str, Dict[str, Tuple[List[float], int]]] = {}
    for method in _methods(runs):
        out[method] = {}
        for task, key, title, scale in COLUMNS:
            found = [read_metrics(r['metrics']) for r in runs
                     if method_label(r) == method and r['task'] == task]
            out[method][title] = ([float(m[key]) * scale for m in found
                                   if m is not None and key in m], len(found))
    return out


def _spread_cell(values: List[float], runs: int) -> str:
    if runs == 0:
        return NOT_IN_MATRIX
    if not values:
        return MISSING
    text = format_spread(values)
    return text if len(values) == runs else f'{text} [{runs - len(values)} of {runs} missing]'


def collect(runs: Sequence[dict]) -> List[Dict[str, str]]:
    """One row per method: {'method': ..., column title: value, 'missing' or '–'}; several
    runs of a method and task (seeds) give mean ± std (values), one run its value.

    The method is labelled with its recipe override and the scale of its runs, e.g.
    ``mixedae (tiny ViT, 64 px)``, ``ibot-official (lr 8e-5; ViT-B/16)``.
    """
    values = seed_values(runs)
    rows = []
    for method in _methods(runs):
        group = [r for r in runs if method_label(r) == method]
        notes = list(dict.fromkeys([*(r['recipe']['name'] for r in group[:1] if 'recipe' in r),
                                    *(r['scale'] for r in group if r.get('scale'))]))
        name = group[0]['method']
        row = {'method': f'{name} ({"; ".join(notes)})' if notes else name}
        row.update({title: _spread_cell(*values[method][title]) for _, _, title, _ in COLUMNS})
        rows.append(row)
    return rows


#: how the differences table is read (printed under it)
REFERENCE_RULE = ('Mean of the method minus mean of the reference over their seeds, with the '
                  '95 % Welch t interval (the runs are treated as unpaired); **bold**: real under '
                  'Holm\'s rule at 5 % over every interval of this table. No interval where a '
                  'method has one run or no spread.')


def compare_to_reference(runs: Sequence[dict], reference: str) -> List[Dict[str, str]]:
    """One row per other method: per column, its mean minus ``reference``'s with the 95 %
    Welch interval over seeds (the two methods' runs are treated as unpaired), bold where
    Holm's rule over every comparison of the table calls it real."""
    values = seed_values(runs)
    comparisons = {(m, title): compare(values[m][title][0], values[reference][title][0])
                   for m in _methods(runs) if m != reference for _, _, title, _ in COLUMNS
                   if values[m][title][0] and values[reference][title][0]}
    real = family_real(comparisons)
    return [{'method': f'{m} − {reference}',
             **{title: format_comparison(comparisons[(m, title)], (m, title) in real)
                for _, _, title, _ in COLUMNS if (m, title) in comparisons}}
            for m in _methods(runs) if m != reference]


def collect_ablations(ablations: Sequence[dict]) -> List[Dict[str, str]]:
    rows = []
    for abl in ablations:
        metrics = read_metrics(abl['metrics'])
        row = {'ablation': abl['name']}
        for task, key, title, scale in COLUMNS:
            if task == abl['task']:
                row[title] = _cell(metrics, key, scale)
        rows.append(row)
    return rows


def results_markdown(rows: Sequence[Dict[str, str]], with_anchors: bool = True) -> str:
    """Our rows, then, under a heading row, the published full-scale reference rows."""
    header = ['method'] + [title for _, _, title, _ in COLUMNS]
    if not with_anchors:
        return markdown_table(rows, header)
    heading = {'method': ANCHOR_HEADING, **{t: '' for t in header[1:]}}
    return (markdown_table([*rows, heading, *published_rows()], header)
            + '\n\n' + published_sources())


def write_csv(rows: Sequence[Dict[str, str]], path: str) -> None:
    header = list(rows[0]) if rows else ['method']
    with atomic_write(path, newline='') as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)


def _merged_args(args: str, options: Dict[str, str]) -> str:
    """``args`` with ``options`` added to its ``--cfg-options`` (one option list: the tools
    keep only the last ``--cfg-options`` given), placed last."""
    if not options:
        return args
    words = shlex.split(args)
    extra = [f'{k}={v}' for k, v in options.items()]
    if '--cfg-options' not in words:
        return ' '.join(filter(None, [args, '--cfg-options', *map(shlex.quote, extra)]))
    at = words.index('--cfg-options')
    end = next((j for j in range(at + 1, len(words)) if words[j].startswith('--')), len(words))
    words = [*words[:at], *words[end:], *words[at:end], *extra]   # --cfg-options comes last
    return ' '.join(map(shlex.quote, words))


def train_arguments(run: dict, resume: bool = False) -> str:
    """The train.py arguments of a run (or pretraining entry) after its config: work dir,
    ``--resume``, its ``train_args``, the backbone checkpoint's and the seed's
    ``--cfg-options`` last."""
    options = backbone_checkpoint_options(run['checkpoint']) if run.get('checkpoint') and \
        'name' not in run else {}
    options.update(recipe_options(run))
    if run.get('seed') is not None:
        options['randomness.seed'] = str(run['seed'])
    args = _merged_args(run.get('train_args', ''), options)
    return ' '.join(filter(None, [f'--work-dir {shlex.quote(run["work_dir"])}',
                                  '--resume' if resume else '', args]))


def eval_arguments(run: dict) -> str:
    """The test.py arguments of a run after its config and checkpoint."""
    return ' '.join(filter(None, [f'--work-dir {shlex.quote(run["work_dir"])} --out-metrics '
                                  f'{shlex.quote(run["metrics"])}',
                                  _merged_args(run.get('test_args', ''),
                                               {**(backbone_checkpoint_options(run['checkpoint'])
                                                   if run.get('checkpoint') else {}),
                                                **recipe_options(run)})]))


def last_checkpoint_arg(work_dir: str) -> str:
    """A shell word that reads the work dir's ``last_checkpoint`` when the command runs."""
    return f'"$(cat {shlex.quote(os.path.join(work_dir, "last_checkpoint"))})"'


def convert_command(entry: dict) -> str:
    """The conversion of a pretraining entry's last checkpoint to its backbone checkpoint."""
    return ('.venv/bin/python tools/convert_checkpoint.py '
            f'{last_checkpoint_arg(entry["work_dir"])} '
            f'{shlex.quote(entry["checkpoint"])} --src-format {entry["src_format"]}')


def run_commands(run: dict, gpus: int, resume: bool = False) -> List[str]:
    """The dist_train / dist_test command lines of one run (``resume``: ``--resume``); of a
    pretraining entry, its dist_train and conversion lines."""
    train = (f'tools/dist_train.sh {shlex.quote(run["config"])} {gpus} '
             f'{train_arguments(run, resume)}')
    if 'name' in run:
        return [train, convert_command(run)]
    return [train, f'tools/dist_test.sh {shlex.quote(run["config"])} '
                   f'{last_checkpoint_arg(run["work_dir"])} {gpus} {eval_arguments(run)}']
