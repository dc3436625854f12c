"""The generated data set records what it holds (manifest.json); the generator refuses a
non-empty folder unless told to replace it, and its consumers (the demo's data stage;
tools/train.py and tools/test.py: tests/unit/apis/test_inputs.py) check the manifest instead of
the presence of one file."""
import dataclasses
import json
import os

import pytest

from mixedae.datasets.synthetic import (GENERATOR_VERSION, MANIFEST, manifest_problems,
                                        matches_manifest, regenerate_command, write_dataset)
from mixedae.suite.demo.presets import PRESETS
from mixedae.suite.demo.plan import plan
from mixedae.suite.demo.stages import Demo
from mixedae.utils.errors import OutputExistsError
from support import REPO, load_tool

def count(root, folder):
    return len(os.listdir(os.path.join(root, folder)))


def test_manifest_records_what_was_written(tmp_path):
    root = str(tmp_path / 'syn')
    write_dataset(root, 3, 2, (32, 32), seed=4)
    manifest = json.load(open(os.path.join(root, MANIFEST)))
    assert {k: manifest[k] for k in ('num_train', 'num_val', 'size', 'seed', 'version',
                                     'family')} == \
        dict(num_train=3, num_val=2, size=[32, 32], seed=4, version=GENERATOR_VERSION, family=4)
    assert GENERATOR_VERSION == 2                           # families of scenes sharing a look
    for folder, n in manifest['files'].items():
        assert count(root, folder) == n, folder
    assert manifest['files']['ade/images/validation'] == 2
    assert matches_manifest(root, 3, 2, (32, 32), 4)
    assert not matches_manifest(root, 64, 2, (32, 32), 4)
    assert not matches_manifest(root, 3, 2, (32, 32), 0)
    assert not matches_manifest(root, 3, 2, (32, 32), 4, family=1)
    assert manifest_problems(root) == []


def test_family_is_recorded_and_regenerated(tmp_path, capsys):
    tool = load_tool('make_synthetic_data')
    out = str(tmp_path / 'f2')
    assert tool.main([out, '--num-train', '4', '--num-val', '2', '--size', '32',
                      '--family', '2']) == 0
    assert 'families of 2' in capsys.readouterr().out
    manifest = json.load(open(os.path.join(out, MANIFEST)))
    assert manifest['family'] == 2 and matches_manifest(out, 4, 2, (32, 32), 0, family=2)
    assert not matches_manifest(out, 4, 2, (32, 32), 0)          # the default family is 4
    assert regenerate_command(out, manifest).endswith(
        f'make_synthetic_data.py {out} --replace --num-train 4 --num-val 2 --size 32 --seed 0 '
        '--family 2')
    old = {k: v for k, v in manifest.items() if k != 'family'}     # version 1: its own looks
    assert regenerate_command(out, old).endswith('--family 1')
    with pytest.raises(SystemExit):
        tool.main([str(tmp_path / 'bad'), '--family', '0'])


def test_non_empty_folder_is_refused_and_replace_starts_afresh(tmp_path):
    root = str(tmp_path / 'syn')
    write_dataset(root, 6, 3, (32, 32), seed=0)
    with pytest.raises(OutputExistsError, match='is not empty.*--replace'):
        write_dataset(root, 2, 1, (32, 32), seed=0)
    assert count(root, 'pretrain') == 6                     # nothing lost
    write_dataset(root, 2, 1, (32, 32), seed=0, replace=True)
    assert count(root, 'pretrain') == 2 and count(root, 'coco/val2017') == 1
    assert matches_manifest(root, 2, 1, (32, 32), 0)


def test_replace_never_deletes_what_the_generator_did_not_write(tmp_path):
    root = tmp_path / 'syn'
    write_dataset(str(root), 2, 1, (32, 32), seed=0)
    (root / 'notes.txt').write_text('mine')
    with pytest.raises(OutputExistsError, match=r"holds \['notes.txt'\]"):
        write_dataset(str(root), 2, 1, (32, 32), seed=0, replace=True)
    assert (root / 'notes.txt').read_text() == 'mine' and count(str(root), 'pretrain') == 2


def test_tool_says_what_it_wrote_and_refuses_without_replace(tmp_path, capsys):
    tool = load_tool('make_synthetic_data')
    out = str(tmp_path / 'quick')
    assert tool.main([out, '--num-train', '4', '--num-val', '2', '--size', '32']) == 0
    assert 'wrote 4 train + 2 val' in capsys.readouterr().out
    with pytest.raises(OutputExistsError):
        tool.main([out, '--num-train', '2', '--num-val', '1', '--size', '32'])
    assert tool.main([out, '--num-train', '2', '--num-val', '1', '--size', '32',
                      '--replace']) == 0
    assert count(out, 'pretrain') == 2 and matches_manifest(out, 2, 1, (32, 32), 0)


def test_demo_data_stage_is_done_only_when_the_manifest_matches_the_preset(tmp_path):
    preset = dataclasses.replace(PRESETS['cpu'], num_train=3, num_val=2, scene_size=32)
    data = str(tmp_path / 'data')
    demo = Demo(REPO, str(tmp_path / 'out'), data, preset)
    stage = plan(demo, report=lambda: None)[0]
    assert stage.name == 'generate data' and not stage.done()
    write_dataset(data, 5, 1, (32, 32), seed=0)            # another chain's data set
    assert os.path.exists(os.path.join(data, 'coco/annotations/instances_val2017.json'))
    assert not stage.done()
    stage.run()                                             # regenerates with --replace
    assert stage.done() and count(data, 'pretrain') == 3 and count(data, 'coco/val2017') == 2


def test_manifest_is_checked_on_disk_and_hidden_or_temporary_files_are_not_data(tmp_path):
    """The manifest's counts are compared with the files on disk (a deleted file is found, not
    trusted away); dotfiles, ``*.tmp``, ``*.partial`` and ``name~`` are not counted as data."""
    root = str(tmp_path / 'syn')
    write_dataset(root, 3, 2, (32, 32), seed=0, views=('ade20k',))
    folder = tmp_path / 'syn' / 'ade' / 'images' / 'training'
    for name in ('.DS_Store', '._ADE_train_00000000.jpg', 'ADE_x.jpg.tmp', 'ADE_x.jpg.partial',
                 'ADE_x.jpg~'):
        (folder / name).write_bytes(b'')
    assert manifest_problems(root) == []
    assert matches_manifest(root, 3, 2, (32, 32), 0, views=('ade20k',))
    (folder / 'ADE_train_00000001.jpg').unlink()
    assert manifest_problems(root) == [f'{folder}: 2 files, its {MANIFEST} lists 3']
    assert not matches_manifest(root, 3, 2, (32, 32), 0, views=('ade20k',))
