"""Train the wine_quality XGBoost regressor (training-only tooling).

The rows are split once into a training and a held-out part.  Hyperparameters are
chosen by randomized search with K-fold cross-validation on the training part
only; the held-out part is scored exactly once, by the chosen model, for the model
card.  Outputs ``model.json`` (XGBoost JSON booster carrying the feature names)
and ``model_card.json``.

Command line::

    python -m lambda_ml_serve_wine_quality.train --data wine_concat.csv [--output DIR] [--n-iter N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import sklearn
import xgboost
from scipy.stats import loguniform, randint, uniform
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.model_selection import KFold, RandomizedSearchCV, train_test_split

from lambda_ml_serve_wine_quality.data import FEATURES, TARGET, atomic_output, load_dataset
from lambda_ml_serve_wine_quality.profile import training_profile

MODEL_FILE = "model.json"
CARD_FILE = "model_card.json"

#: The split is fixed (not tied to ``seed``) so held-out metrics stay comparable
#: with earlier models evaluated on the same rows.
TEST_SIZE = 0.25
SPLIT_RANDOM_STATE = 2

DEFAULT_N_ITER = 60
DEFAULT_SEED = 2

OBJECTIVE = "reg:squarederror"


def default_param_distributions() -> dict[str, Any]:
    """The hyperparameter search space (scipy distributions or lists, as sklearn takes them).

    Cross-validation showed the total shrinkage (``n_estimators * learning_rate``)
    matters most on this data: small learning rates with a few hundred to ~1500
    trees of moderate depth, column subsampling and some L2 regularisation.
    """
    return {
        # A serving budget, not only an accuracy search: at most 600 trees of depth <= 6 keep one
        # Lambda request well under a millisecond and 10,000 rows in tens of milliseconds.
        "n_estimators": randint(100, 601),
        "learning_rate": loguniform(0.01, 0.2),
        "max_depth": randint(3, 7),
        "min_child_weight": randint(1, 11),
        "subsample": uniform(0.5, 0.4),  # [0.5, 0.9]
        "colsample_bytree": uniform(0.3, 0.5),  # [0.3, 0.8]
        "gamma": uniform(0.0, 0.5),
        "reg_lambda": loguniform(0.5, 30.0),
        "reg_alpha": loguniform(1e-3, 2.0),
    }


class _ProgressScorer:
    """Negative-RMSE scorer that reports each finished candidate on a stream.

    sklearn calls the scorer once per (candidate, fold) with the fitted estimator;
    grouping calls by the estimator's searched parameters tells which candidate a
    fold belongs to without relying on sklearn's evaluation order.  Only works
    in-process, which is why the search itself runs with ``n_jobs=1``.
    """

    def __init__(self, keys: Sequence[str], folds: int, n_candidates: int, stream: TextIO | None):
        self.keys = tuple(keys)
        self.folds = folds
        self.n_candidates = n_candidates
        self.stream = stream
        self.scores: dict[tuple, list[float]] = {}
        self.finished = 0
        self.best = math.inf
        self.validation_rows: set = set()

    def __call__(self, estimator: Any, X: Any, y: Any) -> float:
        rmse = float(np.sqrt(mean_squared_error(y, estimator.predict(X))))
        self.validation_rows.update(X.index)
        params = estimator.get_params()
        key = tuple((k, params[k]) for k in self.keys)
        fold_scores = self.scores.setdefault(key, [])
        fold_scores.append(rmse)
        # Identical candidates can be sampled twice from discrete spaces, hence modulo.
        if len(fold_scores) % self.folds == 0:
            self._report(key, fold_scores[-self.folds :])
        return -rmse

    def _report(self, key: tuple, fold_scores: list[float]) -> None:
        self.finished += 1
        mean = float(np.mean(fold_scores))
        self.best = min(self.best, mean)
        if self.stream is None:
            return
        width = len(str(self.n_candidates))
        shown = " ".join(f"{k}={_fmt(v)}" for k, v in key)
        print(
            f"[{self.finished:>{width}}/{self.n_candidates}] cv rmse {mean:.4f} "
            f"± {np.std(fold_scores):.4f} (best {self.best:.4f})  {shown}",
            file=self.stream,
            flush=True,
        )


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _plain(value: Any) -> Any:
    """Convert numpy scalars to the Python types ``json`` can write."""
    return value.item() if isinstance(value, np.generic) else value


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _search(
    X_train: Any,
    y_train: Any,
    *,
    param_distributions: Mapping[str, Any],
    n_iter: int,
    cv: int,
    seed: int,
    n_jobs: int,
    progress: bool,
) -> tuple[RandomizedSearchCV, _ProgressScorer]:
    """Run the randomized search on the training split and refit the best candidate on it."""
    stream = sys.stderr if progress else None
    scorer = _ProgressScorer(list(param_distributions), cv, n_iter, stream)
    search = RandomizedSearchCV(
        xgboost.XGBRegressor(objective=OBJECTIVE, random_state=seed, n_jobs=n_jobs),
        param_distributions=dict(param_distributions),
        n_iter=n_iter,
        scoring=scorer,
        cv=KFold(n_splits=cv, shuffle=True, random_state=seed),
        # Parallelism goes to XGBoost's threads; the search stays in-process so the
        # progress scorer sees every fold.
        n_jobs=1,
        refit=True,
        random_state=seed,
        error_score="raise",
    )
    if stream is not None:
        print(
            f"searching {n_iter} candidates x {cv} folds on {len(X_train)} training rows",
            file=stream,
            flush=True,
        )
    search.fit(X_train, y_train)
    return search, scorer


def _held_out_metrics(model: Any, X_test: Any, y_test: Any) -> dict[str, float]:
    predicted = model.predict(X_test)
    return {
        "rmse": float(np.sqrt(mean_squared_error(y_test, predicted))),
        "mae": float(mean_absolute_error(y_test, predicted)),
        "r2": float(r2_score(y_test, predicted)),
    }


def _write_outputs(booster: xgboost.Booster, card: dict[str, Any], output_dir: Path) -> None:
    """Write the model then its card, each atomically; the card records the model's hash."""
    output_dir.mkdir(parents=True, exist_ok=True)
    model_path = output_dir / MODEL_FILE
    # XGBoost picks the format from the extension, so the temporary file must end in .json.
    with atomic_output(model_path, suffix=".json") as tmp:
        booster.save_model(tmp)
        card["model_sha256"] = _sha256(tmp)
    with atomic_output(output_dir / CARD_FILE, suffix=".json") as tmp:
        tmp.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")


