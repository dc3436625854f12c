"""NonFiniteGuardHook units, one check at a time (a stand-in runner: only the attributes the
hook reads). Toy training runs that trip the guard: tests/integration/test_failure_modes.py."""
import itertools
from types import SimpleNamespace

import pytest
import torch
import torch.nn as nn
from mmengine.logging import MessageHub

from mixedae.engine.hooks import NonFiniteError, NonFiniteGuardHook
from mixedae.engine.hooks.non_finite_guard import _bad_scalars, _non_finite_parameters
from mixedae.utils.checkpoint import CheckpointError
from support import Log

NAN, INF = float('nan'), float('inf')
_HUBS = itertools.count()


def runner(clip=False, grad_norm=None, it=6, epoch=0, last_ckpt=None):
    hub = MessageHub.get_instance(f'guard{next(_HUBS)}')
    if grad_norm is not None:
        hub.update_scalar('train/grad_norm', grad_norm)
    if last_ckpt:
        hub.update_info('last_ckpt', last_ckpt)
    torch.manual_seed(0)
    return SimpleNamespace(iter=it, epoch=epoch, model=nn.Linear(4, 2), logger=Log(),
                           message_hub=hub, _load_from=None, work_dir='/nowhere',
                           optim_wrapper=SimpleNamespace(
                               clip_grad_kwargs=dict(max_norm=1.) if clip else {}))


def step(hook, run, **outputs):
    hook.after_train_iter(run, 0, None, {k: torch.tensor(v) for k, v in outputs.items()})


def test_bad_scalars_keeps_only_non_finite_entries():
    bad = _bad_scalars(dict(a=torch.tensor([1., 2.]), b=torch.tensor([1., NAN]), c=INF, d=3,
                            e=torch.tensor(-INF, dtype=torch.float16)))
    assert list(bad) == ['b', 'c', 'e'] and bad['c'] == INF and bad['e'] == -INF
    assert bad['b'] != bad['b']                                   # NaN
    assert _bad_scalars({}) == {}


def test_non_finite_parameters_are_named_and_an_overflowing_norm_is_not_blamed():
    model = nn.Linear(4, 2)
    assert _non_finite_parameters(model) == []
    with torch.no_grad():
        model.weight.fill_(1e30)            # finite, but the total norm overflows fp32
    assert _non_finite_parameters(model) == []
    with torch.no_grad():
        model.bias[1] = NAN
    assert _non_finite_parameters(model) == ['bias']
    assert _non_finite_parameters(nn.Module()) == []


def test_weights_are_checked_on_every_step_even_when_the_loss_is_finite():
    """A finite loss and gradient norm, NaN weights: the run stops at this iteration."""
    hook, run = NonFiniteGuardHook(max_bad_steps=3), runner(last_ckpt='work/iter_6.pth')
    step(hook, run, loss=0.5)
    with torch.no_grad():
        run.model.weight[0, 1] = INF
    with pytest.raises(NonFiniteError) as err:
        step(hook, run, loss=0.5)
    assert str(err.value) == (
        'non-finite weights after iteration 7 (epoch 1): 1 parameter(s), e.g. weight. '
        'Stopping the run; nothing from this iteration is saved. Last good checkpoint: '
        'work/iter_6.pth')
    assert run.logger.lines == [('error', str(err.value))]


def test_a_non_finite_loss_stops_at_once_by_default():
    hook, run = NonFiniteGuardHook(), runner(it=4, epoch=2)
    with pytest.raises(NonFiniteError) as err:
        step(hook, run, loss_a=1., loss_b=NAN)
    assert str(err.value).startswith(
        'non-finite values at iteration 5 (epoch 3): loss_b=nan (1 bad step(s) in a row, '
        'max_bad_steps=0). Stopping the run; nothing from this iteration is saved. Last good '
        'checkpoint: none saved yet')


def test_bad_steps_are_tolerated_up_to_the_limit_in_a_row():
    hook, run = NonFiniteGuardHook(max_bad_steps=2), runner()
    step(hook, run, loss=INF)
    step(hook, run, loss=NAN)
    assert hook.bad_steps == 2
    assert run.logger.lines[-1] == (
        'warning', 'non-finite values at iteration 7 (epoch 1): loss=nan; tolerated (2/2 bad '
                   'steps in a row)')
    step(hook, run, loss=1.)                                       # a good step resets the count
    assert hook.bad_steps == 0
    step(hook, run, loss=NAN)
    step(hook, run, loss=NAN)
    with pytest.raises(NonFiniteError, match=r'3 bad step\(s\) in a row, max_bad_steps=2\)'):
        step(hook, run, loss=NAN)


@pytest.mark.parametrize('clip,stops', [(True, True), (False, False)])
def test_the_gradient_norm_is_checked_only_when_clipping(clip, stops):
    hook, run = NonFiniteGuardHook(), runner(clip=clip, grad_norm=NAN)
    if stops:
        with pytest.raises(NonFiniteError, match=r'iteration 7 \(epoch 1\): grad_norm=nan \('):
            step(hook, run, loss=1.)
    else:
        step(hook, run, loss=1.)
    step(NonFiniteGuardHook(), runner(clip=True), loss=1.)           # no norm logged yet: fine


