"""tools/measure_hr_acc.py and mixedae.suite.hr_probe: hr_acc of encoders on fixed mixed
sequences; and the ViT-B MixedAE recipes start from MAE's initialisation."""
import json

import numpy as np
import pytest
import torch
from mmengine.config import Config

from support import REPO, load_tool
from mixedae.models.layers.topk_attention import hr_acc_chance
from mixedae.suite.figures import build_pretrain_model
from mixedae.suite.hr_probe import load_encoder, measure_hr_acc
from mixedae.utils.errors import InvalidInputError, MissingInputError
from mixedae.suite.pretrain_checkpoint import CheckpointKindError

TINY_MIXEDAE = REPO.path('configs/pretrain/mixedae_vit-tiny-p8_1xb16-coslr-4e_tiny-32.py')
TINY_MAE = REPO.path('configs/pretrain/mae_vit-tiny-p8_1xb16-coslr-4e_tiny-32.py')


@pytest.fixture(scope='module')
def scenes(tmp_path_factory):
    """32 generated scenes (64 x 64): each image has its own background, light and objects, so
    patches of one image look alike."""
    import cv2
    from mixedae.datasets.synthetic import render_scene
    folder = tmp_path_factory.mktemp('scenes')
    rng = np.random.default_rng(0)
    for i in range(32):
        image, _ = render_scene(rng, 64, 64)
        cv2.imwrite(str(folder / f'{i:02d}.png'), image[..., ::-1])
    return folder


def test_tool_writes_the_json_and_is_deterministic(scenes, tmp_path):
    tool = load_tool('measure_hr_acc')
    outs = [tmp_path / 'a.json', tmp_path / 'b.json']
    for out in outs:
        assert tool.main([TINY_MIXEDAE, '--image-dir', str(scenes), '--num', '32', '--seed', '3',
                          '--init', 'tied=0', '--init', 'other=1', '--out', str(out)]) == 0
    first, second = (json.loads(out.read_text()) for out in outs)
    assert first == second
    assert set(first) == {'tied', 'other', '_chance', '_config', '_num', '_seed'}
    assert (first['_config'], first['_num'], first['_seed']) == (TINY_MIXEDAE, 32, 3)
    assert first['_chance'] == pytest.approx(hr_acc_chance(16, 4)) == pytest.approx(0.2)
    assert first['tied']['source'] == 'init seed 0' and first['other']['source'] == 'init seed 1'
    for entry in (first['tied'], first['other']):
        assert len(entry['per_layer']) == 4                          # all 4 blocks are top-K
        assert entry['hr_acc'] == pytest.approx(np.mean(entry['per_layer']), abs=1e-6)
    assert first['tied']['per_layer'] != first['other']['per_layer']


def test_tied_init_recognises_the_query_image_above_chance(scenes):
    """The tiny config starts keys as copies of the queries: a patch query keeps the patches
    that look like it, on these scenes mostly its own image's."""
    assert Config.fromfile(TINY_MIXEDAE).model.backbone.tied_qk_init is True
    result = measure_hr_acc(TINY_MIXEDAE, str(scenes), num=32, seed=0, inits=[('tied', 0)])
    assert result['tied']['hr_acc'] > 2 * result['_chance']
    assert min(result['tied']['per_layer']) > result['_chance']


def mae_checkpoint(path):
    """A MAE (G = 1) tiny model saved as tools/train.py would (weights under state_dict)."""
    torch.manual_seed(5)
    mae, _ = build_pretrain_model(TINY_MAE)
    torch.save(dict(state_dict=mae.state_dict(), meta=dict(epoch=1)), path)
    return mae


def test_a_mae_checkpoint_loads_with_zero_segment_embeddings(tmp_path):
    mae = mae_checkpoint(tmp_path / 'mae.pth')
    torch.manual_seed(0)
    model, _ = build_pretrain_model(TINY_MIXEDAE)
    assert model.backbone.segment_embed.abs().sum() > 0
    assert load_encoder(model, str(tmp_path / 'mae.pth')) == ['segment_embed']
    assert torch.equal(model.backbone.segment_embed, torch.zeros(4, 64))
    loaded = model.backbone.state_dict()
    for name, value in mae.backbone.state_dict().items():
        assert torch.equal(loaded[name], value), name


