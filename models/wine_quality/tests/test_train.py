"""Tests for wine_quality training (needs the plugin's ``train`` extras)."""

from __future__ import annotations

import csv
import json
import math
import random
from pathlib import Path

import pytest

PHYSICO_RANGES = {
    "fixed acidity": (4.0, 15.0),
    "volatile acidity": (0.1, 1.5),
    "citric acid": (0.0, 1.0),
    "residual sugar": (0.6, 30.0),
    "chlorides": (0.01, 0.6),
    "free sulfur dioxide": (1.0, 100.0),
    "total sulfur dioxide": (6.0, 300.0),
    "density": (0.987, 1.004),
    "pH": (2.7, 4.0),
    "sulphates": (0.2, 2.0),
    "alcohol": (8.0, 14.5),
}
N_ROWS = 160
# A tiny space so a whole search takes a second or two.
TINY_SPACE = {"n_estimators": [20, 40], "max_depth": [2, 3], "learning_rate": [0.3]}


@pytest.fixture
def train_mod():
    """The train module, skipping when the training extras are not installed."""
    for name in ("pandas", "sklearn", "xgboost"):
        pytest.importorskip(name)
    return pytest.importorskip("lambda_ml_serve_wine_quality.train")


@pytest.fixture
def wine_csv(tmp_path: Path) -> Path:
    """A small data set in the concatenated format; quality rises with alcohol."""
    rng = random.Random(0)
    path = tmp_path / "wine_small.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*PHYSICO_RANGES, "quality", "color"])
        for i in range(N_ROWS):
            values = {k: round(rng.uniform(lo, hi), 4) for k, (lo, hi) in PHYSICO_RANGES.items()}
            score = 3 + 6 * (values["alcohol"] - 8.0) / 6.5 - values["volatile acidity"]
            quality = min(9, max(3, round(score + rng.gauss(0, 0.5))))
            writer.writerow([*values.values(), quality, "red" if i % 3 == 0 else "white"])
    return path


def quick_train(train_mod, data: Path, output_dir: Path, **kwargs):
    options = {"n_iter": 2, "cv": 2, "seed": 0, "n_jobs": 1, "param_distributions": TINY_SPACE}
    return train_mod.train(data, output_dir, **{**options, **kwargs})


def test_train_writes_model_and_card(train_mod, wine_csv, tmp_path, capsys):
    out = tmp_path / "artifact" / "nested"  # created by train
    card = quick_train(train_mod, wine_csv, out)

    assert sorted(p.name for p in out.iterdir()) == ["model.json", "model_card.json"]
    assert json.loads((out / "model_card.json").read_text()) == card

    n_test = math.ceil(0.25 * N_ROWS)
    assert card["n_test"] == n_test
    assert card["n_train"] == N_ROWS - n_test
    assert card["features"] == list(train_mod.FEATURES)
    assert card["target"] == "quality"
    metrics = card["metrics"]
    for key in ("rmse", "mae", "r2"):
        assert math.isfinite(metrics[key])
    assert 0 < metrics["mae"] <= metrics["rmse"]
    assert metrics["cv_rmse"]["mean"] > 0 and metrics["cv_rmse"]["std"] >= 0
    assert metrics["cv_rmse"]["folds"] == 2
    assert set(card["hyperparameters"]) == set(TINY_SPACE)
    assert card["data"]["file"] == "wine_small.csv"
    assert len(card["data"]["sha256"]) == 64
    assert card["data"]["rows"] == N_ROWS
    for key in ("xgboost_version", "sklearn_version", "trained_at", "split", "model_sha256"):
        assert card[key]
    assert card["trained_at"].endswith("+00:00")
    # The training rows' profile, monitor's reference: every feature, and the predictions.
    assert card["profile"]["rows"] == card["n_train"]
    assert list(card["profile"]["features"]) == list(train_mod.FEATURES)
    assert card["profile"]["predictions"]["count"] == card["n_train"]

    # One progress line per candidate, on stderr.
    err = capsys.readouterr().err
    assert err.count("cv rmse") == 2
    assert "[1/2]" in err and "[2/2]" in err


