"""The survey's claims checked against measured rows (pipeline/claims.py): intervals that
overlap never order two rows, and each verdict follows from the numbers it shows."""

import pytest

from pipeline import claims


def _row(run, row, fid, half=1.0, seconds=None, count=500, **extra):
    return {"run": run, "row": row, "sampler": row, "label": row, "fid_equal": fid, "fid_equal_low": fid - half,
            "fid_equal_high": fid + half, "equal_count": count, "seconds_per_sample": seconds,
            "num_samples": count, **extra}


def test_order_needs_intervals_apart():
    assert claims.order(_row("a", "x", 10), _row("a", "y", 13)) == -1
    assert claims.order(_row("a", "x", 13), _row("a", "y", 10)) == 1
    assert claims.order(_row("a", "x", 10), _row("a", "y", 11.5)) == 0  # [9, 11] and [10.5, 12.5] overlap
    assert claims.order(_row("a", "x", 10) | {"fid_equal_low": None}, _row("a", "y", 3)) is None
    lines = claims.orderings([_row("r", "x", 10, kid=2.0), _row("r", "y", 11.5, kid=1.0), _row("r", "z", 20, kid=3.0)])
    assert len(lines) == 4  # one disagreement, then the three pairs
    assert "order `r/x` and `r/y` differently" in lines[0]  # FID ranks x better, KID ranks y better
    assert "`r/x` below `r/z` by FID" in lines[1] and "`r/y` below `r/z` by FID" in lines[2]
    assert "`r/x` and `r/y`: FID intervals [9, 11] and [10.5, 12.5] overlap" in lines[3]


def test_ddim_close_to_ddpm():
    fast, slow = 0.1, 2.0  # 20× faster
    within = [_row("m", "ddim_50", 10.5, seconds=fast), _row("m", "ddpm_1000", 10, seconds=slow)]
    assert claims.ddim_close_to_ddpm(within, "m").verdict == claims.SUPPORTS
    far = [_row("m", "ddim_50", 14, seconds=fast), _row("m", "ddpm_1000", 10, seconds=slow)]
    verdict = claims.ddim_close_to_ddpm(far, "m")
    assert verdict.verdict == claims.CONTRADICTS and "worse by 40%" in verdict.evidence
    # apart but within 10 %: still close
    near = [_row("m", "ddim_50", 10.8, half=0.1, seconds=fast), _row("m", "ddpm_1000", 10, half=0.1, seconds=slow)]
    assert claims.ddim_close_to_ddpm(near, "m").verdict == claims.SUPPORTS
    not_fast = [_row("m", "ddim_50", 10, seconds=1.0), _row("m", "ddpm_1000", 10, seconds=2.0)]
    assert claims.ddim_close_to_ddpm(not_fast, "m").verdict == claims.CONTRADICTS
    assert claims.ddim_close_to_ddpm([], "m").verdict == claims.UNRESOLVED


def test_schedule_claim_and_worse_than():
    rows = [_row("ddpm_linear", "ddpm_1000", 8), _row("ddpm_cosine", "ddpm_1000", 12),
            _row("ddpm_linear", "ddim_50", 9), _row("ddpm_cosine", "ddim_50", 9.5)]
    assert claims.linear_beats_cosine(rows, "ddpm_1000").verdict == claims.SUPPORTS
    assert claims.linear_beats_cosine(rows, "ddim_50").verdict == claims.UNRESOLVED
    flipped = [_row("ddpm_linear", "ddpm_1000", 12), _row("ddpm_cosine", "ddpm_1000", 8)]
    assert claims.linear_beats_cosine(flipped, "ddpm_1000").verdict == claims.CONTRADICTS
    table2 = [_row("m", "ddpm_50", 90), _row("m", "ddpm_1000", 10), _row("m", "ddim_50", 11), _row("m", "ddim_1000", 10)]
    verdicts = claims.check("table2", table2)
    assert [v.verdict for v in verdicts] == [claims.UNRESOLVED, claims.SUPPORTS, claims.UNRESOLVED]  # no times
    # NCSN against each other model's best row: m's best is 10, so a broken ddpm_50 (90) does not count
    ncsn = claims.check("ncsn", [_row("ncsn", "ncsn_annealed_langevin", 30)], table2)
    assert ncsn[0].verdict == claims.SUPPORTS and "ddpm_50" not in ncsn[0].evidence
    ncsn = claims.check("ncsn", [_row("ncsn", "ncsn_annealed_langevin", 30)], table2 + [_row("sde", "pc", 40)])
    assert ncsn[0].verdict == claims.CONTRADICTS  # the sde model's best (40) is worse
    ncsn = claims.check("ncsn", [_row("ncsn", "ncsn_annealed_langevin", 10.5)], table2)
    assert ncsn[0].verdict == claims.UNRESOLVED
    assert [r["row"] for r in claims.best_rows(table2 + [_row("sde", "pc", 40)])] == ["ddpm_1000", "pc"]


def test_sde_quality_and_cost():
    sde = [_row("ncsnpp_ve", "score_sde_ve_pc", 5, seconds=4.0), _row("ncsnpp_ve", "heun_20", 6, seconds=0.1)]
    others = [_row("ddpm_linear", "ddpm_1000", 9, seconds=1.0), _row("ddpm_linear", "ddim_50", 9.5, seconds=0.05)]
    quality, cost = claims.check("sde", sde, others + sde)
    assert quality.verdict == claims.SUPPORTS and cost.verdict == claims.SUPPORTS and "(4×)" in cost.evidence
    quality, cost = claims.check("sde", [_row("ncsnpp_ve", "score_sde_ve_pc", 12, seconds=0.5)], others)
    assert quality.verdict == claims.CONTRADICTS and cost.verdict == claims.CONTRADICTS


def test_memorization_uses_the_ratios_interval():
    low, high = claims.wilson_interval(50, 100)
    assert low == pytest.approx(0.4038, abs=1e-4) and high == pytest.approx(0.5962, abs=1e-4)  # the textbook value
    assert claims.no_memorization({"run": "r", "sampler": "s", "memorization_ratio": 0.5, "num_samples": 500}).verdict \
        == claims.SUPPORTS
    assert claims.no_memorization({"run": "r", "sampler": "s", "memorization_ratio": 0.99, "num_samples": 500}).verdict \
        == claims.CONTRADICTS
    # ten samples cannot tell new images from copies
    assert claims.no_memorization({"run": "r", "sampler": "s", "memorization_ratio": 0.6, "num_samples": 10}).verdict \
        == claims.UNRESOLVED
    with pytest.raises(ValueError, match="successes"):
        claims.wilson_interval(11, 10)
