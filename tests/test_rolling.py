"""Walk-forward folds: contiguous out-of-sample tests, checked segments, bad blocks refused by key."""

from __future__ import annotations

import pandas as pd
import pytest

from storm_bt.data.calendar import nyse_sessions
from storm_bt.workflows.rolling import RollingSpec, rolling_folds

CALENDAR = nyse_sessions(pd.Timestamp("2008-04-01"), pd.Timestamp("2021-03-31"))


def test_yearly_expanding_folds_cover_2012_to_the_data_end_once():
    folds = rolling_folds(RollingSpec.from_dict({"first_test": "2012-01-01", "step": "yearly"}), CALENDAR)
    assert [f.test[0].year for f in folds] == list(range(2012, 2022))
    assert folds[0].test == (pd.Timestamp("2012-01-03"), pd.Timestamp("2012-12-31"))
    assert folds[-1].test == (pd.Timestamp("2021-01-04"), pd.Timestamp("2021-03-31"))
    tested = pd.DatetimeIndex([d for f in folds for d in CALENDAR[(CALENDAR >= f.test[0]) & (CALENDAR <= f.test[1])]])
    assert tested.is_unique and tested.equals(CALENDAR[CALENDAR >= pd.Timestamp("2012-01-03")])
    for fold in folds:
        assert fold.train[0] == CALENDAR[0]  # expanding
        valid = CALENDAR[(CALENDAR >= fold.valid[0]) & (CALENDAR <= fold.valid[1])]
        assert len(valid) == 252
        assert ((CALENDAR > fold.valid[1]) & (CALENDAR < fold.test[0])).sum() == 2  # the embargo
        assert ((CALENDAR > fold.train[1]) & (CALENDAR < fold.valid[0])).sum() == 2


def test_sliding_window_in_sessions():
    spec = RollingSpec.from_dict(
        {"first_test": "2019-01-01", "step": 126, "window": "sliding", "train_sessions": 756, "embargo": 5}
    )
    folds = rolling_folds(spec, CALENDAR)
    assert len(folds) == 5
    for fold in folds:
        assert ((CALENDAR >= fold.train[0]) & (CALENDAR <= fold.train[1])).sum() == 756
        assert ((CALENDAR >= fold.test[0]) & (CALENDAR <= fold.test[1])).sum() <= 126


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"first_test": "2009-01-01"}, r"fold testing from 2009-01-02 has 0 training sessions.*min_train_sessions"),
        ({"first_test": "2012-01-01", "step": 2}, r"rolling.step of 2 sessions must be larger than the embargo"),
        ({"first_test": "2030-01-01"}, r"rolling.first_test 2030-01-01 is after the data's last session 2021-03-31"),
        ({"first_test": "2012-01-01", "last_test": "2030-01-01"}, r"rolling.last_test 2030-01-01 is after"),
        ({"first_test": "2012-01-01", "step": "fortnightly"}, r"rolling.step 'fortnightly' is neither"),
        ({"first_test": "2012-01-01", "window": "sliding"}, r"train_sessions is required for a sliding window"),
        ({"first_test": "2012-01-01", "valid_sessions": 0}, r"rolling.valid_sessions must be a positive"),
        ({"first_test": "2012-01-01", "folds": 3}, r"rolling: unknown keys \['folds'\]"),
        ({"step": "yearly"}, r"rolling: missing keys \['first_test'\]"),
    ],
)
def test_a_block_without_a_valid_fold_is_refused_by_key(block, message):
    with pytest.raises(ValueError, match=message):
        rolling_folds(RollingSpec.from_dict(block), CALENDAR)
