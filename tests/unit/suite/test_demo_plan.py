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
    # fine-tuning from every pretraining seed, as the probe
    assert tuned == [f'{t} {m} s{s}' for t in ('ade20k', 'coco') for s in p.pretrain_seeds
                     for m in TRANSFERS]
    assert [n for n in names if n.startswith('init')] == [f'init s{s}' for s in seeds]
    assert names[-2:] == ['figures', 'report']
    assert demo.backbone('mae', 0).endswith('backbones/mae_s0.pth')
    # random init is a written step-0 encoder, read before any transfer run
    assert demo.backbone('scratch', 0).endswith('backbones/scratch_s0.pth')
    assert names.index(f'init s{seeds[-1]}') < names.index(probes[0])
    # every pretraining ends before the stages that read it
    assert max(names.index(f'convert {m} s{s}') for s in p.pretrain_seeds
               for m in PRETRAINS) < names.index('hr_acc mixedae') < names.index(probes[0])
    # the stages run what their names say
    calls = []
    demo.pretrain = lambda name, seed: calls.append(('pretrain', name, seed))
    demo.transfer = lambda task, name, seed: calls.append((task, name, seed))
    demo.init_backbone = lambda seed: calls.append(('init', seed))
    for stage in plan(demo, report=lambda: None):
        if stage.kind in ('pretrain', 'probe', 'coco') or stage.name.startswith('init'):
            stage.run()
    assert calls[:2] == [('pretrain', 'mae', 0), ('pretrain', 'naivemix', 0)]
    assert names.index('convert mae s0') > names.index(f'pretrain mixedae-noseg s{seeds[-1]}')
    assert ('probe', 'scratch', 2) in calls and ('coco', 'mixedae-tied', 0) in calls
    assert ('coco', 'mae', 1) in calls and len(calls) == 15 + 3 + 18 + 18
    assert [c for c in calls if c[0] == 'init'] == [('init', s) for s in seeds]
    # the CPU preset fine-tunes on ADE20K only, from every pretraining seed
    cpu = [s.name for s in plan(Demo(REPO, str(tmp_path / 'c'), str(tmp_path / 'd'),
                                     PRESETS['cpu']), report=lambda: None)]
    assert [n for n in cpu if n.startswith(('ade20k', 'coco'))] == [
        f'ade20k {m} s{s}' for s in PRESETS['cpu'].pretrain_seeds for m in TRANSFERS]
