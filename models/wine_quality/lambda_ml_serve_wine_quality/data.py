"""Data preparation for the wine_quality model (training-only tooling).

The source data is the UCI Wine Quality data set: one ``;``-separated file per
colour (``winequality-red.csv``, ``winequality-white.csv``).  :func:`concat_uci`
turns them into a single comma-separated file with a ``color`` column, and
:func:`load_dataset` turns that file into the model's feature matrix and target.

Command line::

    python -m lambda_ml_serve_wine_quality.data RED.csv WHITE.csv OUT.csv [--force]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd

#: The physico-chemical measurements, as named in the UCI files.
PHYSICO_CHEMICAL: tuple[str, ...] = (
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
)

#: One-hot columns derived from ``color``, in the order of :data:`COLORS`.
COLORS: tuple[str, ...] = ("red", "white")
COLOR = "color"
COLOR_FEATURES: tuple[str, ...] = tuple(f"{COLOR}_{c}" for c in COLORS)

#: The model's input features, in the model's feature order.
FEATURES: tuple[str, ...] = (*PHYSICO_CHEMICAL, *COLOR_FEATURES)

#: The value the model predicts (a sensory score from 0 to 10).
TARGET = "quality"

#: Columns of a UCI per-colour file.
UCI_COLUMNS: tuple[str, ...] = (*PHYSICO_CHEMICAL, TARGET)

#: Columns of the concatenated file, in the order they are written.
CONCAT_COLUMNS: tuple[str, ...] = (*UCI_COLUMNS, COLOR)


def _check_columns(path: Path, found: Sequence[str], expected: Sequence[str]) -> None:
    """Raise ``ValueError`` if ``found`` is not the same set of columns as ``expected``."""
    missing = [c for c in expected if c not in found]
    unexpected = [c for c in found if c not in expected]
    duplicated = sorted({c for c in found if list(found).count(c) > 1})
    problems = []
    if missing:
        problems.append(f"missing column(s) {missing}")
    if unexpected:
        problems.append(f"unexpected column(s) {unexpected}")
    if duplicated:
        problems.append(f"duplicated column(s) {duplicated}")
    if problems:
        raise ValueError(f"{path}: {'; '.join(problems)}; expected columns {list(expected)}")


def _check_values(path: Path, frame: pd.DataFrame, numeric: Sequence[str]) -> pd.DataFrame:
    """Coerce ``numeric`` columns to floats, raising ``ValueError`` on blanks or text."""
    frame = frame.copy()
    for column in numeric:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna()
        if bad.any():
            # +2: one for the header line, one because file lines count from 1.
            line = int(bad.to_numpy().nonzero()[0][0]) + 2
            raise ValueError(
                f"{path}: column {column!r} has {int(bad.sum())} missing or non-numeric "
                f"value(s) (first on line {line}); expected numbers"
            )
        frame[column] = values.astype("float64")
    return frame


def _check_target(path: Path, frame: pd.DataFrame) -> pd.DataFrame:
    """Make the target an integer column, raising ``ValueError`` if it holds fractions."""
    if (frame[TARGET] % 1 != 0).any():
        raise ValueError(f"{path}: column {TARGET!r} has non-integer values; expected integers")
    frame[TARGET] = frame[TARGET].astype("int64")
    return frame


def _read_uci(path: Path) -> pd.DataFrame:
    """Read one UCI per-colour file and validate it."""
    frame = pd.read_csv(path, sep=";")
    _check_columns(path, list(frame.columns), UCI_COLUMNS)
    if frame.empty:
        raise ValueError(f"{path}: no data rows; expected at least one wine")
    frame = _check_values(path, frame, UCI_COLUMNS)
    return _check_target(path, frame).loc[:, list(UCI_COLUMNS)]


def concat_uci(red_csv: Path, white_csv: Path) -> pd.DataFrame:
    """Concatenate the UCI red and white files into one frame with a ``color`` column.

    Exact duplicate rows are dropped within each colour (the first is kept), but a
    row that appears in both files is kept once per colour: the same measurements
    from a red and a white wine are two different wines.  Rows are red first, then
    white, each in file order; the index is ``0..n-1``.

    Raises:
        ValueError: a file lacks a column, has an extra one, or has non-numeric values.
    """
    parts = []
    for color, path in zip(COLORS, (Path(red_csv), Path(white_csv)), strict=True):
        frame = _read_uci(path).drop_duplicates(keep="first")
        frame[COLOR] = color
        parts.append(frame)
    return pd.concat(parts, ignore_index=True).loc[:, list(CONCAT_COLUMNS)]


def load_dataset(path: Path) -> tuple[pd.DataFrame, pd.Series]:
    """Read a concatenated wine file and return the features ``X`` and target ``y``.

    ``X`` has the columns of :data:`FEATURES` in that order, with ``color`` one-hot
    encoded into ``color_red``/``color_white`` (0/1 integers); ``y`` is ``quality``.
    Rows keep their file order and a ``0..n-1`` index.

    Raises:
        ValueError: the file lacks a column, has an extra one, has non-numeric
            measurements, or has a colour other than ``red``/``white``.
    """
    path = Path(path)
    frame = pd.read_csv(path)
    _check_columns(path, list(frame.columns), CONCAT_COLUMNS)
    if frame.empty:
        raise ValueError(f"{path}: no data rows; expected at least one wine")
    frame = _check_target(path, _check_values(path, frame, UCI_COLUMNS))
    unknown = sorted(set(frame[COLOR].astype(str)) - set(COLORS))
    if unknown or frame[COLOR].isna().any():
        raise ValueError(
            f"{path}: column {COLOR!r} has unexpected value(s) {unknown or ['<missing>']}; "
            f"expected one of {list(COLORS)}"
        )
    X = frame.loc[:, list(PHYSICO_CHEMICAL)]
    for color, column in zip(COLORS, COLOR_FEATURES, strict=True):
        X[column] = (frame[COLOR] == color).astype("int64")
    return X.loc[:, list(FEATURES)], frame[TARGET]


def _default_file_mode() -> int:
    """The permissions a plain ``open()`` would give a new file under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_output(out: Path, *, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path next to ``out``; on success rename it to ``out``, else delete it.

    A crash or exception part-way through writing therefore leaves ``out`` as it was
    (absent, or the previous complete version), never half-written.  ``suffix`` is the
    temporary file's suffix, for writers that pick a format from the extension.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # Same directory as the target, so the final rename cannot cross filesystems.
    fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        # mkstemp creates the file private to its owner; give it ordinary permissions.
        os.chmod(tmp, _default_file_mode())
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_csv_atomic(frame: pd.DataFrame, out: Path, *, force: bool = False) -> None:
    """Write ``frame`` as CSV to ``out`` via a temporary file, so readers never see half a file.

    Raises:
        FileExistsError: ``out`` exists and ``force`` is false.
    """
    out = Path(out)
    if out.exists() and not force:
        raise FileExistsError(f"{out} already exists; pass --force to overwrite it")
    with atomic_output(out) as tmp:
        frame.to_csv(tmp, index=False)


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: concatenate the UCI red and white files into one CSV."""
    parser = argparse.ArgumentParser(
        prog="python -m lambda_ml_serve_wine_quality.data",
        description="Concatenate the UCI wine quality files (red, then white) into one CSV "
        "with a color column, dropping duplicate rows within each colour.",
    )
    parser.add_argument("red", type=Path, help="winequality-red.csv (';'-separated)")
    parser.add_argument("white", type=Path, help="winequality-white.csv (';'-separated)")
    parser.add_argument("out", type=Path, help="output CSV")
    parser.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    args = parser.parse_args(argv)

    if args.out.exists() and not args.force:
        parser.error(f"{args.out} already exists; pass --force to overwrite it")
    try:
        frame = concat_uci(args.red, args.white)
        write_csv_atomic(frame, args.out, force=args.force)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    counts = frame[COLOR].value_counts()
    print(f"wrote {args.out}: {len(frame)} rows " + ", ".join(f"{counts.get(c, 0)} {c}" for c in COLORS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
