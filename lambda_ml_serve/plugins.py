"""The plugin manager: finds plugins through entry points on first use and keeps the registry.

Plugins are loaded lazily (cold start matters on Lambda) and each in isolation: a plugin that fails
to import or register is recorded as broken, named with its distribution, and the others still work.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import entry_points
from typing import Any

import pluggy

from lambda_ml_serve import hookspecs
from lambda_ml_serve.errors import ModelNotFoundError, PluginError
from lambda_ml_serve.spec import Backend, ModelSpec

ENTRY_POINT_GROUP = "lambda_ml_serve"
#: Built-in features register through the same hooks as external plugins.
BUILTIN_PLUGINS = ("lambda_ml_serve.backends.builtin",)
#: Comma-separated entry-point names to load; unset loads all (the image sets it to its one plugin).
ALLOW_ENV = "LAMBDA_ML_SERVE_PLUGINS"


@dataclass(frozen=True)
class PluginInfo:
    """Where a plugin comes from, for listings and error messages."""

    name: str
    distribution: str
    version: str

    def __str__(self) -> str:
        return f"plugin {self.name!r} (distribution {self.distribution} {self.version})"


BUILTIN = PluginInfo("builtin", "lambda-ml-serve", importlib.import_module("lambda_ml_serve").__version__)


@dataclass(frozen=True)
class RegisteredModel:
    spec: ModelSpec
    plugin: PluginInfo


@dataclass(frozen=True)
class RegisteredBackend:
    backend: Backend
    plugin: PluginInfo


@dataclass(frozen=True)
class Failure:
    """A plugin, or one thing it registered, that could not be used."""

    plugin: PluginInfo
    message: str
    model: str | None = None


@dataclass
class Registry:
    models: dict[str, RegisteredModel] = field(default_factory=dict)
    backends: dict[str, RegisteredBackend] = field(default_factory=dict)
    failures: list[Failure] = field(default_factory=list)
    plugins: list[PluginInfo] = field(default_factory=list)

    def model(self, name: str) -> RegisteredModel:
        """The model registered under ``name``; the error lists what is installed instead."""
        if name in self.models:
            return self.models[name]
        broken = [f for f in self.failures if f.model == name]
        if broken:
            raise PluginError(f"model {name!r} is broken: {broken[0].plugin}: {broken[0].message}")
        known = ", ".join(sorted(self.models)) or "none"
        raise ModelNotFoundError(
            f"no model named {name!r}; installed models: {known}. "
            "Install the plugin that provides it (pip install ...) and check `lambda-ml-serve list`."
        )

    def backend(self, name: str) -> Backend:
        if name not in self.backends:
            known = ", ".join(sorted(self.backends)) or "none"
            raise PluginError(f"unknown backend {name!r}; installed backends: {known}")
        return self.backends[name].backend


def _distribution_of(ep: Any) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    return (dist.name, dist.version) if dist is not None else ("unknown", "?")


def _load_entry_points(pm: pluggy.PluginManager, registry: Registry) -> None:
    allowed = {n.strip() for n in os.environ.get(ALLOW_ENV, "").split(",") if n.strip()}
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if allowed and ep.name not in allowed:
            continue
        info = PluginInfo(ep.name, *_distribution_of(ep))
        if pm.has_plugin(ep.name):
            registry.failures.append(Failure(info, "another plugin is installed under the same name"))
            continue
        try:
            module = ep.load()
            pm.register(module, name=ep.name)
        except Exception as exc:  # a broken plugin must not take the others down
            registry.failures.append(Failure(info, f"failed to load {ep.value!r}: {type(exc).__name__}: {exc}"))
            continue
        registry.plugins.append(info)


def _call_each(pm: pluggy.PluginManager, hook_name: str, infos: dict[str, PluginInfo], make_register):
    """Call a hook plugin by plugin so an exception is blamed on the plugin that raised it."""
    for impl in getattr(pm.hook, hook_name).get_hookimpls():
        info = infos[impl.plugin_name]
        try:
            impl.function(register=make_register(info))
        except Exception as exc:
            yield Failure(info, f"{hook_name} raised {type(exc).__name__}: {exc}")


def build_registry(extra_plugins: Iterable[Any] = ()) -> Registry:
    """Load built-ins, entry-point plugins and ``extra_plugins`` (modules or objects), then call the hooks."""
    pm = pluggy.PluginManager("lambda_ml_serve")
    pm.add_hookspecs(hookspecs)
    registry = Registry()
    for module_name in BUILTIN_PLUGINS:
        pm.register(importlib.import_module(module_name), name=BUILTIN.name + ":" + module_name)
    _load_entry_points(pm, registry)
    for i, plugin in enumerate(extra_plugins):
        name = getattr(plugin, "__name__", f"extra-{i}")
        pm.register(plugin, name=name)
        registry.plugins.append(PluginInfo(name, "local", "?"))

    infos = {p.name: p for p in registry.plugins}
    infos.update({pm.get_name(p): BUILTIN for p in pm.get_plugins() if pm.get_name(p) not in infos})

    def backend_register(info: PluginInfo):
        def register(backend: Backend) -> None:
            name = getattr(backend, "name", None)
            if not isinstance(name, str) or not callable(getattr(backend, "load", None)):
                raise PluginError(f"{info}: register_backends got {backend!r}, not a Backend")
            if name in registry.backends:
                raise PluginError(f"backend {name!r} is already registered by {registry.backends[name].plugin}")
            registry.backends[name] = RegisteredBackend(backend, info)

        return register

    registered: list[RegisteredModel] = []

    def model_register(info: PluginInfo):
        def register(spec: ModelSpec) -> None:
            if not isinstance(spec, ModelSpec):
                raise PluginError(f"register_models got {type(spec).__name__}, not a ModelSpec")
            registered.append(RegisteredModel(spec, info))

        return register

    registry.failures.extend(_call_each(pm, "register_backends", infos, backend_register))
    registry.failures.extend(_call_each(pm, "register_models", infos, model_register))
    _add_models(registry, registered)
    return registry


def _add_models(registry: Registry, registered: list[RegisteredModel]) -> None:
    """Add the models that pass the cheap checks; a name claimed twice is served by neither."""
    by_name: dict[str, list[RegisteredModel]] = {}
    for model in registered:
        by_name.setdefault(model.spec.name, []).append(model)
    for name, claims in by_name.items():
        if len(claims) > 1:
            owners = " and ".join(str(m.plugin) for m in claims)
            message = f"model name {name!r} is registered by {owners}; uninstall one or rename its model"
            registry.failures += [Failure(m.plugin, message, model=name) for m in claims]
            continue
        problem = check_model(claims[0], registry)
        if problem:
            registry.failures.append(Failure(claims[0].plugin, problem, model=name))
        else:
            registry.models[name] = claims[0]


def check_model(model: RegisteredModel, registry: Registry) -> str | None:
    """Cheap checks that need no model load: a known backend and a readable artifact."""
    spec = model.spec
    if spec.backend not in registry.backends:
        known = ", ".join(sorted(registry.backends)) or "none"
        return (
            f"model {spec.name!r} uses unknown backend {spec.backend!r} (installed backends: {known}); "
            "install the plugin providing it or fix ModelSpec.backend"
        )
    try:
        path = spec.artifact_path
    except (ModuleNotFoundError, TypeError) as exc:
        return f"model {spec.name!r}: package {spec.package!r} cannot be found ({exc})"
    if not path.is_file():
        return (
            f"model {spec.name!r}: artifact {spec.artifact!r} not found in package {spec.package!r} "
            f"(looked for {path}); train the model or ship the file as package data"
        )
    try:
        with path.open("rb") as fh:
            fh.read(1)
    except OSError as exc:
        return f"model {spec.name!r}: artifact {path} is not readable: {exc.strerror}"
    if spec.card is not None and not spec.resource(spec.card).is_file():
        return (
            f"model {spec.name!r}: model card {spec.card!r} not found in package {spec.package!r}; "
            "ship it as package data or set ModelSpec.card=None"
        )
    return None


@cache
def get_registry() -> Registry:
    """The process-wide registry, built on first use."""
    return build_registry()


def describe_models(registry: Registry) -> list[dict[str, str]]:
    """One row per installed model and per broken plugin: what ``lambda-ml-serve list`` prints."""
    rows = [
        {
            "model": m.spec.name,
            "version": m.spec.version,
            "backend": m.spec.backend,
            "plugin": m.plugin.name,
            "distribution": f"{m.plugin.distribution} {m.plugin.version}",
            "status": "ok",
        }
        for m in registry.models.values()
    ]
    return rows + [
        {
            "model": f.model or "-",
            "version": "-",
            "backend": "-",
            "plugin": f.plugin.name,
            "distribution": f"{f.plugin.distribution} {f.plugin.version}",
            "status": f"broken: {f.message}",
        }
        for f in registry.failures
    ]