def test_checkpoints_in_the_json(scenes, tmp_path):
    mae_checkpoint(tmp_path / 'mae.pth')
    torch.manual_seed(1)
    mixedae, _ = build_pretrain_model(TINY_MIXEDAE)
    torch.save(dict(state_dict=mixedae.state_dict()), tmp_path / 'mixedae.pth')
    result = measure_hr_acc(TINY_MIXEDAE, str(scenes), num=16, seed=0,
                            checkpoints=[('mae', str(tmp_path / 'mae.pth')),
                                         ('mixedae', str(tmp_path / 'mixedae.pth'))],
                            inits=[('seed1', 1)])
    assert result['mae']['missing_zeroed'] == ['segment_embed']
    assert result['mae']['source'] == f'checkpoint {tmp_path / "mae.pth"}'
    assert result['mixedae']['missing_zeroed'] == []
    # the checkpoint of the model built from seed 1 measures as --init seed 1
    assert result['mixedae']['per_layer'] == result['seed1']['per_layer']


@pytest.mark.parametrize('call,error,match', [
    (dict(num=6), InvalidInputError, 'multiple of G = 4'),
    (dict(num=64), InvalidInputError, 'fewer than --num 64'),
    (dict(inits=[('_x', 0)]), InvalidInputError, r"""not start with "_": \['_x'\]"""),
    (dict(inits=[('a', 0), ('a', 1)]), InvalidInputError, r"unique.*\['a'\]"),
    (dict(checkpoints=[('a', 'p.pth')]), InvalidInputError, r"unique.*\['a'\]"),
    (dict(inits=[('', 0)]), InvalidInputError, 'non-empty'),
    (dict(inits=[]), InvalidInputError, 'nothing to measure'),
    (dict(checkpoints=[('b', 'missing.pth')]), MissingInputError, 'missing.pth'),
    (dict(image_dir='no_such_dir'), MissingInputError, 'image folder not found: no_such_dir'),
    (dict(config='no_such.py'), MissingInputError, 'config file not found: no_such.py'),
])
def test_bad_input_raises(scenes, call, error, match):
    args = dict(config=TINY_MIXEDAE, image_dir=str(scenes), num=8, inits=[('a', 0)])
    args.update(call)
    with pytest.raises(error, match=match):
        measure_hr_acc(**args)


def test_a_checkpoint_without_backbone_or_of_another_encoder_is_refused(tmp_path):
    torch.save(dict(state_dict={'head.weight': torch.zeros(2)}), tmp_path / 'head.pth')
    torch.manual_seed(0)
    model, _ = build_pretrain_model(TINY_MIXEDAE)
    with pytest.raises(CheckpointKindError, match='no backbone'):
        load_encoder(model, str(tmp_path / 'head.pth'))
    sd = model.state_dict()
    sd['backbone.extra'] = torch.zeros(1)
    torch.save(dict(state_dict=sd), tmp_path / 'extra.pth')
    with pytest.raises(CheckpointKindError, match=r"unexpected \['extra'\]"):
        load_encoder(model, str(tmp_path / 'extra.pth'))
    del sd['backbone.extra'], sd['backbone.cls_token']
    torch.save(dict(state_dict=sd), tmp_path / 'partial.pth')
    with pytest.raises(CheckpointKindError, match=r"missing \['cls_token'\]"):
        load_encoder(model, str(tmp_path / 'partial.pth'))


@pytest.mark.parametrize('bad,match', [
    (['--init', 'a=x'], "--init 'a=x': SEED must be an integer"),
    (['--init', 'noequals'], "--init 'noequals': expected LABEL=VALUE"),
    (['--checkpoint', '=p.pth'], "--checkpoint '=p.pth': expected LABEL=VALUE"),
    (['--init', 'a=0', '--checkpoint', 'a=p.pth'], r"labels must be unique.*\['a'\]"),
    (['--init', 'a=0', '--num', '6'], 'multiple of G = 4'),
])
def test_tool_rejects_bad_input_before_writing(tmp_path, bad, match):
    out = tmp_path / 'o.json'
    with pytest.raises(InvalidInputError, match=match):
        load_tool('measure_hr_acc').main([TINY_MIXEDAE, '--image-dir', '.', '--out', str(out),
                                          *bad])
    assert not out.exists()


@pytest.mark.parametrize('epochs', [300, 800, 1600])
def test_vit_b_mixedae_recipes_use_maes_initialisation(epochs):
    """The paper's recipe starts from MAE's initialisation: no tied queries and keys."""
    cfg = Config.fromfile(REPO.path(f'configs/pretrain/mixedae_vit-base-p16_8xb512-coslr-{epochs}e_'
                                      'in1k.py'))
    backbone = cfg.model.backbone
    assert (backbone.embed_dim, backbone.depth, backbone.group_size) == (768, 12, 4)
    assert backbone.get('tied_qk_init', False) is False
