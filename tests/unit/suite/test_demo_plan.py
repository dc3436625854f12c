"""mixedae.suite.demo.plan: the stage list of each preset and what its stages run."""
from support import REPO
from mixedae.suite.demo.plan import plan
from mixedae.suite.demo.presets import HOMOLOGOUS, PRESETS, PRETRAINS, TRANSFERS
from mixedae.suite.demo.stages import Demo


def test_stage_list_covers_every_method_task_and_seed(tmp_path):
    p = PRESETS['gpu']
    seeds = p.pretrain_seeds
    demo = Demo(REPO, str(tmp_path / 'o'), str(tmp_path / 'd'), p)
    names = [s.name for s in plan(demo, report=lambda: None)]
    assert [n for n in names if n.startswith('pretrain')] == [
        f'pretrain {m} s{s}' for s in p.pretrain_seeds for m in PRETRAINS]
    assert len(p.pretrain_seeds) >= 3 and len(PRETRAINS) == 5
    assert [n for n in names if n.startswith('convert')] == [
        f'convert {m} s{s}' for s in p.pretrain_seeds for m in PRETRAINS]
    assert [n for n in names if n.startswith('hr_acc')] == [f'hr_acc {m}' for m in HOMOLOGOUS]
    probes = [n for n in names if n.startswith('probe')]
    assert probes == [f'probe {m} s{s}' for s in p.pretrain_seeds for m in TRANSFERS]
    tuned = [n for n in names if n.startswith(('ade20k', 'coco'))]
    assert tuned == [f'{t} {m} s{s}' for t in ('ade20k', 'coco') for s in p.finetune_seeds
                     for m in TRANSFERS]
    assert names[-2:] == ['figures', 'report']
    assert demo.backbone('mae', 0).endswith('backbones/mae_s0.pth')
    assert demo.backbone('scratch', 0) is None
    # every pretraining ends before the stages that read it
    assert max(names.index(f'convert {m} s{s}') for s in p.pretrain_seeds
               for m in PRETRAINS) < names.index('hr_acc mixedae') < names.index(probes[0])
    # the stages run what their names say
    calls = []
    demo.pretrain = lambda name, seed: calls.append(('pretrain', name, seed))
    demo.transfer = lambda task, name, seed: calls.append((task, name, seed))
    for stage in plan(demo, report=lambda: None):
        if stage.kind in ('pretrain', 'probe', 'coco'):
            stage.run()
    assert calls[:2] == [('pretrain', 'mae', 0), ('pretrain', 'naivemix', 0)]
    assert names.index('convert mae s0') > names.index(f'pretrain mixedae-noseg s{seeds[-1]}')
    assert ('probe', 'scratch', 2) in calls and ('coco', 'mixedae-tied', 0) in calls
    assert ('coco', 'mae', 1) not in calls and len(calls) == 15 + 18 + 6
    # the CPU preset fine-tunes on ADE20K only, from the first pretraining seed
    cpu = [s.name for s in plan(Demo(REPO, str(tmp_path / 'c'), str(tmp_path / 'd'),
                                     PRESETS['cpu']), report=lambda: None)]
    assert [n for n in cpu if n.startswith(('ade20k', 'coco'))] == [
        f'ade20k {m} s0' for m in TRANSFERS]
