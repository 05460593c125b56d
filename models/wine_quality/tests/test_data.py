"""Tests for the wine_quality data preparation (needs the plugin's ``train`` extras)."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

PHYSICO = [
    "fixed acidity",
    "volatile acidity",
    "citric acid",
    "residual sugar",
    "chlorides",
    "free sulfur dioxide",
    "total sulfur dioxide",
    "density",
    "pH",
    "sulphates",
    "alcohol",
]
UCI_HEADER = [*PHYSICO, "quality"]

# Rows as they appear in the UCI files (integers written without a decimal point).
A = ["7.4", "0.7", "0", "1.9", "0.076", "11", "34", "0.9978", "3.51", "0.56", "9.4", "5"]
B = ["7.8", "0.88", "0", "2.6", "0.098", "25", "67", "0.9968", "3.2", "0.68", "9.8", "5"]
C = ["11.2", "0.28", "0.56", "1.9", "0.075", "17", "60", "0.998", "3.16", "0.58", "9.8", "6"]
D = ["7", "0.27", "0.36", "20.7", "0.045", "45", "170", "1.001", "3", "0.45", "8.8", "6"]
E = ["6.3", "0.3", "0.34", "1.6", "0.049", "14", "132", "0.994", "3.3", "0.49", "9.5", "6"]

# Red: A twice (a duplicate), B, C.  White: D, A (also red: kept once per colour), E, D again.
RED_ROWS = [A, B, A, C]
WHITE_ROWS = [D, A, E, D]


@pytest.fixture
def data():
    """The data module, skipping when the training extras (pandas) are not installed."""
    pytest.importorskip("pandas")
    return pytest.importorskip("lambda_ml_serve_wine_quality.data")


def write_uci(path: Path, rows: list[list[str]], header: list[str] = UCI_HEADER) -> Path:
    """Write a file like the UCI originals: ';'-separated with quoted header names."""
    with open(path, "w", newline="") as handle:
        handle.write(";".join(f'"{name}"' for name in header) + "\n")
        for row in rows:
            handle.write(";".join(row) + "\n")
    return path


@pytest.fixture
def uci_files(tmp_path: Path) -> tuple[Path, Path]:
    return (
        write_uci(tmp_path / "winequality-red.csv", RED_ROWS),
        write_uci(tmp_path / "winequality-white.csv", WHITE_ROWS),
    )


def read_rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def test_features_order(data):
    features = data.FEATURES
    assert features == (*PHYSICO, "color_red", "color_white")
    assert data.TARGET == "quality"


def test_concat_uci_drops_duplicates_within_each_colour_only(data, uci_files):
    frame = data.concat_uci(*uci_files)

    assert list(frame.columns) == [*UCI_HEADER, "color"]
    assert list(frame["color"]) == ["red"] * 3 + ["white"] * 3
    assert list(frame.index) == list(range(6))
    # A appears once as red and once as white; within-colour repeats are gone.
    assert list(frame["fixed acidity"]) == [7.4, 7.8, 11.2, 7.0, 7.4, 6.3]
    assert list(frame["quality"]) == [5, 5, 6, 6, 5, 6]
    assert str(frame["quality"].dtype) == "int64"


def test_cli_writes_csv_and_load_dataset_encodes_colour(data, uci_files, tmp_path, capsys):
    out = tmp_path / "out" / "wine_concat.csv"
    assert data.main([str(uci_files[0]), str(uci_files[1]), str(out)]) == 0
    assert "6 rows" in capsys.readouterr().out

    rows = read_rows(out)
    # Same column order and number formatting as the shared wine_concat.csv.
    assert rows[0] == [*UCI_HEADER, "color"]
    assert len(rows) == 1 + 6
    assert rows[1] == ["7.4", "0.7", "0.0", "1.9", "0.076", "11.0", "34.0", "0.9978", "3.51", "0.56", "9.4", "5", "red"]

    X, y = data.load_dataset(out)
    assert tuple(X.columns) == data.FEATURES
    assert X.shape == (6, 13)
    assert list(X["color_red"]) == [1, 1, 1, 0, 0, 0]
    assert list(X["color_white"]) == [0, 0, 0, 1, 1, 1]
    assert all(str(X[c].dtype) == "int64" for c in ("color_red", "color_white"))
    assert all(str(X[c].dtype) == "float64" for c in PHYSICO)
    assert y.name == "quality"
    assert list(y) == [5, 5, 6, 6, 5, 6]
    # The atomic write leaves no temporary file behind.
    assert sorted(os.listdir(out.parent)) == ["wine_concat.csv"]


def test_cli_refuses_to_overwrite_without_force(data, uci_files, tmp_path, capsys):
    out = tmp_path / "wine_concat.csv"
    out.write_text("keep me\n")
    with pytest.raises(SystemExit) as excinfo:
        data.main([str(uci_files[0]), str(uci_files[1]), str(out)])
    assert excinfo.value.code != 0
    assert "--force" in capsys.readouterr().err
    assert out.read_text() == "keep me\n"

    assert data.main([str(uci_files[0]), str(uci_files[1]), str(out), "--force"]) == 0
    assert read_rows(out)[0][-1] == "color"


def test_failed_write_leaves_nothing_behind(data, uci_files, tmp_path, monkeypatch):
    out = tmp_path / "wine_concat.csv"
    out.write_text("previous complete version\n")
    frame = data.concat_uci(*uci_files)

    def broken_to_csv(self, path, **kwargs):
        Path(path).write_text("half a fi")
        raise OSError("disk full")

    monkeypatch.setattr(type(frame), "to_csv", broken_to_csv)
    with pytest.raises(OSError, match="disk full"):
        data.write_csv_atomic(frame, out, force=True)
    assert out.read_text() == "previous complete version\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["wine_concat.csv", "winequality-red.csv", "winequality-white.csv"]
    )


def test_uci_file_missing_column_is_a_clear_error(data, tmp_path):
    red = write_uci(
        tmp_path / "red.csv", [r[:-2] + r[-1:] for r in RED_ROWS], header=[h for h in UCI_HEADER if h != "alcohol"]
    )
    white = write_uci(tmp_path / "white.csv", WHITE_ROWS)
    with pytest.raises(ValueError, match=r"red\.csv.*missing column.*'alcohol'.*expected columns"):
        data.concat_uci(red, white)


def test_uci_file_with_comma_separator_is_a_clear_error(data, tmp_path):
    red = tmp_path / "red.csv"
    red.write_text(",".join(UCI_HEADER) + "\n" + ",".join(A) + "\n")
    white = write_uci(tmp_path / "white.csv", WHITE_ROWS)
    with pytest.raises(ValueError, match=r"red\.csv.*missing column"):
        data.concat_uci(red, white)


def test_cli_reports_malformed_input(data, tmp_path, capsys):
    red = write_uci(tmp_path / "red.csv", [["x", *A[1:]]])
    white = write_uci(tmp_path / "white.csv", WHITE_ROWS)
    out = tmp_path / "out.csv"
    assert data.main([str(red), str(white), str(out)]) == 1
    err = capsys.readouterr().err
    assert "red.csv" in err and "'fixed acidity'" in err and "line 2" in err
    assert not out.exists()


def write_concat(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.mark.parametrize(
    ("header", "row", "pattern"),
    [
        (
            [*UCI_HEADER],
            [*A],
            r"bad\.csv.*missing column.*'color'.*expected columns \['fixed acidity'",
        ),
        (
            [*UCI_HEADER, "color", "vintage"],
            [*A, "red", "1999"],
            r"bad\.csv.*unexpected column.*'vintage'",
        ),
        (
            [*UCI_HEADER, "color"],
            [*A, "rose"],
            r"bad\.csv.*'color'.*unexpected value.*'rose'.*expected one of \['red', 'white'\]",
        ),
        (
            [*UCI_HEADER, "color"],
            [*A[:-2], "", "5", "red"],
            r"bad\.csv.*'alcohol'.*missing or non-numeric.*line 2",
        ),
        (
            [*UCI_HEADER, "color"],
            [*A[:-1], "5.5", "red"],
            r"bad\.csv.*'quality'.*non-integer",
        ),
    ],
    ids=["missing-color", "extra-column", "unknown-colour", "blank-value", "fractional-target"],
)
def test_load_dataset_malformed_file_is_a_clear_error(data, tmp_path, header, row, pattern):
    bad = write_concat(tmp_path / "bad.csv", header, [row])
    with pytest.raises(ValueError, match=pattern):
        data.load_dataset(bad)


def test_load_dataset_empty_file_is_a_clear_error(data, tmp_path):
    empty = write_concat(tmp_path / "bad.csv", [*UCI_HEADER, "color"], [])
    with pytest.raises(ValueError, match=r"bad\.csv.*no data rows"):
        data.load_dataset(empty)


def shared_wine_concat() -> Path:
    """The shared data set: ``$LAMBDA_ML_SERVE_SHARED/data``, by default ``shared/`` beside the repo.

    Same convention as the framework's tests (the variable names the shared folder).
    """
    repo = Path(__file__).resolve().parents[3]
    shared = Path(os.environ.get("LAMBDA_ML_SERVE_SHARED", repo.parent / "shared"))
    return shared / "data" / "wine_concat.csv"


def test_shared_wine_concat(data):
    path = shared_wine_concat()
    if not path.is_file():
        pytest.skip(f"{path} is not there (set LAMBDA_ML_SERVE_SHARED to the shared folder)")
    X, y = data.load_dataset(path)
    assert len(X) == len(y) == 5320
    assert int(X["color_red"].sum()) == 1359
    assert int(X["color_white"].sum()) == 3961
    assert tuple(X.columns) == data.FEATURES
    assert set(y) <= set(range(11))
