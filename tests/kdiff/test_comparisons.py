"""kdiff.comparisons: which orderings of metric rows are resolved, on hand-made rows."""

import pytest

from kdiff import comparisons


def _row(fid, low, high, kid=None, fid_infinity=None, num_samples=None):
    return {"fid": fid, "fid_low": low, "fid_high": high, "kid": kid, "fid_infinity": fid_infinity,
            "num_samples": num_samples}


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ((10, 8, 12), (20, 15, 25), -1),  # apart, a below
        ((20, 15, 25), (10, 8, 12), 1),  # apart, a above
        ((10, 8, 15), (14, 12, 18), 0),  # overlap
        ((10, 8, 12), (14, 12, 18), 0),  # touching at 12: not apart
        ((10, None, None), (14, 12, 18), None),  # no interval
    ],
)
def test_fid_intervals_order(a, b, expected):
    assert comparisons.fid_intervals_order(_row(*a), _row(*b)) == expected


def test_not_clearly_below_the_baseline():
    baseline = _row(40, 35, 46, fid_infinity=38)
    assert comparisons.not_clearly_below(_row(10, 8, 12, fid_infinity=9), baseline) is None
    # The user's case: FID 80 against the baseline's 40.
    reason = comparisons.not_clearly_below(_row(80, 70, 90), baseline)
    assert reason == "its FID interval [70, 90] is not below the baseline's [35, 46]"
    # Below by its point value, but its interval reaches the baseline's: not clearly below.
    assert "interval [30, 37]" in comparisons.not_clearly_below(_row(33, 30, 37), baseline)
    # Without intervals the point values decide.
    assert comparisons.not_clearly_below(_row(50, None, None), _row(40, None, None)) == (
        "its FID 50 is not below the baseline's 40"
    )
    assert comparisons.not_clearly_below(_row(30, None, None), _row(40, None, None)) is None
    # FID∞, where both have it, must be below too.
    reason = comparisons.not_clearly_below(_row(10, 8, 12, fid_infinity=39), baseline)
    assert reason == "its FID∞ 39 is not below the baseline's 38"
    assert comparisons.not_clearly_below({}, baseline) is None  # nothing to judge


def test_ordering_statements_name_both_rows_and_metrics():
    rows = {
        "ddim_50": _row(12.7, 9.0, 17.4, kid=5.3, fid_infinity=8.8, num_samples=200),
        "ddpm_1000": _row(15.5, 7.0, 30.7, kid=4.3, fid_infinity=10.2, num_samples=100),
        "bad": _row(60.0, 50.0, 70.0, kid=40.0, num_samples=200),
    }
    statements = comparisons.ordering_statements(rows, kid_label="KID (raw)")
    assert [s["kind"] for s in statements] == ["disagreement", "resolved", "resolved", "within_noise"]
    disagreement = statements[0]
    assert disagreement["rows"] == ("ddim_50", "ddpm_1000")
    assert disagreement["text"] == (
        "FID∞ and KID (raw) order ddim_50 and ddpm_1000 differently: FID∞ ranks ddim_50 better "
        "(8.8 against 10.2), KID (raw) ranks ddpm_1000 better (5.3 against 4.3)."
    )
    assert statements[1]["text"] == "ddim_50 below bad by FID: intervals [9, 17.4] and [50, 70] are apart."
    assert statements[2]["rows"] == ("ddpm_1000", "bad")
    assert "(at different sample counts, 100 and 200: FID rises as the count falls)" in statements[2]["text"]
    assert statements[3]["text"] == (
        "ddim_50 and ddpm_1000: FID intervals [9, 17.4] and [7, 30.7] overlap — their order is within noise "
        "(at different sample counts, 200 and 100: FID rises as the count falls)."
    )


def test_raw_fid_orders_only_rows_of_equal_counts():
    """Without FID∞, raw FID against KID is a disagreement at equal counts only."""
    a, b = _row(10, 5, 15, kid=3.0, num_samples=100), _row(12, 6, 18, kid=2.0, num_samples=100)
    kinds = [s["kind"] for s in comparisons.ordering_statements({"a": a, "b": b})]
    assert kinds == ["disagreement", "within_noise"]
    b["num_samples"] = 50
    kinds = [s["kind"] for s in comparisons.ordering_statements({"a": a, "b": b})]
    assert kinds == ["within_noise"]
    # Equal KIDs or equal FIDs are no disagreement; a row without an interval is unresolved.
    same = comparisons.ordering_statements({"a": _row(10, None, None, kid=2.0), "b": _row(12, None, None, kid=2.0)})
    assert [s["kind"] for s in same] == ["within_noise"]
    assert "no FID interval" in same[0]["text"]
    assert comparisons.ordering_statements({"only": a}) == []
