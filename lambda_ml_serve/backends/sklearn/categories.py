"""HistGradientBoosting's own categorical features, read from the fitted model's attributes (imports nothing).

scikit-learn >= 1.4 fits them from a DataFrame's ``category`` columns (``categorical_features="from_dtype"``)
or from ``categorical_features``, and keeps their categories in a preprocessor: an ``OrdinalEncoder``
whose codes are what the trees' bitsets hold.
"""

from __future__ import annotations

from typing import Any

HISTOGRAM = ("HistGradientBoostingRegressor", "HistGradientBoostingClassifier")


def native_categories(estimator: Any) -> dict[int, list[Any]]:
    """A HistGradientBoosting model's own categorical features: input column -> its categories, in the
    order of the codes its trees split on (its ``OrdinalEncoder``'s ``categories_``, NaN left out).

    Empty for any other estimator, and for one without categorical features. Reads attributes only.
    """
    mask = getattr(estimator, "is_categorical_", None)
    preprocessor = getattr(estimator, "_preprocessor", None)
    if type(estimator).__name__ not in HISTOGRAM or mask is None or preprocessor is None:
        return {}
    encoder = preprocessor.named_transformers_["encoder"]
    columns = [j for j, categorical in enumerate(mask) if categorical]
    found = {}
    for j, fitted in zip(columns, encoder.categories_, strict=True):
        values = list(fitted)
        if values and isinstance(values[-1], float) and values[-1] != values[-1]:
            values = values[:-1]  # NaN, which the encoder lists last when it saw one: a missing value
        found[j] = values
    return found
