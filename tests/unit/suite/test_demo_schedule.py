"""mixedae.suite.demo.schedule: reusing finished stages, timings, the ETA, stages side by side."""
import pytest

from mixedae.suite.demo.schedule import Stage, batches, eta, read_timings, run_stages


def test_schedule_reuses_finished_stages_and_records_timings(tmp_path, capsys):
    ran = []

    def stage(name, kind, exists):
        out = tmp_path / f'{name}.out'
        if exists:
            out.write_text('')
        return Stage(name, kind, [str(out)], lambda: (ran.append(name), out.write_text('')))

    stages = [stage('a', 'pretrain', True), stage('b', 'pretrain', False),
              stage('report', 'report', True)]
    timings_file = str(tmp_path / 'run' / 'timings.json')
    timings = run_stages(stages, {'pretrain': 60, 'report': 5}, timings_file)
    assert ran == ['b', 'report']                  # 'a' reused; the report always runs
    assert set(timings) == {'b'} and read_timings(timings_file) == timings
    printed = capsys.readouterr().out
    assert '[1/3] a' in printed and 'reused (outputs exist)' in printed
    # ETA: nothing measured yet -> the expected seconds of the stages not yet done
    stages.append(stage('c', 'probe', False))
    expected = {'pretrain': 60, 'probe': 15, 'report': 5}
    assert eta(stages, expected, {}) == 5 + 15
    (tmp_path / 'b.out').unlink()
    assert eta(stages, expected, {}) == 60 + 5 + 15
    # a kind measured in this run counts its mean time; the others their expected time times
    # the pace so far (here 200 s spent where 120 s were expected)
    measured = {'pretrain': [90.0, 110.0]}
    assert eta(stages, expected, measured) == pytest.approx(100 + (5 + 15) * 200 / 120)


def test_consecutive_training_stages_of_one_kind_run_side_by_side(tmp_path):
    import threading
    barrier, ran = threading.Barrier(2, timeout=10), []

    def stage(name, kind):
        def run():
            if name in ('a', 'b'):
                barrier.wait()              # both probes of a batch must be running at once
            ran.append(name)
            (tmp_path / name).write_text('')
        return Stage(name, kind, [str(tmp_path / name)], run)

    stages = [stage('p0', 'pretrain'), stage('c0', 'convert'), stage('c1', 'convert'),
              stage('a', 'probe'), stage('b', 'probe'), stage('c', 'probe'),
              stage('report', 'report')]
    assert [[s.name for s in b] for b in batches(stages, 2)] == [
        ['p0'], ['c0'], ['c1'], ['a', 'b'], ['c'], ['report']]
    assert [[s.name for s in b] for b in batches(stages, 1)] == [[s.name] for s in stages]
    timings = run_stages(stages, {}, str(tmp_path / 'timings.json'), parallel=2)
    assert sorted(ran) == sorted(s.name for s in stages) and set(timings) == {
        'p0', 'c0', 'c1', 'a', 'b', 'c'}
    # side by side, a stage of a parallel kind counts for 1 / parallel of the ETA
    (tmp_path / 'c').unlink()
    assert eta(stages, {'probe': 10}, {}, parallel=2) == 5.0
    assert eta(stages, {'probe': 10}, {'probe': [4.0]}, parallel=2) == 2.0
