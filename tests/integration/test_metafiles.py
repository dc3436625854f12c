"""configs/*/metafile.yaml and model-index.yml: every config is listed, every listed config
exists, and no metric is a number that was never measured."""
import glob
import os

import pytest
import yaml

from support import ROOT

METAFILES = ['configs/pretrain/metafile.yaml', 'configs/ade20k/metafile.yaml',
             'configs/coco/metafile.yaml']
#: the only metric values allowed until full-scale runs exist.
NOT_RUN = 'not yet run'
DEMO = 'sanity config: results of make demo, see README "Demo"'


def load(path):
    with open(os.path.join(ROOT, path)) as f:
        return yaml.safe_load(f)


def test_model_index_imports_every_metafile():
    index = load('model-index.yml')
    assert index['Import'] == METAFILES
    assert sorted(glob.glob('configs/*/metafile.yaml', root_dir=ROOT)) == sorted(METAFILES)


def test_every_config_is_listed_once_and_every_listed_config_exists():
    """All configs outside _base_/ (the tiny CPU ones and the ablations included)."""
    listed = []
    for path in METAFILES:
        for model in load(path)['Models']:
            config = model['Config']
            assert os.path.isfile(os.path.join(ROOT, config)), f'{path}: {config} does not exist'
            assert config.startswith(os.path.dirname(path) + '/'), f'{path}: {config}'
            assert model['Name'] == os.path.basename(config)[:-3], f'{path}: {model["Name"]}'
            listed.append(config)
    configs = [p for p in glob.glob('configs/**/*.py', root_dir=ROOT, recursive=True)
               if '_base_' not in p.split(os.sep)]
    assert sorted(listed) == sorted(configs)  # each once, none forgotten


@pytest.mark.parametrize('path', METAFILES)
def test_models_name_their_collection_task_dataset_and_honest_metrics(path):
    meta = load(path)
    collections = {c['Name'] for c in meta['Collections']}
    for c in meta['Collections']:
        assert c['Paper']['URL'].startswith('https://arxiv.org/abs/')
    for model in meta['Models']:
        assert model['In Collection'] in collections, model['Name']
        assert model['Metadata'].get('Training Data'), model['Name']
        assert model['Results'], model['Name']
        for result in model['Results']:
            assert result['Task'] and result['Dataset'], model['Name']
            expected = DEMO if 'tiny' in model['Name'] else NOT_RUN
            assert set(result['Metrics'].values()) == {expected}, model['Name']
