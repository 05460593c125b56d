"""`lambda-ml-serve new`: generated plugins install, list, pass their own tests, serve and build.

Each generated plugin is pip-installed with ``--target`` into a folder of its own that only the
subprocesses of that test put on ``PYTHONPATH``: the development environment is never changed.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO

from lambda_ml_serve.plugins import build_registry
from lambda_ml_serve.runtime.app import App
from lambda_ml_serve.scaffold import (
    MODEL_NAME,
    InvalidValueError,
    NameClashError,
    TargetExistsError,
    create_plugin,
    template_dir,
)
from lambda_ml_serve.spec import ModelSpec

CLI = [sys.executable, "-m", "lambda_ml_serve.cli"]
TEMPLATE = REPO / "templates" / "model-plugin"


def run(*args: str | Path, env: dict[str, str] | None = None, cwd: Path | None = None,
        stdin: str | None = None) -> subprocess.CompletedProcess:  # fmt: skip
    return subprocess.run(
        [*CLI, *map(str, args)], input=stdin, capture_output=True, text=True, env=env, cwd=cwd, timeout=300
    )


@dataclass(frozen=True)
class Installed:
    """A generated plugin project and the folder it was pip-installed into."""

    model: str
    backend: str
    task: str
    project: Path
    site: Path

    @property
    def package(self) -> str:
        return f"lambda_ml_serve_{self.model}"

    @property
    def env(self) -> dict[str, str]:
        """The environment of a process that sees the installed plugin."""
        paths = [str(self.site), os.environ.get("PYTHONPATH")]
        return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}

    @property
    def example(self) -> Path:
        return self.project / self.package / "example.json"


def check_predictions(predictions: list, rows: int, task: str) -> None:
    assert len(predictions) == rows
    if task == "regression":
        assert all(isinstance(p, float) for p in predictions)
    else:
        for probabilities in predictions:
            assert len(probabilities) == 3  # the synthetic data has three classes
            assert sum(probabilities) == pytest.approx(1.0, abs=1e-5)


@pytest.fixture(scope="module", params=[("xgboost", "regression"), ("sklearn", "classification")],
                ids=lambda p: "-".join(p))  # fmt: skip
def installed(request, tmp_path_factory) -> Installed:
    backend, task = request.param
    model = f"scaffolded_{backend}_{task}"
    root = tmp_path_factory.mktemp(f"new-{backend}")
    result = run("new", "--model-name", model, "--backend", backend, "--task", task, "--author", "Test Author",
                 "--description", f'A "{task}" model; C:\\temp is not a TOML escape', "--output-dir", root,
                 "--no-input")  # fmt: skip
    assert result.returncode == 0, result.stderr
    project = root / f"lambda-ml-serve-{model.replace('_', '-')}"
    assert f"Created {project}" in result.stdout
    site = root / "site"
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-input", "--disable-pip-version-check",
         "--target", str(site), str(project)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert pip.returncode == 0, pip.stdout + pip.stderr
    return Installed(model, backend, task, project, site)


def test_the_project_ships_a_trained_model(installed):
    artifact = "model.json" if installed.backend == "xgboost" else "model.joblib"
    for root in (installed.project, installed.site):  # the source tree, and what pip installed
        package = root / installed.package
        assert sorted(p.name for p in package.iterdir() if p.is_file() and p.suffix != ".py") == sorted(
            [artifact, "example.json", "model_card.json"]
        )
    card = json.loads((installed.site / installed.package / "model_card.json").read_text())
    assert card["model"] == installed.model and card["task"] == installed.task
    assert card["metrics"]["r2" if installed.task == "regression" else "accuracy"] > 0.7


def test_list_shows_it_ok(installed):
    result = run("list", "--json", env=installed.env)
    assert result.returncode == 0, result.stderr
    row = next(r for r in json.loads(result.stdout) if r["model"] == installed.model)
    assert row["status"] == "ok"
    assert row["backend"] == installed.backend
    assert row["distribution"] == f"lambda-ml-serve-{installed.model.replace('_', '-')} 0.1.0"


def test_the_generated_tests_pass_and_train_a_missing_model(installed):
    # As if the project was created where scikit-learn was missing: no model, no card.
    package = installed.project / installed.package
    artifacts = [p for p in package.iterdir() if p.name.startswith("model")]
    assert len(artifacts) == 2
    for path in artifacts:
        path.unlink()
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=installed.project, env=installed.env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:]
    assert re.search(r"\b\d+ passed\b", result.stdout) and " skipped" not in result.stdout
    assert all(path.is_file() for path in artifacts)


def test_invoke_answers_the_example(installed):
    result = run("invoke", installed.model, "--data", installed.example, env=installed.env)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["model"] == installed.model
    rows = len(json.loads(installed.example.read_text())["instances"])
    check_predictions(answer["predictions"], rows, installed.task)


def test_build_renders_a_hadolint_clean_dockerfile(installed, tmp_path):
    output = tmp_path / "context"
    result = run("build", installed.model, "--no-docker", "--output", output, env=installed.env)
    assert result.returncode == 0, result.stderr
    dockerfile = output / "Dockerfile"
    assert f"LAMBDA_ML_SERVE_MODEL={installed.model}" in dockerfile.read_text()
    lint = subprocess.run([shutil.which("hadolint") or "hadolint", str(dockerfile)],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert lint.returncode == 0, lint.stdout + lint.stderr
    if installed.backend == "sklearn":
        # The pickle's scikit-learn release is the one the image gets.
        import sklearn

        assert f"scikit-learn=={sklearn.__version__}" in (output / "requirements.txt").read_text().splitlines()


@pytest.fixture
def load_generated(monkeypatch):
    """Import a generated project's plugin from its source folder and load its model through App."""
    imported: list[str] = []

    def load(project: Path, model: str) -> App:
        package = f"lambda_ml_serve_{model}"
        monkeypatch.syspath_prepend(str(project))
        plugin = importlib.import_module(f"{package}.plugin")
        imported.append(package)
        return App.load(model, registry=build_registry([plugin]))

    yield load
    for name in [m for m in sys.modules if m.split(".")[0] in imported]:
        del sys.modules[name]


