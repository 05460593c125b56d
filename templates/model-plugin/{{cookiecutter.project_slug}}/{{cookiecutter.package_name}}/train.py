{%- set xgb = cookiecutter.backend == "xgboost" -%}
{%- set classification = cookiecutter.task == "classification" -%}
"""Train the {{ cookiecutter.model_name }} model; write it and its model card into the package.

Without data it trains on synthetic rows (a fixed seed; the schema's features, inside their
bounds), so the plugin works end to end from the start. For your own data, pass a CSV file with a
header, one column per feature (named as in schema.py) and a ``target`` column::

    python -m {{ cookiecutter.package_name }}.train                   # synthetic rows
    python -m {{ cookiecutter.package_name }}.train --data rows.csv   # your rows
    lambda-ml-serve train {{ cookiecutter.model_name }} --data rows.csv

A quarter of the rows is held out and scored once, for the model card. Needs the ``train``
extra: ``pip install -e ".[train]"``.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

{% if not xgb -%}
import joblib
{% endif -%}
import numpy as np
import sklearn
{%- if xgb %}
import xgboost
{%- endif %}
{%- if classification %}
from sklearn.datasets import make_classification
{%- if not xgb %}
from sklearn.linear_model import LogisticRegression
{%- endif %}
from sklearn.metrics import accuracy_score, log_loss
{%- else %}
from sklearn.datasets import make_regression
{%- if not xgb %}
from sklearn.ensemble import GradientBoostingRegressor
{%- endif %}
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
{%- endif %}
from sklearn.model_selection import train_test_split
{%- if classification and not xgb %}
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
{%- endif %}

from {{ cookiecutter.package_name }} import __version__
from {{ cookiecutter.package_name }}.plugin import ARTIFACT, CARD
from {{ cookiecutter.package_name }}.schema import FEATURES, {{ cookiecutter.__schema_class }}

TARGET = "target"
SEED = 42
TEST_SIZE = 0.25
SYNTHETIC_ROWS = 600
{%- if classification %}
SYNTHETIC_CLASSES = 3
{%- endif %}


def synthetic_data(rows: int = SYNTHETIC_ROWS, seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """Learnable rows with every feature inside the bounds the schema accepts."""
{%- if classification %}
    Z, y = make_classification(
        n_samples=rows,
        n_features=len(FEATURES),
        n_informative=len(FEATURES),
        n_redundant=0,
        n_classes=SYNTHETIC_CLASSES,
        n_clusters_per_class=1,
        class_sep=1.5,
        random_state=seed,
    )
{%- else %}
    Z, y = make_regression(
        n_samples=rows, n_features=len(FEATURES), n_informative=len(FEATURES), noise=10.0, random_state=seed
    )
{%- endif %}
    lows, highs = np.array([_range(p) for p in _properties()]).T
    unit = (Z - Z.min(axis=0)) / (Z.max(axis=0) - Z.min(axis=0))
    # The middle 90% of each range, so that strict bounds (gt/lt) hold too.
    return lows + (highs - lows) * (0.05 + 0.9 * unit), y


def _properties() -> list[dict[str, Any]]:
    properties = {{ cookiecutter.__schema_class }}.model_json_schema(by_alias=True)["properties"]
    return [properties[name] for name in FEATURES]


def _range(prop: dict[str, Any]) -> tuple[float, float]:
    low = prop.get("minimum", prop.get("exclusiveMinimum", 0.0))
    return low, prop.get("maximum", prop.get("exclusiveMaximum", low + 1.0))


def read_csv(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Features in schema order and the target, from a CSV file with a header row."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in (*FEATURES, TARGET) if c not in (reader.fieldnames or ())]
        if missing:
            raise ValueError(f"{path} has no column(s) {', '.join(missing)}; expected {[*FEATURES, TARGET]}")
        rows = list(reader)
    X = np.array([[float(row[name]) for name in FEATURES] for row in rows])
{%- if classification %}
    y = np.array([row[TARGET] for row in rows])  # class labels, kept as text
{%- else %}
    y = np.array([float(row[TARGET]) for row in rows])
{%- endif %}
    return X, y


{%- if xgb and classification %}


def fit(X: np.ndarray, codes: np.ndarray, n_classes: int) -> xgboost.Booster:
    """Gradient-boosted trees; multi:softprob answers one probability per class for any class count."""
    params = {
        "objective": "multi:softprob",
        "num_class": n_classes,
        "max_depth": 4,
        "eta": 0.1,
        "seed": SEED,
        "nthread": 1,
    }
    # Feature names travel with the model, and lambda-ml-serve checks them against the schema.
    return xgboost.train(params, xgboost.DMatrix(X, label=codes, feature_names=list(FEATURES)), num_boost_round=100)
{%- elif xgb %}


def fit(X: np.ndarray, y: np.ndarray) -> xgboost.Booster:
    """Gradient-boosted trees with squared error."""
    params = {"objective": "reg:squarederror", "max_depth": 4, "eta": 0.1, "seed": SEED, "nthread": 1}
    # Feature names travel with the model, and lambda-ml-serve checks them against the schema.
    return xgboost.train(params, xgboost.DMatrix(X, label=y, feature_names=list(FEATURES)), num_boost_round=200)
{%- elif classification %}


def fit(X: np.ndarray, y: np.ndarray) -> Any:
    """Scaled features into a multinomial logistic regression."""
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, y)
{%- else %}


def fit(X: np.ndarray, y: np.ndarray) -> Any:
    """Gradient-boosted trees, on one thread: quick to train, and to answer a request on Lambda."""
    return GradientBoostingRegressor(n_estimators=200, max_depth=3, random_state=SEED).fit(X, y)
{%- endif %}


def train(data: Path | None = None, output_dir: Path | None = None, *, seed: int = SEED) -> dict[str, Any]:
    """Train on ``data`` (a CSV file) or synthetic rows; write the model and card; return the card.

    ``output_dir`` defaults to this package, where the plugin serves the model from.
    """
    X, y = read_csv(Path(data)) if data else synthetic_data(seed=seed)
{%- if classification %}
    classes, codes = np.unique(y, return_inverse=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, codes, test_size=TEST_SIZE, random_state=seed, stratify=codes
    )
{%- if xgb %}
    model = fit(X_train, y_train, len(classes))
    probabilities = model.inplace_predict(X_test)
{%- else %}
    model = fit(X_train, classes[y_train])
    # predict_proba's columns follow model.classes_, which np.unique sorted the same way.
    probabilities = model.predict_proba(X_test)
{%- endif %}
    metrics = {
        "accuracy": float(accuracy_score(y_test, probabilities.argmax(axis=1))),
        "log_loss": float(log_loss(y_test, probabilities, labels=range(len(classes)))),
    }
{%- else %}
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=TEST_SIZE, random_state=seed)
    model = fit(X_train, y_train)
{%- if xgb %}
    predicted = model.inplace_predict(X_test)
{%- else %}
    predicted = model.predict(X_test)
{%- endif %}
    metrics = {
        "rmse": float(np.sqrt(mean_squared_error(y_test, predicted))),
        "mae": float(mean_absolute_error(y_test, predicted)),
        "r2": float(r2_score(y_test, predicted)),
    }
{%- endif %}

    out = Path(output_dir) if output_dir else Path(__file__).resolve().parent
    out.mkdir(parents=True, exist_ok=True)
{%- if xgb %}
    model.save_model(str(out / ARTIFACT))
{%- else %}
    joblib.dump(model, out / ARTIFACT)
{%- endif %}
    card = {
        "model": "{{ cookiecutter.model_name }}",
        "version": __version__,
        "backend": "{{ cookiecutter.backend }}",
        "task": "{{ cookiecutter.task }}",
        "model_file": ARTIFACT,
{%- if xgb %}
        "estimator": "xgboost.Booster",
{%- else %}
        "estimator": type(model).__name__,
{%- endif %}
        "features": list(FEATURES),
        "target": TARGET,
{%- if classification %}
        "classes": classes.tolist(),
{%- endif %}
        "data": {
            "source": Path(data).name if data else f"synthetic ({SYNTHETIC_ROWS} rows, seed {seed})",
            "rows": len(X),
            "train_rows": len(X_train),
            "test_rows": len(X_test),
        },
        "metrics": metrics,
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scikit-learn": sklearn.__version__,
{%- if xgb %}
            "xgboost": xgboost.__version__,
{%- else %}
            "joblib": joblib.__version__,
{%- endif %}
        },
{%- if not xgb %}
        # The plugin pins these into the image: a pickle loads reliably only where it was written.
        "requirements": [f"scikit-learn=={sklearn.__version__}"],
{%- endif %}
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (out / CARD).write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return card


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="CSV file with the feature columns and a 'target' column")
    parser.add_argument("--output", type=Path, help="folder for the model and card (default: the package)")
    parser.add_argument("--seed", type=int, default=SEED, help="random seed (default: %(default)s)")
    args = parser.parse_args(argv)
    card = train(args.data, args.output, seed=args.seed)
    scores = ", ".join(f"{name} {value:.3f}" for name, value in card["metrics"].items())
    print(
        f"Trained {card['model']} on {card['data']['train_rows']} rows; "
        f"on {card['data']['test_rows']} held-out rows: {scores}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