def test_every_bad_term_and_at_most_five_weights_are_named():
    hook, run = NonFiniteGuardHook(max_bad_steps=1), runner()
    step(hook, run, loss_a=NAN, loss_b=1., loss_c=-INF)
    assert run.logger.lines[-1][1].startswith(
        'non-finite values at iteration 7 (epoch 1): loss_a=nan, loss_c=-inf; tolerated')
    run.model = nn.Sequential(*[nn.Linear(1, 1, bias=False) for _ in range(7)])
    with torch.no_grad():
        for p in run.model.parameters():
            p.fill_(NAN)
    with pytest.raises(NonFiniteError, match=r'7 parameter\(s\), e\.g\. 0\.weight, 1\.weight, '
                                             r'2\.weight, 3\.weight, 4\.weight\. Stopping'):
        step(NonFiniteGuardHook(), run, loss=1.)


def test_a_ddp_wrapped_model_and_a_wrapper_without_clipping_settings():
    from mmengine.model import MMDistributedDataParallel
    run = runner(grad_norm=NAN)
    run.optim_wrapper = SimpleNamespace()                  # no clip_grad_kwargs at all
    wrapped = MMDistributedDataParallel.__new__(MMDistributedDataParallel)
    nn.Module.__init__(wrapped)
    wrapped.module = run.model
    run.model = wrapped
    step(NonFiniteGuardHook(), run, loss=1.)
    with torch.no_grad():
        wrapped.module.bias[0] = NAN
    with pytest.raises(NonFiniteError, match=r'1 parameter\(s\), e\.g\. bias\.'):
        step(NonFiniteGuardHook(), run, loss=1.)


def test_a_run_without_outputs_checks_the_weights():
    run = runner()
    with torch.no_grad():
        run.model.bias[0] = NAN
    with pytest.raises(NonFiniteError, match='non-finite weights'):
        NonFiniteGuardHook().after_train_iter(run, 0)


def poisoned(entry, count):
    """A checkpoint whose ``entry`` holds ``count`` NaN tensors t0, t1, ..."""
    ckpt = dict(state_dict=dict(w=torch.ones(2)), optimizer=dict(state={}), meta=dict(x=NAN))
    ckpt[entry] = {f't{i}': torch.tensor([NAN]) for i in range(count)}
    return ckpt


def test_no_checkpoint_with_non_finite_weights_or_moments_is_saved():
    hook, run = NonFiniteGuardHook(), runner(it=9)
    hook.before_save_checkpoint(run, poisoned('meta', 1))           # meta is not checked
    with pytest.raises(NonFiniteError, match=r'^refusing to save a checkpoint at iteration 9 '
                                             r'with 1 non-finite tensor\(s\), e\.g\. '
                                             r'optimizer\.t0\. Stopping'):
        hook.before_save_checkpoint(run, poisoned('optimizer', 1))
    with pytest.raises(NonFiniteError, match=r'with 7 non-finite tensor\(s\), e\.g\. '
                                             r'state_dict\.t0, state_dict\.t1, state_dict\.t2, '
                                             r'state_dict\.t3, state_dict\.t4\. Stopping'):
        hook.before_save_checkpoint(run, poisoned('state_dict', 7))


def test_loading_a_non_finite_checkpoint_is_refused_by_name(tmp_path):
    hook, run = NonFiniteGuardHook(), runner()
    hook.after_load_checkpoint(run, poisoned('meta', 1))
    run._load_from = 'ckpt/nan.pth'
    with pytest.raises(CheckpointError, match=r'^ckpt/nan\.pth: 1 non-finite tensor\(s\) '
                                              r'\(NaN/Inf\), e\.g\. optimizer\.t0; refusing '
                                              r'to load it\. Use an earlier checkpoint of the '
                                              r'run\.$'):
        hook.after_load_checkpoint(run, poisoned('optimizer', 1))
    # --resume without a file: the one Runner found through the work dir's last_checkpoint
    run._load_from, run.work_dir = None, str(tmp_path)
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_8.pth'))
    with pytest.raises(CheckpointError, match=rf'^{tmp_path}/iter_8\.pth: 6 non-finite tensor'
                                              r'\(s\) \(NaN/Inf\), e\.g\. state_dict\.t0, '
                                              r'state_dict\.t1, state_dict\.t2, state_dict\.t3, '
                                              r'state_dict\.t4; refusing'):
        hook.after_load_checkpoint(run, poisoned('state_dict', 6))


@pytest.mark.parametrize('value', [-1, 1.5, '2', None])
def test_the_tolerance_must_be_a_non_negative_int(value):
    with pytest.raises(ValueError, match=rf'max_bad_steps must be an int >= 0, got {value!r}'):
        NonFiniteGuardHook(max_bad_steps=value)


def test_defaults_and_priority():
    hook = NonFiniteGuardHook()
    assert (hook.max_bad_steps, hook.bad_steps) == (0, 0)
    assert NonFiniteGuardHook.priority == 'ABOVE_NORMAL'
