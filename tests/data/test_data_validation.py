"""Bad data never trains silently: each malformed input stops with one line naming file, column and
line (and the setting that accepts it), or is repaired as documented with a warning."""

import logging

import numpy as np
import pandas as pd
import pytest

from kronos_exp.data import DataConfig, DataError, build_datasets, load_series

HEADER = "Date,Open,High,Low,Close,Volume\n"


def load(path, **kw):
    return load_series(DataConfig(path=path, **kw))


def error(path, **kw) -> str:
    """The DataError message load_series raises for `path`; it is always one line."""
    with pytest.raises(DataError) as e:
        load(path, **kw)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(path), msg
    return msg


def rows(dates, bar="1,2,0.5,1.5,10"):
    return HEADER + "".join(f"{d},{bar}\n" for d in dates)


# ---------------------------------------------------------------- day-first dates

DAY_FIRST = ["02/01/2024", "03/01/2024", "13/01/2024", "14/01/2024"]  # 13/01 proves day-first


def test_day_first_dates_proven_by_the_file_are_read_day_first_with_a_warning(write_csv, caplog):
    path = write_csv("eu.csv", rows(DAY_FIRST))
    with caplog.at_level(logging.WARNING, logger="kronos_exp.data"):
        [s] = load(path)
    assert [str(t)[:10] for t in s.timestamps] == ["2024-01-02", "2024-01-03", "2024-01-13", "2024-01-14"]
    [r] = caplog.records
    assert r.getMessage() == (
        f"{path}: column 'Date': read dates as day-first: line 4 has '13/01/2024' (no month 13); "
        "set data.dayfirst=true to say so"
    )


def test_month_first_dates_proven_by_the_file_load_quietly(write_csv, caplog):
    path = write_csv("us.csv", rows(["01/02/2024", "01/03/2024", "01/13/2024"]))
    with caplog.at_level(logging.WARNING, logger="kronos_exp.data"):
        [s] = load(path)
    assert [str(t)[:10] for t in s.timestamps] == ["2024-01-02", "2024-01-03", "2024-01-13"]
    assert not caplog.records


def test_ambiguous_dates_are_an_error_offering_the_settings(write_csv):
    path = write_csv("amb.csv", rows(["02/01/2024", "03/01/2024", "04/01/2024"]))
    assert error(path) == (
        f"{path}: column 'Date', lines 2-4: dates such as '02/01/2024' read as day/month or month/day "
        "(no day above 12 tells which); set data.dayfirst=true (2 January) or data.dayfirst=false (1 February), "
        "or data.timestamp_format"
    )
    assert str(load(path, dayfirst=True)[0].timestamps[0])[:10] == "2024-01-02"
    assert str(load(path, dayfirst=False)[0].timestamps[0])[:10] == "2024-02-01"
    assert str(load(path, timestamp_format="%d/%m/%Y")[0].timestamps[0])[:10] == "2024-01-02"


def test_dayfirst_setting_contradicted_by_the_file(write_csv):
    path = write_csv("us.csv", rows(["01/02/2024", "01/13/2024"]))
    assert error(path, dayfirst=True) == (
        f"{path}: column 'Date', line 3: '01/13/2024' has no month 13, so the dates are month-first, "
        "but data.dayfirst=true; set data.dayfirst=false (or null to detect it)"
    )


def test_dates_in_both_orders_in_one_file(write_csv):
    path = write_csv("mixed.csv", rows(["13/01/2024", "01/14/2024"]))
    assert error(path) == (
        f"{path}: column 'Date': line 2 has '13/01/2024' (day first) but line 3 has '01/14/2024' (month first); "
        "use one date order in the file"
    )


def test_day_first_with_times_and_dots(write_csv):
    path = write_csv("de.csv", rows(["02.01.2024 09:30", "13.01.2024 09:35"]))
    [s] = load(path, dayfirst=True)
    assert [str(t)[:16] for t in s.timestamps] == ["2024-01-02T09:30", "2024-01-13T09:35"]


