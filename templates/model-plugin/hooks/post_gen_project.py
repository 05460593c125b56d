"""Train the new model on synthetic rows, so the plugin ships a working model from the start.

Training needs lambda-ml-serve and scikit-learn (and xgboost for the xgboost backend) in the Python
that runs the template. Without them the project is still complete: its README says how to train,
and its tests train when no model is there.
"""

import importlib.util
import subprocess
import sys

PACKAGE = "{{ cookiecutter.package_name }}"
BACKEND = "{{ cookiecutter.backend }}"
NEEDED = ("lambda_ml_serve", "sklearn", "xgboost" if BACKEND == "xgboost" else "joblib")

missing = [name for name in NEEDED if importlib.util.find_spec(name) is None]
if missing:
    print(
        f"Not trained: {', '.join(missing)} cannot be imported here. Train with:\n"
        '    pip install -e ".[train,test]"\n'
        f"    python -m {PACKAGE}.train"
    )
else:
    # The project folder is the working directory, so its package imports without installing.
    sys.exit(subprocess.run([sys.executable, "-m", f"{PACKAGE}.train"], check=False).returncode)