def test_model_loads_with_feature_names_and_predicts_plausibly(train_mod, wine_csv, tmp_path):
    xgboost = pytest.importorskip("xgboost")
    np = pytest.importorskip("numpy")
    quick_train(train_mod, wine_csv, tmp_path, progress=False)

    booster = xgboost.Booster(model_file=str(tmp_path / "model.json"))
    assert tuple(booster.feature_names) == train_mod.FEATURES

    rows = np.array(
        [
            [6.6, 0.24, 0.28, 1.8, 0.028, 39.0, 132.0, 0.99182, 3.34, 0.46, 11.4, 0, 1],
            [8.7, 0.78, 0.51, 1.7, 0.415, 12.0, 66.0, 0.99623, 3.0, 1.17, 9.2, 1, 0],
        ]
    )
    predicted = booster.predict(xgboost.DMatrix(rows, feature_names=booster.feature_names))
    assert predicted.shape == (2,)
    assert all(2.0 <= p <= 10.0 for p in predicted)


def test_search_sees_only_training_rows(train_mod, wine_csv, tmp_path, monkeypatch):
    from sklearn.model_selection import train_test_split

    seen: list = []

    class RecordingSearch(train_mod.RandomizedSearchCV):
        def fit(self, X, y=None, **params):
            seen.append(set(X.index))
            return super().fit(X, y, **params)

    monkeypatch.setattr(train_mod, "RandomizedSearchCV", RecordingSearch)
    card = quick_train(train_mod, wine_csv, tmp_path, progress=False)

    X, y = train_mod.load_dataset(wine_csv)
    X_train, X_test, _, _ = train_test_split(X, y, test_size=0.25, random_state=2)
    assert seen == [set(X_train.index)]
    assert not seen[0] & set(X_test.index)
    assert card["n_train"] == len(seen[0])
    # The folds' validation rows, as recorded by the scorer, are the training rows too.
    assert card["search"]["rows"] == card["n_train"]


def test_failed_write_keeps_previous_artifacts(train_mod, wine_csv, tmp_path, monkeypatch):
    xgboost = pytest.importorskip("xgboost")
    (tmp_path / "model.json").write_text("previous model\n")
    (tmp_path / "model_card.json").write_text("previous card\n")

    def broken_save(self, fname):
        Path(fname).write_text('{"learner": ')
        raise OSError("disk full")

    monkeypatch.setattr(xgboost.Booster, "save_model", broken_save)
    with pytest.raises(OSError, match="disk full"):
        quick_train(train_mod, wine_csv, tmp_path, progress=False)

    assert (tmp_path / "model.json").read_text() == "previous model\n"
    assert (tmp_path / "model_card.json").read_text() == "previous card\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["model.json", "model_card.json", "wine_small.csv"])


@pytest.mark.parametrize(("n_iter", "cv"), [(0, 2), (2, 1)])
def test_invalid_search_settings(train_mod, wine_csv, tmp_path, n_iter, cv):
    with pytest.raises(ValueError, match="n_iter >= 1 and cv >= 2"):
        train_mod.train(wine_csv, tmp_path, n_iter=n_iter, cv=cv)


def test_cli(train_mod, wine_csv, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--data", str(wine_csv), "--output", str(out), "--n-iter", "1", "--cv", "2", "--quiet"]
    assert train_mod.main(argv) == 0
    captured = capsys.readouterr()
    assert "held-out (40 rows): rmse" in captured.out
    assert "cv rmse" in captured.out
    assert captured.err == ""
    assert (out / "model.json").is_file() and (out / "model_card.json").is_file()


def test_cli_reports_bad_data(train_mod, tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    assert train_mod.main(["--data", str(bad), "--output", str(tmp_path / "out")]) == 1
    assert "bad.csv" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