# ---------------------------------------------------------------- timestamp range and zones


def test_timestamp_beyond_nanosecond_range_is_an_error_not_a_wrap(write_csv):
    path = write_csv("far.csv", rows(["2024-01-02", "2300-01-01"]))
    assert error(path) == (
        f"{path}: column 'Date', line 3: timestamp '2300-01-01' is outside the range pandas holds "
        "(1677-09-21 to 2262-04-11; 1 such value(s))"
    )


def test_epoch_seconds_beyond_the_range(write_csv):
    path = write_csv("epoch.csv", "time,open,high,low,close\n1704186000,1,1,1,1\n10413792000,1,1,1,1\n")
    assert error(path).startswith(f"{path}: column 'time', line 3: timestamp 10413792000 is outside the range")


def test_naive_and_zone_aware_timestamps_mixed(write_csv):
    dates = ["2024-01-02 09:30:00", "2024-01-02 09:35:00+01:00", "2024-01-02 09:40:00"]
    path = write_csv("tz.csv", rows(dates))
    assert error(path) == (
        f"{path}: column 'Date': line 3 has a UTC offset or zone ('2024-01-02 09:35:00+01:00') but line 2 has none "
        "('2024-01-02 09:30:00'; 2 of 3 timestamps have none); give every timestamp an offset, or none"
    )


def test_all_zone_aware_or_all_naive_still_load(write_csv):
    aware = write_csv("a.csv", rows(["2024-01-02 09:30Z", "2024-01-02 09:35Z"]))
    assert len(load(aware)[0]) == 2
    dates_only = write_csv("d.csv", rows(["2024-01-02", "2024-01-03"]))  # '-03' is not an offset
    assert len(load(dates_only)[0]) == 2


# ---------------------------------------------------------------- ragged rows


def test_row_with_an_extra_field_names_the_line(write_csv):
    path = write_csv("extra.csv", rows(["2024-01-02", "2024-01-03"]) + "2024-01-04,1,2,0.5,1.5,10,99\n")
    assert error(path) == (
        f"{path}: line 4 has 7 fields but the header has 6 (1 such line(s)); "
        "every row needs one value per header column (leave missing values empty, not out)"
    )


def test_row_with_a_missing_field_names_the_lines(write_csv):
    text = rows(["2024-01-02"]) + "2024-01-03,1,2,0.5,1.5\n2024-01-04,1,2,0.5,1.5,10\n2024-01-05,1,2\n"
    path = write_csv("short.csv", text)
    assert error(path).startswith(f"{path}: line 3 has 5 fields but the header has 6 (2 such line(s), lines 3, 5);")


def test_every_row_one_field_longer_than_the_header_does_not_shift_columns(write_csv):
    # pandas would silently take the first column as the index and shift the others left.
    path = write_csv("shift.csv", "Date,Open,High,Low,Close\n2024-01-02,1,2,0.5,1.5,7\n2024-01-03,1,2,0.5,1.5,7\n")
    assert error(path).startswith(f"{path}: line 2 has 6 fields but the header has 5 (2 such line(s), lines 2, 3);")


def test_quoted_separators_and_blank_lines_are_not_ragged(write_csv):
    text = 'Date,Open,High,Low,Close,Note\n2024-01-02,1,2,0.5,1.5,"a, b"\n\n2024-01-03,1,2,0.5,1.5,c\n'
    assert len(load(write_csv("q.csv", text))[0]) == 2


# ---------------------------------------------------------------- values


def test_boolean_column_is_not_read_as_zero_and_one(write_csv):
    path = write_csv("bool.csv", "Date,Open,High,Low,Close,Volume\n2024-01-02,1,2,0.5,1.5,True\n2024-01-03,1,2,0.5,1.5,False\n")
    assert error(path) == (
        f"{path}: column 'Volume', line 2: True is a true/false value, not a number (2 such value(s)); "
        "map the right column with data.column_map"
    )
    with_gap = write_csv("bool2.csv", "Date,Open,High,Low,Close,Volume\n2024-01-02,1,2,0.5,1.5,\n2024-01-03,1,2,0.5,1.5,FALSE\n")
    assert "column 'Volume', line 3: False is a true/false value" in error(with_gap)


