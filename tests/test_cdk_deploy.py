"""The construct's backend, package and SnapStart props, synthesised offline (see test_cdk.py)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
from test_cdk import (
    NO_STAGING,
    ModelFunction,
    ModelFunctionError,
    cdk,
    context_root,  # noqa: F401  (fixture)
    image_asset,
    lms_cdk,
    load_example_app,
    new_app,  # noqa: F401  (fixture)
    only,
)

from lambda_ml_serve.bundling.deployment_zip import HANDLER

assertions = pytest.importorskip("aws_cdk.assertions")
#: SnapStart needs 3.12+, and cdk-nag (AwsSolutions-L1) wants the newest runtime for a zip. The compiled
#: backend's zip (pydantic, pluggy, a library) is the small one.
SNAP_PYTHON = "3.14"


@pytest.fixture(scope="session")
def compiled_zip(context_root):  # noqa: F811
    return lms_cdk.ensure_deployment_zip(
        "wine_quality",
        context_root / "wine_quality-compiled-x86_64.zip",
        python=SNAP_PYTHON,
        backend="compiled",
    )


@pytest.mark.slow
def test_compiled_backend_reaches_the_image(new_app, tmp_path):  # noqa: F811
    stack = cdk.Stack(new_app(), "Test")
    model = ModelFunction(stack, "Model", backend="compiled")
    assert model.build_context.path.name == "wine_quality-compiled-x86_64"
    function = only(assertions.Template.from_stack(stack), "AWS::Lambda::Function")  # synthesises the assets
    _, source = image_asset(stack)
    dockerfile = (Path(source["directory"]) / source.get("dockerFile", "Dockerfile")).read_text()
    assert "LAMBDA_ML_SERVE_BACKEND=compiled" in dockerfile
    assert function["Properties"]["Description"].endswith("(compiled)")


@pytest.mark.slow
def test_snap_start_zip_publishes_a_version_behind_the_live_alias(new_app, compiled_zip):  # noqa: F811
    stack = cdk.Stack(new_app(), "Test")
    model = ModelFunction(
        stack, "Model", backend="compiled", package="zip", snap_start=True, python_version=SNAP_PYTHON
    )
    assert model.deployment_zip.path == compiled_zip.path and model.deployment_zip.reused
    template = assertions.Template.from_stack(stack)
    props = only(template, "AWS::Lambda::Function")["Properties"]
    assert (props["Runtime"], props["Handler"], "PackageType" in props) == (f"python{SNAP_PYTHON}", HANDLER, False)
    assert props["SnapStart"] == {"ApplyOn": "PublishedVersions"}
    version = next(iter(template.find_resources("AWS::Lambda::Version")))
    alias = only(template, "AWS::Lambda::Alias")["Properties"]
    assert alias["Name"] == lms_cdk.LIVE_ALIAS
    assert alias["FunctionVersion"] == {"Fn::GetAtt": [version, "Version"]}
    assert only(template, "AWS::Lambda::Url")["Properties"]["Qualifier"] == lms_cdk.LIVE_ALIAS
    with zipfile.ZipFile(compiled_zip.path) as archive:
        assert f"{HANDLER.split('.')[0]}.py" in archive.namelist()


@pytest.mark.slow
def test_snap_start_example_app_passes_cdk_nag(new_app, tmp_path, compiled_zip):  # noqa: F811
    app = new_app(backend="compiled", package="zip", snap_start="true", python=SNAP_PYTHON, **NO_STAGING)
    stack = load_example_app().build(app)
    app.synth()  # raises when cdk-nag reports a finding nobody acknowledged
    report = json.loads((tmp_path / "cdk.out" / "validation-report.json").read_text())
    assert [r for r in report["pluginReports"] if r["conclusion"] != "success"] == []
    assert stack.model.alias is not None


BAD_PROPS = [
    ({"backend": "tensorflow"}, r"prop 'backend': unknown backend 'tensorflow'; installed backends: compiled, .*"),
    ({"package": "tar"}, r"prop 'package' must be 'image' or 'zip'; got 'tar'"),
    ({"snap_start": True}, r"prop 'snap_start' needs package='zip'"),
    ({"snap_start": True, "package": "zip", "python_version": "3.11"}, r"needs python_version 3\.12, 3\.13, 3\.14"),
    (
        {"snap_start": True, "package": "zip", "provisioned_concurrency": 1},
        r"'snap_start' and 'provisioned_concurrency' exclude each other",
    ),
    ({"package": "zip", "base_image": "x:1"}, r"prop 'base_image' applies to package='image' only"),
]


@pytest.mark.parametrize(("props", "message"), BAD_PROPS, ids=[str(p) for p, _ in BAD_PROPS])
def test_bad_deployment_props_fail_at_synth_naming_the_prop(props, message, tmp_path):
    stack = cdk.Stack(cdk.App(outdir=str(tmp_path / "cdk.out")), "Test")
    with pytest.raises(ModelFunctionError, match=message):
        ModelFunction(stack, "Model", context_dir=tmp_path / "context", **props)
    assert not any(tmp_path.glob("context*"))  # failed before the (slow) render
