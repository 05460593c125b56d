"""The wine data as tabular teams' models see it, and a model case, for the tabular-model tests.

A frame of wine rows with float32-exact numbers (the served batch is float32; the libraries read the
DataFrame's float64), a string category derived from the sugar, a string label, and missing values in
``GAPPY``; and :class:`Case`, one model file with how its library answers a DataFrame of client rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from conftest import SHARED, shared_file

#: Columns with missing values in the training data and in the clients' rows.
GAPPY = ["citric acid", "alcohol"]
COLOURS = ["red", "white"]
SWEETNESS = ["dry", "medium", "sweet"]
GRADES = ["high", "low", "mid"]  # sorted, as a label encoder orders them


def wine_frame(numbers: list[str], rows: int, seed: int) -> pd.DataFrame:
    """``rows`` wine rows drawn with ``seed``: ``numbers`` float32-exact, ``sweetness`` and ``grade``
    added, about 8% of each ``GAPPY`` column missing."""
    frame = pd.read_csv(shared_file(SHARED / "data" / "wine_concat.csv"))
    frame = frame.sample(rows, random_state=seed).reset_index(drop=True)
    frame[numbers] = frame[numbers].astype("float32").astype("float64")
    frame["sweetness"] = pd.cut(frame["residual sugar"], [-1, 4, 12, 1e9], labels=SWEETNESS).astype(str)
    frame["grade"] = frame["quality"].map(lambda q: "low" if q < 6 else "mid" if q < 7 else "high")
    rng = np.random.default_rng(seed)
    for column in GAPPY:
        frame.loc[rng.random(len(frame)) < 0.08, column] = np.nan
    return frame


@dataclass
class Case:
    """One model file, how its library answers a DataFrame, and how it was generated."""

    key: str
    model_file: Path
    #: The library's own answer for a DataFrame of client rows: (labels or values, probabilities or None).
    library: Any
    columns: list[str]
    args: list[str] = field(default_factory=list)
    classes: list[Any] | None = None
    #: Category columns, their categories (the model's order), and whether an unknown one is refused.
    categories: dict[str, list[str]] = field(default_factory=dict)
    refuses_unknown: bool = False
    #: The library takes the category strings as they are (a scikit-learn encoder), not a pandas category.
    strings: bool = False

    @property
    def model(self) -> str:
        return f"tab_{self.key}"

    def frame(self, rows: list[dict]) -> pd.DataFrame:
        """Client rows as the DataFrame the library was trained on (category dtypes, NaN for null)."""
        frame = pd.DataFrame(rows, columns=self.columns)
        for column in self.columns:
            if column in self.categories and self.strings:
                frame[column] = frame[column].astype(object)
            elif column in self.categories:
                # A category the model does not know is missing, as LightGBM and XGBoost re-code it
                # (pandas code -1).
                known = frame[column].where(frame[column].isin(self.categories[column]))
                frame[column] = pd.Categorical(known, categories=self.categories[column])
            else:
                frame[column] = pd.to_numeric(frame[column]).astype("float64")
        return frame