@pytest.mark.parametrize("bad", ["0", "-1.5"])
def test_zero_or_negative_price(write_csv, bad):
    path = write_csv("neg.csv", rows(["2024-01-02"]) + f"2024-01-03,1,2,{bad},1.5,10\n2024-01-04,1,2,0.5,1.5,10\n")
    assert error(path) == (
        f"{path}: column 'Low', line 3: price {float(bad):g} is not positive (1 such value(s)); prices must be > 0"
    )


OHLC_BAD = (
    HEADER
    + "2024-01-02,1,2,0.5,1.5,10\n"
    + "2024-01-03,1,0.5,2,1.5,10\n"  # high below low
    + "2024-01-04,3,2,0.5,1.5,10\n"  # open above high
    + "2024-01-05,1,2,0.5,0.4,10\n"  # close below low
)


def test_high_below_low_or_open_close_outside_the_bar_is_an_error_by_default(write_csv):
    path = write_csv("ohlc.csv", OHLC_BAD)
    assert error(path) == (
        f"{path}: line 3: high 0.5 is below low 2 (3 bar(s) inconsistent: 1 with high < low, 1 open and 1 close "
        "outside [low, high]); fix the data or set data.repair=clip to clip them"
    )


def test_repair_clip_clips_with_a_warning_with_counts(write_csv, caplog):
    path = write_csv("ohlc.csv", OHLC_BAD)
    with caplog.at_level(logging.WARNING, logger="kronos_exp.data"):
        [s] = load(path, repair="clip")
    np.testing.assert_allclose(
        s.values[:, :4], [[1, 2, 0.5, 1.5], [1, 2, 0.5, 1.5], [2, 2, 0.5, 1.5], [1, 2, 0.5, 0.5]]
    )
    [r] = caplog.records
    assert r.getMessage() == (
        f"{path}: data.repair=clip: 1 bar(s) with high < low (swapped), 1 open and 1 close outside [low, high] (clipped)"
    )


def test_inconsistent_bar_within_a_rounding_tolerance_is_accepted(write_csv):
    path = write_csv("tol.csv", rows(["2024-01-02"], bar="1.0000001,1,0.5,0.75,10"))
    assert len(load(path)[0]) == 1


def test_float32_overflow_is_refused_before_training(write_csv):
    path = write_csv("big.csv", rows(["2024-01-02"]) + "2024-01-03,1,1e39,0.5,1.5,10\n")
    msg = error(path)
    assert msg.startswith(f"{path}: column 'high', line 3: value 1e+39 is too large (1 such value(s)); ")
    assert "data.clip=5" in msg and "3.09e+37" in msg


def test_computed_amount_overflow_is_refused(write_csv):
    path = write_csv("amt.csv", rows(["2024-01-02", "2024-01-03"], bar="1e10,2e10,0.5e10,1.5e10,1e30"))
    assert error(path).startswith(f"{path}: column 'amount' (volume x mean price), line 2: value 1.25e+40 is too large")


def test_constant_prices_leave_nothing_to_learn(write_csv, frame):
    df = frame(120)
    df[["open", "high", "low", "close"]] = 7.0
    path = write_csv("flat.csv", df)
    with pytest.raises(DataError) as e:
        build_datasets(DataConfig(path=path, lookback_window=8, predict_window=4))
    assert str(e.value) == (
        f"series 'flat' ({path}): open, high, low and close never change in its 120 rows (7, 7, 7, 7); "
        "nothing to learn from a constant series, remove it"
    )


