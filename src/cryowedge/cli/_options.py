"""CLI options generated from the configuration models: every option is written once.

A field of a config model becomes an option: its name is ``--field-name`` (or the field's
``cli`` flags, see :func:`cryowedge.config.models.cli`), its help the field's description,
its type and choices the field's annotation (``Literal`` → choices, ``bool`` →
``--x/--no-x``, tuples → several values), its shown default the field's default. Fields with
``cli_part`` share one multi-value option (``--tilt-range MIN MAX``).

Several models (the reconstruction methods) merge into one option list: a field present in
only some of them is accepted only with those methods (:func:`changes_for`) and is listed
under a help panel named after them; a default that differs between methods is shown per
method. Generated options default to ``None`` so that only the options a user gives
override a ``--config`` YAML file.

:class:`ConfigCommand` turns a function plus an option list into a typer command; the
options are read when the click command is built (each time the app runs), so a method
registered at run time shows up in ``--help`` and is accepted.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo

__all__ = ["ConfigCommand", "ConfigOption", "changes_for", "config_options"]


@dataclass(frozen=True)
class ConfigOption:
    """One CLI option and the config field(s) it sets.

    Attributes
    ----------
    name
        Python parameter name (click's destination).
    flags
        Option declarations, e.g. ``("--filter",)`` or ``("--positivity/--no-positivity",)``.
    fields
        Config fields it sets (two or more for a multi-value option such as ``--tilt-range``).
    annotation
        Python type given to typer (``int``, ``Literal[...]``, ``tuple[float, float]``...).
    help
        Help text (the field description).
    default_text
        The default(s) shown in ``--help``; None when the default is ``None``.
    owners
        Keys of the models (methods) that have the field; empty when every model has it.
    help_panel
        ``--help`` panel to list the option under (default: from ``owners``).
    """

    name: str
    flags: tuple[str, ...]
    fields: tuple[str, ...]
    annotation: Any
    help: str
    default_text: str | None
    owners: tuple[str, ...] = ()
    help_panel: str | None = None

    @property
    def flag(self) -> str:
        """The main flag, as users type it (``--positivity`` for a bool switch)."""
        return self.flags[0].split("/")[0]

    @property
    def panel(self) -> str | None:
        """Help panel: ``help_panel``, else the methods the option belongs to (None: every
        method)."""
        if self.help_panel is not None:
            return self.help_panel
        return f"Options of --method {', '.join(self.owners)}" if self.owners else None

    def parameter(self) -> inspect.Parameter:
        """The ``inspect.Parameter`` typer reads (default ``None`` = not given)."""
        shown = f" \\[default: {self.default_text}]" if self.default_text is not None else ""
        info = typer.Option(
            None,
            *self.flags,
            help=self.help + shown,
            rich_help_panel=self.panel,
            show_default=False,
        )
        return inspect.Parameter(
            self.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=info,
            annotation=self.annotation | None,
        )

    def changes(self, value: Any) -> dict[str, Any]:
        """Config changes of a given value (a multi-value option sets one field per value)."""
        if len(self.fields) == 1:
            return {self.fields[0]: value}
        return dict(zip(self.fields, value, strict=True))


def _meta(info: FieldInfo) -> dict[str, Any]:
    extra = info.json_schema_extra
    return dict(extra) if isinstance(extra, dict) else {}


def _strip_none(annotation: Any) -> Any:
    """``X | None`` → ``X`` (an option that is not given is ``None`` anyway)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = tuple(a for a in typing.get_args(annotation) if a is not type(None))
        return args[0] if len(args) == 1 else typing.Union[args]  # noqa: UP007
    return annotation


def _merge_types(name: str, types: Sequence[Any]) -> Any:
    """One annotation for a field shared by several models (Literal choices are united)."""
    if all(typing.get_origin(t) is Literal for t in types):
        values = tuple(dict.fromkeys(v for t in types for v in typing.get_args(t)))
        return Literal[values]
    if any(t != types[0] for t in types):
        raise TypeError(f"field {name!r} has different types in the config models: {types}.")
    return types[0]


def _show(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _default_text(defaults: Mapping[str, Any], n_models: int) -> str | None:
    values = list(defaults.values())
    if all(v is None for v in values):
        return None
    if len(set(map(repr, values))) == 1:
        return _show(values[0])
    return (
        ", ".join(f"{key} {_show(v)}" for key, v in defaults.items())
        if n_models > 1
        else _show(values[0])
    )


def config_options(
    models: Mapping[str, type[BaseModel]] | type[BaseModel], *, exclude: Sequence[str] = ()
) -> list[ConfigOption]:
    """The CLI options of one model, or of several (``{method: model}``) merged.

    Parameters
    ----------
    models
        A model, or method name → model; a field in only some models gets those names as
        ``owners``.
    exclude
        Field names that get no option.
    """
    if isinstance(models, type):
        models = {"": models}
    keys = list(models)
    fields: dict[str, dict[str, FieldInfo]] = {}
    for key, model in models.items():
        for name, info in model.model_fields.items():
            if name not in exclude:
                fields.setdefault(name, {})[key] = info
    options: list[ConfigOption] = []
    parts: dict[str, list[tuple[int, str]]] = {}
    for name, per_model in fields.items():
        first = next(iter(per_model.values()))
        meta = _meta(first)
        if "cli_part" in meta:
            parts.setdefault(meta["cli"][0], []).append((meta["cli_part"], name))
            continue
        annotation = _merge_types(name, [_strip_none(i.annotation) for i in per_model.values()])
        owners = tuple(per_model) if len(per_model) < len(keys) else ()
        flags = tuple(meta.get("cli", [f"--{name.replace('_', '-')}"]))
        if annotation is bool:
            flags = (f"{flags[0]}/--no-{flags[0].removeprefix('--')}", *flags[1:])
        default_text = _default_text({k: i.default for k, i in per_model.items()}, len(keys))
        options.append(
            ConfigOption(
                name, flags, (name,), annotation, first.description or "", default_text, owners
            )
        )
    for flag, members in parts.items():
        members.sort()
        names = tuple(n for _, n in members)
        infos = [next(iter(fields[n].values())) for n in names]
        annotation = tuple[tuple(_strip_none(i.annotation) for i in infos)]
        defaults = [i.default for i in infos]
        help_text = _meta(infos[0]).get("cli_help") or " / ".join(
            i.description or n for i, n in zip(infos, names, strict=True)
        )
        owners = tuple(fields[names[0]]) if len(fields[names[0]]) < len(keys) else ()
        options.append(
            ConfigOption(
                flag.removeprefix("--").replace("-", "_"),
                (flag,),
                names,
                annotation,
                help_text,
                " ".join(map(str, defaults)),
                owners,
            )
        )
    return options


def config_from(model: type, path: str | Path | None, options: Sequence[ConfigOption],
                given: Mapping[str, Any]) -> Any:
    """``model`` from the YAML file at ``path`` (or its defaults), then the options given,
    validated as one model."""
    if path is not None and not Path(path).is_file():
        raise FileNotFoundError(f"config file not found: {str(path)!r}; check the path.")
    base = model.from_yaml(path) if path else model()
    return base.updated(**changes_for(options, given))


def changes_for(
    options: Sequence[ConfigOption], given: Mapping[str, Any], owner: str | None = None
) -> dict[str, Any]:
    """Config changes from the given (non-None) option values.

    With ``owner`` (the chosen method), options of other methods are refused with one line
    such as ``--tv-lambda applies to --method tv, not sirt``.
    """
    changes: dict[str, Any] = {}
    wrong = []
    for option in options:
        value = given.get(option.name)
        if value is None:
            continue
        if owner is not None and option.owners and owner not in option.owners:
            wrong.append(
                f"{option.flag} applies to --method {', '.join(option.owners)}, not {owner}"
            )
        changes.update(option.changes(value))
    if wrong:
        raise ValueError("; ".join(wrong))
    return changes


class ConfigCommand:
    """A typer command: ``body``'s own parameters plus options generated from config models.

    ``body(**own_parameters, given=...)`` receives the values of the generated options as the
    dict ``given`` (option name → value, None when not given). ``options`` is called whenever
    the command is built, so the options follow the models (and the method registry).
    """

    def __init__(
        self,
        body: Callable[..., Any],
        options: Callable[[], list[ConfigOption]],
        *,
        name: str | None = None,
    ) -> None:
        self.body = body
        self.options = options
        self.__name__ = name or body.__name__
        self.__doc__ = body.__doc__  # the command's help
        self.__annotations__: dict[str, Any] = {}  # typer reads the signature below instead
        self.__module__ = body.__module__

    @property
    def __signature__(self) -> inspect.Signature:
        own = [
            p.replace(kind=inspect.Parameter.KEYWORD_ONLY)
            for p in inspect.signature(self.body, eval_str=True).parameters.values()
            if p.name != "given"
        ]
        generated = [o.parameter() for o in self.options()]
        taken = {p.name for p in own}
        clash = [p.name for p in generated if p.name in taken]
        if clash:
            raise TypeError(f"generated options clash with the command's own parameters: {clash}.")
        return inspect.Signature([*own, *generated])

    def __call__(self, **kwargs: Any) -> Any:
        names = {o.name for o in self.options()}
        given = {k: kwargs.pop(k) for k in list(kwargs) if k in names}
        return self.body(**kwargs, given=given)
