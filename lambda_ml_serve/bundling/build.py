"""``lambda-ml-serve build``: a container image (context, then ``docker build``) or a deployment zip."""

from __future__ import annotations

import shlex
import sys
from collections.abc import Callable
from pathlib import Path

from lambda_ml_serve.bundling.context import default_output, render_build_context
from lambda_ml_serve.bundling.steps import showing_steps
from lambda_ml_serve.errors import BuildError
from lambda_ml_serve.plugins import Registry


def build(
    registry: Registry,
    model: str,
    output: Path | None = None,
    *,
    package: str = "image",
    arch: str = "x86_64",
    python: str = "3.12",
    base_image: str | None = None,
    build_base_image: str | None = None,
    tag: str | None = None,
    no_docker: bool = False,
    force: bool = False,
    backend: str | None = None,
    response: str | None = None,
    docs: bool = False,
    artifact: Path | None = None,
    say: Callable[[str], None] = print,
    progress: Callable[[str], None] = print,
) -> None:
    """Write ``model``'s zip, or render its build context and build the image when a Docker engine answers.

    ``say`` gets what a user reads (what was written, the ``docker build`` command when no engine
    answers); ``progress`` gets Docker's output lines.
    """
    backend_name = backend or registry.model(model).spec.backend
    output = output or default_output(model, arch, backend_name, package)
    if package == "zip":
        from lambda_ml_serve.bundling.deployment_zip import build_zip, describe

        image_only = {"--base-image": base_image, "--build-base-image": build_base_image, "--tag": tag}
        # --no-docker is accepted: a zip is built without Docker anyway.
        given = [option for option, value in image_only.items() if value]
        if given:
            raise BuildError(f"{', '.join(given)}: {'applies' if len(given) == 1 else 'apply'} only to --package image")
        with showing_steps(sys.stderr):
            built = build_zip(
                model,
                output,
                arch=arch,
                python=python,
                backend=backend,
                registry=registry,
                force=force,
                response=response,
                docs=docs,
                artifact=artifact,
            )
        say(f"Wrote {describe(built)}")
        return

    from lambda_ml_serve.bundling.docker import build_image, find_engine

    with showing_steps(sys.stderr):
        ctx = render_build_context(
            model,
            output,
            arch=arch,
            python=python,
            base_image=base_image,
            force=force,
            registry=registry,
            backend=backend,
            build_base_image=build_base_image,
            response=response,
            docs=docs,
            artifact=artifact,
        )
    command = shlex.join(ctx.docker_build_command(tag))
    say(f"Rendered the build context in {ctx.path}")
    if no_docker or find_engine() is None:
        if not no_docker:
            say("No Docker engine answers (DOCKER_HOST or the default socket); build the image with:")
        say(command)
        return
    with showing_steps(sys.stderr):
        build_image(ctx, tag, progress=progress)
    say(f"Built {tag or ctx.default_tag} for {ctx.platform}")
