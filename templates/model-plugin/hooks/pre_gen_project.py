"""Refuse names that would make a plugin lambda-ml-serve cannot load, before any file is written."""

import re
import sys

# The rule ModelSpec enforces for model names; the hook cannot assume lambda-ml-serve is importable.
MODEL_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
PACKAGE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

model_name = "{{ cookiecutter.model_name }}"
package_name = "{{ cookiecutter.package_name }}"

if not MODEL_NAME.match(model_name):
    sys.exit(
        f"model_name {model_name!r} is not valid: use lowercase letters, digits and underscores, "
        "starting with a letter (e.g. iris_species)"
    )
if not PACKAGE_NAME.match(package_name):
    sys.exit(f"package_name {package_name!r} is not a Python identifier")
