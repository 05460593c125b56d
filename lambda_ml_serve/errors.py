"""Errors raised while finding, checking and loading models (tooling and runtime alike)."""


class LambdaMLServeError(Exception):
    """Base class: every message says what is wrong and what to do about it."""


class ModelNotFoundError(LambdaMLServeError):
    """No installed plugin registers a model by that name."""


class PluginError(LambdaMLServeError):
    """A plugin failed to import, register, or registered something invalid."""


class ModelLoadError(LambdaMLServeError):
    """A registered model could not be loaded (artifact, backend, or schema mismatch)."""


class BuildError(LambdaMLServeError):
    """A build context could not be rendered, or ``docker build`` failed."""


class CompileError(LambdaMLServeError):
    """A model could not be compiled to native code, or the compiled code predicts differently."""