def train(
    data: Path,
    output_dir: Path,
    *,
    n_iter: int = DEFAULT_N_ITER,
    cv: int = 5,
    seed: int = DEFAULT_SEED,
    n_jobs: int = 2,
    progress: bool = True,
    param_distributions: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Tune, train and evaluate the wine quality regressor; write ``model.json`` and its card.

    Args:
        data: concatenated wine CSV (see :func:`~lambda_ml_serve_wine_quality.data.load_dataset`).
        output_dir: where ``model.json`` and ``model_card.json`` go (created if needed).
        n_iter: number of hyperparameter candidates to try.
        cv: number of cross-validation folds within the training split.
        seed: seeds the folds, the candidate sampling and XGBoost's subsampling.
        n_jobs: XGBoost threads.
        progress: report each finished candidate on stderr.
        param_distributions: replaces :func:`default_param_distributions` (e.g. a tiny
            space for tests).

    Returns:
        The model card, as written to ``model_card.json``.
    """
    if n_iter < 1 or cv < 2:
        raise ValueError(f"need n_iter >= 1 and cv >= 2, got n_iter={n_iter}, cv={cv}")
    data, output_dir = Path(data), Path(output_dir)
    space = default_param_distributions() if param_distributions is None else param_distributions
    started = time.monotonic()

    X, y = load_dataset(data)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=TEST_SIZE, random_state=SPLIT_RANDOM_STATE)
    search, scorer = _search(
        X_train,
        y_train,
        param_distributions=space,
        n_iter=n_iter,
        cv=cv,
        seed=seed,
        n_jobs=n_jobs,
        progress=progress,
    )
    best = search.best_estimator_
    # The only use of the held-out rows: scoring the already chosen, already fitted model.
    metrics = _held_out_metrics(best, X_test, y_test)

    booster = best.get_booster()
    booster.feature_names = list(FEATURES)
    profile = training_profile(X_train, best.predict(X_train[list(FEATURES)]))
    i = search.best_index_
    card: dict[str, Any] = {
        "model": "wine_quality",
        "model_file": MODEL_FILE,
        "model_format": "xgboost-json",
        "estimator": "xgboost.XGBRegressor",
        "objective": OBJECTIVE,
        "features": list(FEATURES),
        "target": TARGET,
        # rmse/mae/r2: held-out split; cv_rmse: the chosen candidate across training folds.
        "metrics": {
            **metrics,
            "cv_rmse": {
                "mean": float(-search.cv_results_["mean_test_score"][i]),
                "std": float(search.cv_results_["std_test_score"][i]),
                "folds": cv,
            },
        },
        "hyperparameters": {k: _plain(v) for k, v in sorted(search.best_params_.items())},
        "n_train": len(X_train),
        "n_test": len(X_test),
        "split": {
            "description": "sklearn.model_selection.train_test_split over the rows in file "
            "order; hyperparameters tuned by K-fold cross-validation on the training rows "
            "only; the test rows scored once, by the final model",
            "test_size": TEST_SIZE,
            "random_state": SPLIT_RANDOM_STATE,
            "shuffle": True,
        },
        "search": {
            "method": "sklearn.model_selection.RandomizedSearchCV",
            "scoring": "neg_root_mean_squared_error",
            "n_iter": n_iter,
            "cv": f"KFold(n_splits={cv}, shuffle=True, random_state={seed})",
            "seed": seed,
            "rows": len(scorer.validation_rows),
        },
        "data": {"file": data.name, "sha256": _sha256(data), "rows": len(X)},
        "xgboost_version": xgboost.__version__,
        "sklearn_version": sklearn.__version__,
        "trained_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "training_seconds": round(time.monotonic() - started, 1),
        # The training rows' distributions and the model's predictions on them: monitor's reference.
        "profile": profile,
    }
    _write_outputs(booster, card, output_dir)
    return card


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: train on ``--data`` and write the model next to this module by default."""
    parser = argparse.ArgumentParser(
        prog="python -m lambda_ml_serve_wine_quality.train",
        description="Tune and train the wine quality XGBoost regressor.",
    )
    parser.add_argument("--data", type=Path, required=True, help="concatenated wine CSV")
    parser.add_argument(
        "--output",
        type=Path,
        default=Path(__file__).resolve().parent,
        help="output directory (default: the package directory)",
    )
    parser.add_argument("--n-iter", type=int, default=DEFAULT_N_ITER, help="search candidates")
    parser.add_argument("--cv", type=int, default=5, help="cross-validation folds")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--n-jobs", type=int, default=2, help="XGBoost threads")
    parser.add_argument("--quiet", action="store_true", help="no per-candidate progress")
    args = parser.parse_args(argv)

    try:
        card = train(
            args.data,
            args.output,
            n_iter=args.n_iter,
            cv=args.cv,
            seed=args.seed,
            n_jobs=args.n_jobs,
            progress=not args.quiet,
        )
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    metrics = card["metrics"]
    cv_rmse = metrics["cv_rmse"]
    print(
        f"held-out ({card['n_test']} rows): rmse {metrics['rmse']:.4f}  "
        f"mae {metrics['mae']:.4f}  r2 {metrics['r2']:.4f}\n"
        f"cv rmse ({card['n_train']} training rows): {cv_rmse['mean']:.4f} ± {cv_rmse['std']:.4f}\n"
        f"hyperparameters: {json.dumps(card['hyperparameters'])}\n"
        f"wrote {args.output / MODEL_FILE} and {args.output / CARD_FILE} "
        f"in {card['training_seconds']}s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
