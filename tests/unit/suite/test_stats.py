"""Spreads over seeds, paired and Welch intervals, and Holm's family-wise rule, against values
worked out by hand; reading MMEngine's scalar logs (resumed runs, validation records)."""
import math
import os

import numpy as np
import pytest
from scipy.stats import t

from mixedae.suite.stats import (Comparison, compare, family_real, format_comparison,
                                 format_spread, holm, mean_std, read_scalars, read_validation,
                                 steady_time_per_iter)
from support import write_scalars


def test_mean_std_and_spread():
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert mean_std([4.0]) == (4.0, 0.0)
    assert format_spread([1.0, 2.0, 3.0]) == '2.00 ± 1.00 (1.00, 2.00, 3.00)'
    assert format_spread([0.25, 0.5], digits=3) == '0.375 ± 0.177 (0.250, 0.500)'
    assert format_spread([55.28]) == '55.28'             # one run: its value alone, no "± 0.00"


def test_paired_interval_by_hand():
    # differences 0.20, 0.25, 0.23: mean 0.22667, sd 0.025166, se = sd / sqrt(3), df 2,
    # t(0.975, 2) = 4.302653; with 2 df the t CDF is 1/2 + x / (2 sqrt(2 + x^2))
    after, before = [0.40, 0.46, 0.45], [0.20, 0.21, 0.22]
    d = [0.20, 0.25, 0.23]
    mean = sum(d) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 2)
    se = sd / math.sqrt(3)
    c = compare(after, before, paired=True)
    assert c.test == 'paired t' and c.diff == pytest.approx(mean)
    assert (c.low, c.high) == pytest.approx((mean - 4.302653 * se, mean + 4.302653 * se),
                                            abs=1e-6)
    x = mean / se
    assert c.p == pytest.approx(1 - x / math.sqrt(2 + x ** 2), rel=1e-6)
    # where the seeds move both numbers together, pairing removes that shared part: unpaired,
    # the same numbers give a Welch interval that holds zero
    after, before = [0.40, 0.50, 0.60], [0.20, 0.31, 0.39]
    paired, welch = compare(after, before, paired=True), compare(after, before)
    assert paired.low > 0 and welch.test == 'Welch t' and welch.low < 0


# scipy warns that the constant group's moments lose precision; the variance is exactly 0
@pytest.mark.filterwarnings('ignore:Precision loss occurred in moment calculation')
def test_welch_interval_by_hand():
    # equal variances 0.01, n = 3 each -> se = sqrt(2 * 0.01 / 3), Welch df = 4, t = 2.7764451
    half = 2.7764451 * (2 * 0.01 / 3) ** 0.5
    c = compare([5.0, 5.1, 5.2], [3.0, 3.1, 3.2])
    assert (c.low, c.high) == pytest.approx((2.0 - half, 2.0 + half), abs=1e-6)
    # unequal variances and sizes: df from the Welch-Satterthwaite formula
    a, b = [1.0, 2.5, 2.0, 1.5], [0.5, 1.0]
    va, vb = np.var(a, ddof=1) / 4, np.var(b, ddof=1) / 2
    df = (va + vb) ** 2 / (va ** 2 / 3 + vb ** 2 / 1)
    half = t.ppf(0.975, df) * (va + vb) ** 0.5
    assert (compare(a, b).low, compare(a, b).high) == pytest.approx((1.0 - half, 1.0 + half))
    # one constant group beside a varying one is still an interval (Welch uses the other's spread)
    one = compare([2.0, 2.0, 2.0], [1.0, 1.2, 1.4])
    assert one.low is not None and one.low < one.diff < one.high
    # a difference is tested in either direction: the swap mirrors it, with the same p
    back = compare([3.0, 3.1, 3.2], [5.0, 5.1, 5.2])
    assert (back.low, back.high, back.p) == pytest.approx((-c.high, -c.low, c.p))