def test_too_short_error_is_one_line(write_csv, frame):
    path = write_csv("short.csv", frame(30))
    with pytest.raises(DataError) as e:
        build_datasets(DataConfig(path=path, lookback_window=8, predict_window=4))
    assert "\n" not in str(e.value) and "series 'short'" in str(e.value)


# ---------------------------------------------------------------- encodings


def test_utf16_file_names_the_byte_order_mark(write_csv, tmp_path):
    path = tmp_path / "u16.csv"
    path.write_text(rows(["2024-01-02"]), encoding="utf-16")
    with pytest.raises(DataError) as e:
        load(str(path))
    assert str(e.value) == f"{path}: byte 0: a UTF-16 byte-order mark; save the file as UTF-8"


def test_utf16_without_bom_names_the_first_nul_byte(tmp_path):
    path = tmp_path / "u16le.csv"
    path.write_bytes(rows(["2024-01-02"]).encode("utf-16-le"))
    with pytest.raises(DataError) as e:
        load(str(path))
    assert str(e.value) == (
        f"{path}: byte 1 (line 1): a NUL byte; this is a binary or UTF-16 file, not CSV text: save it as UTF-8"
    )


def test_latin1_file_names_the_byte_position_and_line(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes((rows(["2024-01-02"]) + "2024-01-03,1,2,0.5,1.5,10\n").encode() + "# café\n".encode("latin-1"))
    offset = len((rows(["2024-01-02"]) + "2024-01-03,1,2,0.5,1.5,10\n# caf").encode())
    with pytest.raises(DataError) as e:
        load(str(path))
    assert str(e.value) == (
        f"{path}: byte {offset} (line 4): 0xe9 is not UTF-8; save the file as UTF-8 "
        "(e.g. iconv -f latin1 -t utf-8)"
    )


def test_binary_file(tmp_path):
    path = tmp_path / "blob.csv"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(DataError, match=r"blob\.csv: byte 0 \(line 1\): a NUL byte"):
        load(str(path))


# ---------------------------------------------------------------- what keeps working


def test_crlf_semicolons_shuffled_rows_and_epoch_seconds_still_load(write_csv, frame, caplog):
    df = frame(40).sample(frac=1, random_state=1)
    df["timestamps"] = (df["timestamps"] - pd.Timestamp("1970-01-01")) // pd.Timedelta("1s")  # epoch seconds
    path = write_csv("x.csv", "")
    df.to_csv(path, sep=";", index=False, lineterminator="\r\n")
    with caplog.at_level(logging.WARNING, logger="kronos_exp.data"):
        [s] = load(path)
    assert len(s) == 40 and (np.diff(s.timestamps) > np.timedelta64(0)).all()
    assert str(s.timestamps[0])[:16] == "2024-01-02T09:30"
    assert "sorted them by timestamp" in caplog.text


def test_nan_burst_is_still_forward_filled(write_csv, frame, caplog):
    df = frame(40)
    df.loc[10:14, ["open", "close"]] = np.nan
    with caplog.at_level(logging.WARNING, logger="kronos_exp.data"):
        [s] = load(write_csv("gap.csv", df))
    assert len(s) == 40 and np.isfinite(s.values).all()
    assert "5 row(s) with missing values" in caplog.text


def test_dayfirst_leaves_year_first_dates_alone(write_csv):
    # pandas' format inference with dayfirst=True reads 2024-01-02 as %Y-%d-%m (1 February)
    [s] = load(write_csv("iso.csv", rows(["2024-01-02", "2024-01-03", "2024-01-13"])), dayfirst=True)
    assert [str(t)[:10] for t in s.timestamps] == ["2024-01-02", "2024-01-03", "2024-01-13"]


def test_values_that_float32_rounds_to_zero_are_refused(write_csv):
    path = write_csv("tiny.csv", rows(["2024-01-02", "2024-01-03"], bar="1,2,1e-58,1.5,10"))
    assert error(path).startswith(f"{path}: column 'low', line 2: value 1e-58 is too small (2 such value(s)); ")
