"""The reconstruction-method registry: one entry per ``cryowedge reconstruct --method``.

Each method declares, once, its configuration model (a subclass of
:class:`~cryowedge.config.models.ReconstructConfig` whose ``method`` field is a one-value
``Literal``: that value is the method's name) and its runner. Everything else reads the
registry: the ``--method`` choices, help text and per-method options of the CLI, the YAML
loader (a discriminated union on ``method`` built from the registered models), the demo
(the ``demo`` presets), and the consistency test of :data:`cryowedge.solvers.SOLVERS`.

Adding a method::

    class MyConfig(ReconstructConfig):
        method: Literal["mine"] = "mine"
        strength: float = Field(1.0, gt=0, description="how strong")

    register_method(MyConfig, runner="mypackage.runners:run_mine", summary="my method")

A runner is called as ``runner(tilt_series, geometry, config, context)`` with the
``(n_tilts, y, x)`` NumPy series, its :class:`~cryowedge.geometry.TiltGeometry`, the
method's config and a :class:`~cryowedge.workflows.methods.MethodContext` (volume shape,
device, progress, checkpoint), and returns the ``(z, y, x)`` float32 NumPy tomogram. It may
be given as a callable or as a ``"module:function"`` path, imported on first use (so
``--help`` does not import torch).

This module imports no other part of cryowedge at import time: it sits in the config layer
and refers to the runners (workflows layer) only by their import paths.
"""

from __future__ import annotations

import importlib
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, Field

__all__ = [
    "MethodSpec",
    "config_union",
    "get_method",
    "method_names",
    "methods",
    "parse_method_config",
    "register_method",
    "unregister_method",
]

_METHODS: dict[str, MethodSpec] = {}


def _load(target: Callable[..., Any] | str) -> Callable[..., Any]:
    if callable(target):
        return target
    module, _, name = str(target).partition(":")
    if not module or not name:
        raise ValueError(f"runner/solver path {target!r} must look like 'package.module:function'.")
    return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class MethodSpec:
    """One registered reconstruction method.

    Attributes
    ----------
    name
        The ``--method`` value (the config model's ``method`` literal).
    config
        The pydantic model of the method's options (defaults included).
    runner
        Callable or ``"module:function"`` path; see the module docstring for its signature.
    summary
        One line for ``--method`` help.
    solver
        For iterative methods, the ``"module:function"`` path of the solver in
        :mod:`cryowedge.solvers` (``SOLVERS[name]`` must be the same function).
    demo
        Demo presets: output name → option changes (``cryowedge demo`` runs each).
    slab_mode
        How the method streams in slabs of tilt-axis rows (``--slab``,
        :mod:`cryowedge.workflows.streaming`): ``"exact"`` (rows are independent: the
        streamed result equals the whole-volume one), ``"halo"`` (neighbouring rows are
        coupled, e.g. by a gradient: overlapping slabs, ``config.halo_rows`` on each side),
        ``"independent"`` (each slab is solved as its own problem; close to, not equal to,
        the whole-volume solve) or ``"none"`` (cannot stream).
    work_arrays
        ``(volume-sized, series-sized)`` float32 work arrays per tilt-axis row, for the memory
        estimate that decides when to stream (an upper estimate: check it against the peak
        RSS of a real run, as ``cryowedge bench scale`` reports it).
    """

    name: str
    config: type[BaseModel]
    runner: Callable[..., Any] | str
    summary: str = ""
    solver: Callable[..., Any] | str | None = None
    demo: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    slab_mode: Literal["exact", "halo", "independent", "none"] = "exact"
    work_arrays: tuple[int, int] = (8, 8)

    def load_runner(self) -> Callable[..., Any]:
        """The runner function (imported on first use)."""
        return _load(self.runner)

    def load_solver(self) -> Callable[..., Any] | None:
        """The solver function of an iterative method, else None."""
        return None if self.solver is None else _load(self.solver)


def _literal_name(config: type[BaseModel]) -> str:
    info = config.model_fields.get("method")
    args = typing.get_args(info.annotation) if info is not None else ()
    if info is None or typing.get_origin(info.annotation) is not Literal or len(args) != 1:
        raise TypeError(
            f"{config.__name__} must declare `method: Literal['<name>'] = '<name>'` "
            "(one literal value)."
        )
    if info.default != args[0]:
        raise TypeError(f"{config.__name__}.method must default to its literal {args[0]!r}.")
    return str(args[0])


def register_method(
    config: type[BaseModel] | None = None,
    *,
    runner: Callable[..., Any] | str,
    summary: str = "",
    solver: Callable[..., Any] | str | None = None,
    demo: Mapping[str, Mapping[str, Any]] | None = None,
    slab_mode: Literal["exact", "halo", "independent", "none"] = "exact",
    work_arrays: tuple[int, int] = (8, 8),
    replace: bool = False,
) -> Any:
    """Register ``config`` (a ``ReconstructConfig`` subclass) and its runner.

    Usable as a call, ``register_method(MyConfig, runner=...)``, or as a class decorator,
    ``@register_method(runner=...)``. The name is the model's ``method`` literal; registering
    a taken name raises ``ValueError`` unless ``replace=True``.
    """

    def add(model: type[BaseModel]) -> type[BaseModel]:
        from cryowedge.config.models import ReconstructConfig

        if not (isinstance(model, type) and issubclass(model, ReconstructConfig)):
            raise TypeError(f"{model!r} must be a subclass of ReconstructConfig.")
        name = _literal_name(model)
        if name in _METHODS and not replace:
            raise ValueError(
                f"method {name!r} is already registered; pass replace=True to replace it."
            )
        if slab_mode == "halo" and "halo_rows" not in model.model_fields:
            raise TypeError(f"{model.__name__} streams with a halo but has no 'halo_rows' field.")
        _METHODS[name] = MethodSpec(name, model, runner, summary, solver, dict(demo or {}),
                                    slab_mode, tuple(work_arrays))
        return model

    return add if config is None else add(config)


def unregister_method(name: str) -> MethodSpec:
    """Remove a registered method (tests, plug-ins); returns its spec."""
    spec = get_method(name)
    del _METHODS[name]
    return spec


def get_method(name: str) -> MethodSpec:
    """The spec of ``name``; ``ValueError`` naming the registered methods otherwise."""
    _ensure_builtins()
    try:
        return _METHODS[str(name)]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(_METHODS)}.") from None


def methods() -> tuple[MethodSpec, ...]:
    """Every registered method, in registration order."""
    _ensure_builtins()
    return tuple(_METHODS.values())


def method_names() -> tuple[str, ...]:
    """The registered method names, in registration order."""
    return tuple(spec.name for spec in methods())


def config_union() -> Any:
    """``Annotated[Union[<every registered config>], Field(discriminator="method")]``."""
    models = tuple(spec.config for spec in methods())
    union = models[0] if len(models) == 1 else Union[models]  # noqa: UP007 (built at run time)
    return Annotated[union, Field(discriminator="method")]


def parse_method_config(data: Mapping[str, Any] | BaseModel) -> BaseModel:
    """Validate ``data`` into the registered model its ``method`` names (default ``fbp``)."""
    if isinstance(data, BaseModel):
        return data
    data = dict(data)
    data.setdefault("method", "fbp")
    spec = get_method(data["method"])  # unknown method: one clear line naming the choices
    return spec.config(**data)


def _ensure_builtins() -> None:
    """The built-in methods are registered where their models are defined."""
    if not _METHODS:
        importlib.import_module("cryowedge.config.models")
