"""The training data's reference profile in the model card, for ``lambda-ml-serve monitor``.

``train`` writes it with every new model; this module also regenerates it for the model already
in the package, without training again: the same fixed split gives the same training rows, and the
shipped ``model.json`` predicts them.

Command line::

    python -m lambda_ml_serve_wine_quality.profile --data wine_concat.csv [--output DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lambda_ml_serve.monitor.profile import PROFILE_KEY, feature_kinds, profile_of
from lambda_ml_serve_wine_quality.data import FEATURES, atomic_output, load_dataset
from lambda_ml_serve_wine_quality.schema import WineSample

PACKAGE = Path(__file__).resolve().parent


def training_profile(X_train: Any, predictions: Sequence[float]) -> dict[str, Any]:
    """The profile of the training rows (a DataFrame with :data:`FEATURES`) and the model's predictions on them."""
    columns = {name: X_train[name].tolist() for name in FEATURES}
    return profile_of(columns, feature_kinds(WineSample), [float(p) for p in predictions])


def write_profile(data: Path, output_dir: Path = PACKAGE) -> dict[str, Any]:
    """Recompute the profile of the model in ``output_dir`` on its training rows; rewrite its card."""
    import xgboost
    from sklearn.model_selection import train_test_split

    from lambda_ml_serve_wine_quality.train import CARD_FILE, MODEL_FILE, SPLIT_RANDOM_STATE, TEST_SIZE

    X, y = load_dataset(Path(data))
    X_train, _, _, _ = train_test_split(X, y, test_size=TEST_SIZE, random_state=SPLIT_RANDOM_STATE)
    booster = xgboost.Booster(model_file=str(output_dir / MODEL_FILE))
    predictions = booster.predict(xgboost.DMatrix(X_train[list(FEATURES)], feature_names=list(FEATURES)))
    card = json.loads((output_dir / CARD_FILE).read_text(encoding="utf-8"))
    if card.get("n_train") not in (None, len(X_train)):
        raise ValueError(
            f"{data}: the split gives {len(X_train)} training rows, the card says {card['n_train']}; "
            "pass the data the model was trained on"
        )
    card[PROFILE_KEY] = training_profile(X_train, predictions)
    with atomic_output(output_dir / CARD_FILE, suffix=".json") as tmp:
        tmp.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return card


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="the wine CSV the model was trained on")
    parser.add_argument("--output", type=Path, default=PACKAGE, help="folder with model.json and model_card.json")
    args = parser.parse_args(argv)
    try:
        card = write_profile(args.data, args.output)
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"profile of {card[PROFILE_KEY]['rows']} training rows written to {args.output / 'model_card.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
