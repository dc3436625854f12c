"""The safe checkpoint loader and MMEngine resume through it."""
import os

import numpy as np
import pytest
import torch
import torch.nn as nn
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.model import BaseModel
from mmengine.runner import Runner
from mmengine.runner.checkpoint import CheckpointLoader
from torch.utils.data import Dataset

import mixedae  # noqa: F401  (registers the safe local loader)
from mixedae.models import ViT
from mixedae.utils.checkpoint import CheckpointError, load_checkpoint_file, non_finite_tensors
from support import TINY


class _Exploit:
    """Unpickling this object would run a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


def test_round_trip_of_mmengine_content(tmp_path):
    buf = HistoryBuffer()
    buf.update(1.5)
    buf.update(np.float64(2.5))
    payload = dict(state_dict=dict(w=torch.arange(3.)), message_hub=dict(buf=buf),
                   meta=dict(seed=np.int64(3), ratio=np.float32(0.5), arr=np.arange(4)))
    path = tmp_path / 'ok.pth'
    torch.save(payload, path)
    loaded = load_checkpoint_file(path)
    torch.testing.assert_close(loaded['state_dict']['w'], torch.arange(3.))
    assert loaded['message_hub']['buf'].mean() == pytest.approx(2.0)
    assert loaded['meta']['seed'] == 3 and loaded['meta']['arr'].tolist() == [0, 1, 2, 3]


def test_malicious_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / 'pwned'
    path = tmp_path / 'evil.pth'
    torch.save(dict(state_dict=dict(w=torch.zeros(1)), extra=_Exploit(marker)), path)
    with pytest.raises(CheckpointError, match='refused to load .*evil.pth'):
        load_checkpoint_file(path)
    # MMEngine's own loading path (load_from / resume / init_cfg) is routed through it too
    with pytest.raises(CheckpointError, match='refused'):
        CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
    assert not marker.exists()


def test_missing_and_corrupt_files_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match='nowhere.pth'):
        load_checkpoint_file(tmp_path / 'nowhere.pth')
    bad = tmp_path / 'garbage.pth'
    bad.write_bytes(b'not a checkpoint at all')
    with pytest.raises(CheckpointError, match='garbage.pth'):
        load_checkpoint_file(bad)


class ToyData(Dataset):
    def __init__(self):
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(16, 3, 32, 32, generator=g)
        self.y = torch.randint(0, 3, (16,), generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return dict(inputs=self.x[i], labels=self.y[i])


class ToyClassifier(BaseModel):
    def __init__(self):
        super().__init__()
        self.backbone = ViT(**TINY)
        self.head = nn.Linear(32, 3)

    def forward(self, inputs, labels, mode='loss'):
        logits = self.head(self.backbone(inputs)[0].mean((2, 3)))
        return dict(loss=nn.functional.cross_entropy(logits, labels))


def make_runner(work_dir, max_iters, resume=False):
    torch.manual_seed(0)  # same initial weights for every runner
    return Runner(
        model=ToyClassifier(), work_dir=str(work_dir),
        train_dataloader=dict(dataset=ToyData(), batch_size=4, num_workers=0,
                              sampler=dict(type='DefaultSampler', shuffle=True, seed=0),
                              collate_fn=dict(type='default_collate')),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05)),
        param_scheduler=dict(type='LinearLR', start_factor=0.1, by_epoch=False, end=6),
        train_cfg=dict(by_epoch=False, max_iters=max_iters),
        default_hooks=dict(checkpoint=dict(type='CheckpointHook', interval=2, by_epoch=False),
                           logger=dict(type='LoggerHook', interval=1)),
        randomness=dict(seed=0), resume=resume, default_scope='mmengine')


@pytest.mark.slow
def test_resume_continues_exactly_where_it_stopped(tmp_path):
    straight = make_runner(tmp_path / 'straight', max_iters=6)
    straight.train()
    first = make_runner(tmp_path / 'resumed', max_iters=3)
    first.train()                          # stops after iter 3, last checkpoint at iter 2
    assert os.path.isfile(tmp_path / 'resumed' / 'iter_2.pth')
    os.remove(tmp_path / 'resumed' / 'iter_3.pth')  # as if killed before saving iter 3
    (tmp_path / 'resumed' / 'last_checkpoint').write_text(str(tmp_path / 'resumed' / 'iter_2.pth'))
    second = make_runner(tmp_path / 'resumed', max_iters=6, resume=True)
    second.train()
    assert second.iter == 6
    for (name, a), b in zip(straight.model.state_dict().items(),
                            second.model.state_dict().values()):
        torch.testing.assert_close(b, a, msg=name)


def test_non_finite_tensors_names_nested_entries():
    obj = dict(state_dict=dict(a=torch.ones(2), b=torch.tensor([1.0, float('nan')])),
               optimizer=dict(state={0: dict(exp_avg=torch.tensor([float('-inf')]))}),
               steps=torch.tensor([3]))                     # integer tensors are never bad
    assert non_finite_tensors(obj) == ['state_dict.b', 'optimizer.state.0.exp_avg']