def test_new_prompts_for_every_value(tmp_path, load_generated):
    # model name, distribution, package, description, author: defaults after the model name;
    # backend 1 (xgboost), task 2 (classification), version: default.
    answers = "prompted_model\n\n\n\n\n1\n2\n\n"
    result = run("new", "--output-dir", tmp_path, stdin=answers)
    assert result.returncode == 0, result.stdout + result.stderr
    project = tmp_path / "lambda-ml-serve-prompted-model"
    app = load_generated(project, "prompted_model")
    assert app.spec.backend == "xgboost"
    check_predictions(app({"instances": list(app.spec.example)})["predictions"], len(app.spec.example),
                      "classification")  # fmt: skip


def test_plain_cookiecutter_works_too(tmp_path, load_generated):
    home = tmp_path / "home"  # cookiecutter records its answers under the home folder
    home.mkdir()
    result = subprocess.run(
        [sys.executable, "-m", "cookiecutter", str(TEMPLATE), "--no-input", "--output-dir", str(tmp_path / "out"),
         "model_name=plain_model", "backend=sklearn", "task=regression"],
        capture_output=True, text=True, env={**os.environ, "HOME": str(home)}, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    app = load_generated(tmp_path / "out" / "lambda-ml-serve-plain-model", "plain_model")
    assert app.spec.backend == "sklearn" and app.spec.requirements  # pinned to the training release
    check_predictions(app({"instances": list(app.spec.example)})["predictions"], len(app.spec.example), "regression")


def test_plain_cookiecutter_refuses_a_bad_name_in_its_hook(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "cookiecutter", str(TEMPLATE), "--no-input", "--output-dir", str(tmp_path / "out"),
         "model_name=Bad-Name"],
        capture_output=True, text=True, env={**os.environ, "HOME": str(tmp_path)}, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert "model_name 'Bad-Name' is not valid" in result.stderr
    assert not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("name", ["Iris", "1iris", "iris-species", "iris species", "_iris", "iris.species", ""])
def test_invalid_model_names_are_refused_before_writing(name, tmp_path):
    with pytest.raises(InvalidValueError, match="is not valid: use lowercase letters"):
        create_plugin({"model_name": name}, output_dir=tmp_path, no_input=True, taken=())
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("name", ["iris", "iris_species", "a1", "Iris", "1iris", "iris-species", "_x", "x y"])
def test_the_name_rule_is_modelspecs(name):
    from pydantic import BaseModel

    try:
        ModelSpec(name=name, version="1", backend="sklearn", package="p", artifact="a", schema=BaseModel)
        accepted = True
    except ValueError:
        accepted = False
    assert bool(MODEL_NAME.match(name)) is accepted


@pytest.mark.parametrize(("values", "message"), [
    ({"backend": "onnx"}, "backend 'onnx' is not one of xgboost, sklearn"),
    ({"task": "ranking"}, "task 'ranking' is not one of regression, classification"),
    ({"version": "one"}, "version 'one' is not a valid version"),
])  # fmt: skip
def test_invalid_choices_are_refused(values, message, tmp_path):
    with pytest.raises(InvalidValueError, match=re.escape(message)):
        create_plugin({"model_name": "fine_name", **values}, output_dir=tmp_path, no_input=True, taken=())
    assert not any(tmp_path.iterdir())


def test_a_name_clash_with_an_installed_model_is_refused(tmp_path):
    with pytest.raises(NameClashError, match="a model named 'wine_quality' is already installed"):
        create_plugin({"model_name": "wine_quality"}, output_dir=tmp_path, no_input=True)
    assert not any(tmp_path.iterdir())


def test_cli_errors_are_one_line_and_exit_1(tmp_path):
    result = run("new", "--model-name", "wine_quality", "--no-input", "--output-dir", tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "Traceback" not in result.stderr
    assert result.stderr.startswith("Error: a model named 'wine_quality' is already installed")
    assert not any(tmp_path.iterdir())


def test_an_existing_folder_needs_force(tmp_path):
    values = {"model_name": "forced_model", "backend": "sklearn"}
    project = create_plugin(values, output_dir=tmp_path, no_input=True, taken=())
    plugin = project / "lambda_ml_serve_forced_model" / "plugin.py"
    original = plugin.read_text()
    plugin.write_text("edited\n")
    (project / "notes.txt").write_text("mine\n")

    with pytest.raises(TargetExistsError, match=r"lambda-ml-serve-forced-model already exists; .* --force"):
        create_plugin(values, output_dir=tmp_path, no_input=True, taken=())
    assert plugin.read_text() == "edited\n"

    assert create_plugin(values, output_dir=tmp_path, no_input=True, force=True, taken=()) == project
    assert plugin.read_text() == original  # generated files are written again...
    assert (project / "notes.txt").read_text() == "mine\n"  # ...and the user's own are kept


def test_the_template_is_found_and_new_has_help():
    assert template_dir().resolve() == TEMPLATE.resolve()
    result = run("new", "--help")
    assert result.returncode == 0
    for flag in ("--model-name", "--backend", "--task", "--description", "--author", "--output-dir", "--no-input",
                 "--force"):  # fmt: skip
        assert flag in result.stdout


def test_the_generated_tests_pass_with_no_model_card(tmp_path):
    project = create_plugin(
        {"model_name": "cardless_model", "backend": "xgboost", "task": "classification"},
        output_dir=tmp_path,
        no_input=True,
        taken=(),
    )
    plugin = project / "lambda_ml_serve_cardless_model" / "plugin.py"
    source = plugin.read_text()
    assert "card=CARD," in source
    plugin.write_text(source.replace("card=CARD,", "card=None,"))
    (project / "lambda_ml_serve_cardless_model" / "model_card.json").unlink()
    site = tmp_path / "site"
    pip_args = ["install", "--no-deps", "--no-input", "--disable-pip-version-check", "--target", str(site)]
    pip = subprocess.run(
        [sys.executable, "-m", "pip", *pip_args, str(project)], capture_output=True, text=True, timeout=300
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr
    # The training tests write a card of their own; every other test reads the registered one.
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "not training"],
        cwd=project,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert re.search(r"\b\d+ passed\b", result.stdout) and " failed" not in result.stdout


def test_new_inside_this_checkout_warns_and_says_where(tmp_path):
    from lambda_ml_serve.scaffold import checkout_warning

    # From the repository root, without --output-dir: the warning comes before anything else happens.
    result = run("new", "--model-name", "wine_quality", "--no-input", cwd=REPO)
    assert result.returncode == 1
    warning, error = result.stderr.strip().splitlines()
    assert warning == (
        f"Warning: {REPO.resolve()} is inside the lambda-ml-serve checkout {REPO.resolve()}: the plugin will be "
        "untracked there; pass --output-dir to create it elsewhere (e.g. --output-dir ..)"
    )
    assert error.startswith("Error: a model named 'wine_quality' is already installed")
    # Naming the folder is a choice: no warning then.
    result = run("new", "--model-name", "wine_quality", "--no-input", "--output-dir", REPO, cwd=REPO)
    assert "Warning" not in result.stderr
    # Another project's checkout, or no checkout at all, is where the user wants the plugin.
    other = tmp_path / "other"
    (other / ".git").mkdir(parents=True)
    (other / "pyproject.toml").write_text('[project]\nname = "my-models"\n')
    assert checkout_warning(other / "sub") is None and checkout_warning(tmp_path) is None
    (other / "pyproject.toml").write_text('[project]\nname = "lambda-ml-serve"\n')
    assert checkout_warning(other / "sub").startswith(f"{(other / 'sub').resolve()} is inside the lambda-ml-serve")
