"""console.table: the one text table every script and benchmark prints."""

from __future__ import annotations

import pytest

from finreason import console


@pytest.mark.parametrize(
    ("rows", "columns", "kwargs", "expected"),
    [
        # the first column (the row's name) left-aligned, numbers right-aligned
        ([("zero-shot", "0.0%"), ("SFT", "19.0%")], ("stage", "strict"), {}, ["stage     strict", "zero-shot   0.0%", "SFT        19.0%"]),
        # None is shown as "-", whatever the column
        ([("a", None)], ("name", "value"), {}, ["name value", "a        -"]),
        # several left columns, and no trailing blanks on any line
        ([("x", "ok", "a long detail"), ("yy", "FAIL", "d")], ("check", "status", "detail"), {"left": ("check", "status", "detail")},
         ["check status detail", "x     ok     a long detail", "yy    FAIL   d"]),
        # a title goes above the header
        ([("a", 1)], ("k", "v"), {"title": "T: n=1"}, ["T: n=1", "k v", "a 1"]),
        # no rows: the header alone, never pandas' "Empty DataFrame"
        ([], ("step", "time"), {}, ["step time"]),
    ],
)
def test_table(rows, columns, kwargs, expected):
    assert console.table(rows, columns, **kwargs).splitlines() == expected
