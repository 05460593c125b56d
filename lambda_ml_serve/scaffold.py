"""Create a new model plugin project from the cookiecutter template (``lambda-ml-serve new``).

The answers are checked before anything is written: the model name (ModelSpec's rule), a clash
with an installed model or package, and an existing target folder. Generation then trains the
model on synthetic rows (the template's post-generation hook), so the project is servable at once.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import lambda_ml_serve
from lambda_ml_serve.errors import LambdaMLServeError

#: Installed wheels carry the templates inside the package; a source checkout has them at the top.
TEMPLATE_ROOTS = (
    Path(lambda_ml_serve.__file__).parent / "templates",
    Path(lambda_ml_serve.__file__).parents[1] / "templates",
)
BACKENDS = ("xgboost", "sklearn")
TASKS = ("regression", "classification")
# ModelSpec's rule for model names; checked here so that a bad name fails before any file exists.
MODEL_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
# PEP 508 distribution names.
DISTRIBUTION_NAME = re.compile(r"^([A-Z0-9]|[A-Z0-9][A-Z0-9._-]*[A-Z0-9])$", re.IGNORECASE)


class ScaffoldError(LambdaMLServeError):
    """The plugin project was not created; nothing was written."""


class InvalidValueError(ScaffoldError):
    """A name or choice the template would turn into a plugin that cannot be installed or loaded."""


class NameClashError(ScaffoldError):
    """The model or package name is already taken by something installed."""


class TargetExistsError(ScaffoldError):
    """The project folder exists already (``force`` writes into it)."""


def template_dir(name: str = "model-plugin") -> Path:
    """A cookiecutter template (``model-plugin``, ``plugin-from-model``), installed or from the source checkout."""
    candidates = [root / name for root in TEMPLATE_ROOTS]
    for candidate in candidates:
        if (candidate / "cookiecutter.json").is_file():
            return candidate
    raise ScaffoldError(
        f"the {name} template is missing from this installation of lambda-ml-serve "
        f"(looked in {', '.join(map(str, candidates))}); reinstall lambda-ml-serve"
    )


#: How this project's own pyproject.toml names it: a plugin generated inside its checkout is untracked clutter.
_THIS_PROJECT = re.compile(r'^name\s*=\s*"lambda-ml-serve"\s*$', re.MULTILINE)


def checkout_warning(output_dir: Path) -> str | None:
    """A warning when ``output_dir`` lies inside a git checkout of lambda-ml-serve itself, else None.

    ``new`` run from the repository root (as the README's first steps are) would otherwise leave the
    generated plugin there, untracked, where a later ``git clean`` or a fresh clone loses it.
    """
    folder = Path(output_dir).resolve()
    for root in (folder, *folder.parents):
        pyproject = root / "pyproject.toml"
        if (root / ".git").exists() and pyproject.is_file():
            try:
                ours = _THIS_PROJECT.search(pyproject.read_text(encoding="utf-8")) is not None
            except (OSError, UnicodeDecodeError):
                ours = False
            if ours:
                return (
                    f"{folder} is inside the lambda-ml-serve checkout {root}: the plugin will be untracked "
                    "there; pass --output-dir to create it elsewhere (e.g. --output-dir ..)"
                )
            return None  # inside another project's checkout: where the user wants it
    return None


def installed_models() -> set[str]:
    """Names of every model the installed plugins register, broken ones included."""
    from lambda_ml_serve.plugins import get_registry

    registry = get_registry()
    return set(registry.models) | {f.model for f in registry.failures if f.model}


def create_plugin(
    values: Mapping[str, str],
    *,
    output_dir: Path = Path("."),
    no_input: bool = False,
    force: bool = False,
    taken: Collection[str] | None = None,
) -> Path:
    """Render a new plugin project into ``output_dir`` and return its folder.

    ``values`` are template variables known up front (``model_name``, ``backend``, ``task``,
    ``description``, ``author``, ``version``...). Unless ``no_input``, cookiecutter prompts for
    every variable, offering these as defaults. ``taken`` lists model names in use (default: the
    installed models). ``force`` writes into an existing project folder, replacing the files the
    template generates and keeping any others. Raises :class:`ScaffoldError` subclasses.
    """
    try:
        from cookiecutter.exceptions import CookiecutterException
        from cookiecutter.generate import generate_context, generate_files
        from cookiecutter.prompt import prompt_for_config
    except ImportError:
        raise ScaffoldError("creating a plugin needs cookiecutter: pip install 'lambda-ml-serve[cli]'") from None

    template = template_dir()
    _check_choices(values)
    context = generate_context(context_file=template / "cookiecutter.json", extra_context=dict(values))
    context["cookiecutter"] = prompt_for_config(context, no_input=no_input)
    answers = context["cookiecutter"]
    check_answers(answers, installed_models() if taken is None else taken)
    target = Path(output_dir).absolute() / answers["project_slug"]
    if target.exists() and not force:
        raise TargetExistsError(
            f"{target} already exists; choose another --output-dir, or pass --force to write into it"
        )
    # What cookiecutter itself records, for templates and hooks that read it.
    answers.update(_template=str(template), _repo_dir=str(template), _output_dir=str(target.parent))
    try:
        project = generate_files(template, context, output_dir=target.parent, overwrite_if_exists=force)
    except CookiecutterException as exc:
        raise ScaffoldError(f"could not create {target}: {exc}") from None
    return Path(project)


def _check_choices(values: Mapping[str, str]) -> None:
    for key, choices in (("backend", BACKENDS), ("task", TASKS)):
        if key in values and values[key] not in choices:
            raise InvalidValueError(f"{key} {values[key]!r} is not one of {', '.join(choices)}")


def check_answers(answers: Mapping[str, Any], taken: Collection[str]) -> None:
    """Refuse names that are invalid or already in use."""
    name = answers["model_name"]
    if not MODEL_NAME.match(name):
        raise InvalidValueError(
            f"model name {name!r} is not valid: use lowercase letters, digits and underscores, "
            "starting with a letter (e.g. iris_species)"
        )
    package = answers["package_name"]
    if not package.isidentifier():
        raise InvalidValueError(f"package name {package!r} is not a Python identifier")
    if not DISTRIBUTION_NAME.match(answers["project_slug"]):
        raise InvalidValueError(f"distribution name {answers['project_slug']!r} is not valid (PEP 508)")
    _check_version(answers["version"])
    if name in taken:
        raise NameClashError(
            f"a model named {name!r} is already installed (see `lambda-ml-serve list`); choose another name"
        )
    if importlib.util.find_spec(package) is not None:
        raise NameClashError(f"a package named {package!r} is already importable; choose another model name")


def _check_version(version: str) -> None:
    from packaging.version import InvalidVersion, Version

    try:
        Version(version)
    except InvalidVersion:
        raise InvalidValueError(f"version {version!r} is not a valid version (e.g. 0.1.0)") from None
