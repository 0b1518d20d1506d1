from __future__ import annotations

import pandas as pd
import pytest

from storm_bt.data.calendar import nyse_sessions
from storm_bt.workflows.segments import Segments

CAL = nyse_sessions("2019-01-02", "2020-12-31")


def _segments(train: tuple[str, str], valid: tuple[str, str], test: tuple[str, str]) -> Segments:
    return Segments.from_config({"train": list(train), "valid": list(valid), "test": list(test)})


def test_carve_is_disjoint_with_embargo():
    seg = Segments.carve(CAL, (0.6, 0.2, 0.2), embargo=2)
    seg.check(CAL, embargo=2)
    assert seg.train[0] == CAL[0] and seg.test[1] == CAL[-1]
    gap = ((CAL > seg.train[1]) & (CAL < seg.valid[0])).sum()
    assert gap == 2


def test_overlap_and_short_embargo_are_rejected():
    seg = _segments(("2019-01-02", "2019-12-31"), ("2019-12-31", "2020-06-30"), ("2020-07-06", "2020-12-31"))
    with pytest.raises(ValueError, match=r"train \(ends 2019-12-31\) and valid \(starts 2019-12-31\) are 0 sessions"):
        seg.check(CAL, embargo=2)
    seg = _segments(("2019-01-02", "2019-12-27"), ("2019-12-31", "2020-06-30"), ("2020-07-06", "2020-12-31"))
    with pytest.raises(ValueError, match=r"1 sessions apart; at least 2 are needed"):
        seg.check(CAL, embargo=2)
    seg.check(CAL, embargo=1)


def test_segments_outside_the_data_or_missing():
    seg = _segments(("2018-01-02", "2019-06-28"), ("2019-07-05", "2019-12-20"), ("2020-01-02", "2020-12-31"))
    with pytest.raises(ValueError, match=r"Segment train 2018-01-02..2019-06-28 is outside the data"):
        seg.check(CAL, embargo=2)
    with pytest.raises(ValueError, match=r"Segments \['test'\] are missing"):
        Segments.from_config({"train": ["2019-01-02", "2019-06-28"], "valid": ["2019-07-05", "2019-12-20"]})
    assert Segments.carve(CAL, (3, 1, 1), embargo=0).to_config()["train"][0] == "2019-01-02"
    assert isinstance(seg.train[0], pd.Timestamp)