def test_no_interval_for_one_run_or_no_spread():
    assert compare([5.0], [3.0, 3.4]) == Comparison(pytest.approx(1.8), 'Welch t', why='n = 1')
    assert compare([2.0, 2.0], [1.0, 1.0]).why == 'no spread'          # both constant
    # paired differences all equal: no spread, whatever the groups' own spread
    flat = compare([1.5, 2.5, 3.5], [1.0, 2.0, 3.0], paired=True)
    assert flat.low is None and flat.p is None and flat.why == 'no spread'
    assert format_comparison(flat, real=True) == '+0.50 (no interval: no spread)'   # never bold
    assert format_comparison(compare([5.0], [3.0, 3.4]), real=False) == \
        '+1.80 (no interval: n = 1)'
    with pytest.raises(ValueError, match='as many values in each group, got 2 and 3'):
        compare([1.0, 2.0], [1.0, 2.0, 3.0], paired=True)


def test_holm_by_hand():
    # sorted: 0.001 <= 0.05/3, 0.012 <= 0.05/2, 0.02 <= 0.05/1: all three rejected, where
    # Bonferroni (0.05/3 each) would keep 0.02; None is no test and does not count in m
    assert holm([0.012, 0.02, None, 0.001]) == [True, True, False, True]
    # the step-down stops at the first that is not below: 0.03 > 0.05/2, so 0.04 is kept too
    assert holm([0.01, 0.04, 0.03, 0.005]) == [True, False, False, True]
    # nine comparisons: p = 0.018 is real uncorrected, not under Holm's rule
    ps = [0.001, 0.002, 0.018, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    assert holm(ps) == [True, True, False] + [False] * 6
    assert holm([]) == []


def test_family_real_bolds_only_what_survives_holm():
    strong = compare([5.0, 5.1, 5.2], [3.0, 3.1, 3.2])                # p ~ 1e-4
    weak = compare([1.2, 1.3, 1.4], [1.0, 1.05, 1.1])                 # p ~ 0.03 alone
    assert weak.p < 0.05
    family = {'strong': strong, 'weak': weak, 'none': compare([1.0], [2.0, 3.0])}
    for _ in range(4):
        family[f'null{_}'] = compare([1.0, 2.0, 3.0], [1.1, 2.1, 2.9])
    real = family_real(family)
    assert real == {'strong'}
    assert format_comparison(strong, 'strong' in real).startswith('**+2.00 [')
    assert not format_comparison(weak, 'weak' in real).startswith('**')


def test_read_scalars_merges_resumed_runs_and_skips_validation(tmp_path):
    write_scalars(str(tmp_path / '20260101_000000/vis_data/scalars.json'),
                [dict(loss=1.0, time=9.0, step=10), dict(loss=0.9, time=0.5, step=20),
                 dict(loss=0.8, time=0.7, step=30)])
    # resumed after step 20: step 30 is logged again, then 40; one validation record
    write_scalars(str(tmp_path / '20260101_010000/vis_data/scalars.json'),
                [dict(loss=0.7, time=8.0, step=30), dict(loss=0.6, time=0.6, step=40),
                 dict(mIoU=50.0, step=40)])
    records = read_scalars(str(tmp_path))
    assert [(r['step'], r['loss']) for r in records] == [(10, 1.0), (20, 0.9), (30, 0.7),
                                                         (40, 0.6)]
    assert steady_time_per_iter(records) == 0.6          # median of 0.5, 8.0, 0.6
    assert steady_time_per_iter(records[:1]) is None


def test_read_validation_takes_the_latest_record_of_a_step(tmp_path):
    write_scalars(str(tmp_path / '20260101_000000/vis_data/scalars.json'),
                [dict(loss=1.0, step=10), dict(mIoU=20.0, time=0.1, data_time=0.0, step=10)])
    write_scalars(str(tmp_path / '20260101_010000/vis_data/scalars.json'),   # a rerun's
                [dict(loss=0.5, step=10), dict(mIoU=21.0, aAcc=60.0, time=0.2, step=10)])
    assert read_validation(str(tmp_path), 10) == dict(mIoU=21.0, aAcc=60.0)
    assert read_validation(str(tmp_path), 5) is None


def test_read_scalars_names_bad_file(tmp_path):
    path = tmp_path / 'x/vis_data/scalars.json'
    os.makedirs(path.parent)
    path.write_text('{"loss": 1, "step": 1}\nnot json\n')
    with pytest.raises(ValueError, match=r'scalars.json:2: not a JSON record'):
        read_scalars(str(tmp_path))
