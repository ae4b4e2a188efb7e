"""The one declaration of a run option (in the spirit of scikit-learn's ``_parameter_constraints``).

An `Option` says once: its type or `Choice`, its default, its help text, the stages whose
fingerprint it enters, and the value older runs implicitly used before it entered them. A
command's options are an `Options` (an ordered tuple of `Option`); from it come

* the typer options of the command line (`Options.typer_command`: every `Choice` option is
  checked while parsing, its help lists the allowed values);
* the Python front door's signature and defaults (`Options.resolve`, `Options.signature`);
* the recorded config of a run (`Options.config_class`, a frozen dataclass made from the spec);
* the options a stage's fingerprint holds (`Options.stage_options`).

Adding an option is one entry. This module sits below every layer: it imports only `_choice`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, make_dataclass
from dataclasses import replace as _replace
from typing import Any

from ._choice import Choice

NEW = object()
"""`Option.legacy` of an option that was there from the first run: it always enters its stages'
fingerprints."""


@dataclass(frozen=True)
class Option:
    """One run option, declared once.

    Attributes:
        name: the Python keyword (the command-line flag is ``--name-with-dashes`` unless `flag`).
        default: the default value (the Python one; `cli_default` overrides it on the command
            line when the two spell it differently, e.g. "all" for every method).
        help: one line for ``--help`` (a `Choice`'s allowed values are appended).
        type: the command-line type (str, int, float, bool, list[str]).
        choice: the `Choice` Enum the value must be a member of (checked at parse time and by
            `Options.resolve`; values are stored as the member's string).
        stages: the stages whose fingerprint this option enters.
        legacy: the value runs made before the option entered those fingerprints used: at this
            value the option stays out of the fingerprint, so those runs resume; at any other
            value (e.g. a default changed later) it enters, so old rows are refused, never
            resumed under a new meaning. `NEW`: always enters. A dict gives it per stage
            (stages it lacks: `NEW`).
        recorded: part of the run's recorded config (config.json, `Options.config_class`).
        min: the smallest allowed number (ints and floats).
        max: the largest allowed number (ints and floats).
        positive: the value must be > 0 (floats).
        flag: the command-line flag, when not derived from `name`.
        envvar: an environment variable the command line reads when the flag is not given.
        cli: offered on the command line.
        cli_default: the command-line default, when it differs from `default`.
        parse: the command line's value -> the Python value (e.g. "a,b" -> ("a", "b")); run
            while parsing too, so a ValueError it raises refuses the value there.
        coerce: a Python value -> its canonical form, checked (e.g. a list of names -> a
            tuple, each known); applied by `Options.resolve`.
        positional: a command-line argument (``isograd fit-detector RUN_DIR...``), not a flag.
    """

    name: str
    default: Any
    help: str
    type: Any = str
    choice: type[Choice] | None = None
    stages: tuple[str, ...] = ()
    legacy: Any = NEW
    recorded: bool = False
    min: float | None = None
    max: float | None = None
    positive: bool = False
    flag: str | None = None
    envvar: str | None = None
    cli: bool = True
    cli_default: Any = NEW
    parse: Callable[[Any], Any] | None = None
    coerce: Callable[[Any], Any] | None = None
    positional: bool = False

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    def validate(self, value: Any) -> Any:
        """`value` checked against the declaration (ValueError naming the option)."""
        if value is None:
            return value
        if self.coerce is not None:
            try:
                value = self.coerce(value)
            except ValueError as e:
                raise ValueError(f"{self.name}: {e}") from None
        if self.choice is not None and not isinstance(value, (list, tuple)):
            try:
                return self.choice.parse(value).value
            except ValueError as e:
                raise ValueError(f"{self.name}: {e}") from None
        if self.min is not None and isinstance(value, (int, float)) and value < self.min:
            raise ValueError(f"{self.name} must be >= {self.min:g}, got {value}")
        if self.max is not None and isinstance(value, (int, float)) and value > self.max:
            raise ValueError(f"{self.name} must be <= {self.max:g}, got {value}")
        if self.positive and isinstance(value, (int, float)) and not value > 0:
            raise ValueError(f"{self.name} must be > 0, got {value}")
        return value

    def legacy_at(self, stage: str) -> Any:
        """The value runs made before this option entered `stage`'s fingerprint used."""
        return self.legacy.get(stage, NEW) if isinstance(self.legacy, dict) else self.legacy

    def replace(self, **changes: Any) -> Option:
        """This option with some attributes changed (e.g. another command's default)."""
        return _replace(self, **changes)

    def help_text(self) -> str:
        if self.choice is None:
            return self.help
        return f"{self.help} ({' | '.join(m.value for m in self.choice)})"


@dataclass(frozen=True)
class Options:
    """The ordered options of one front door (a command and its Python function)."""

    options: tuple[Option, ...]
    by_name: Mapping[str, Option] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        names = [o.name for o in self.options]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"options declared twice: {', '.join(dupes)}")
        object.__setattr__(self, "by_name", {o.name: o for o in self.options})

    def __iter__(self):
        return iter(self.options)

    def __getitem__(self, name: str) -> Option:
        return self.by_name[name]

    def __add__(self, other: Iterable[Option]) -> Options:
        return Options((*self.options, *other))

    def with_(self, **changes: Mapping[str, Any]) -> Options:
        """These options with some entries changed: ``with_(batch_size={"default": 8})``."""
        unknown = sorted(set(changes) - set(self.by_name))
        if unknown:
            raise ValueError(f"no such option(s): {', '.join(unknown)}")
        return Options(tuple(o.replace(**changes[o.name]) if o.name in changes else o
                             for o in self.options))

    def without(self, *names: str) -> Options:
        return Options(tuple(o for o in self.options if o.name not in names))

    def defaults(self) -> dict[str, Any]:
        return {o.name: o.default for o in self.options}

    def resolve(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Every option's value: `given` over the defaults, each checked (`Option.validate`).

        Raises:
            TypeError: an unknown keyword (as a Python call would).
            ValueError: a value the declaration refuses.
        """
        unknown = sorted(set(given) - set(self.by_name))
        if unknown:
            raise TypeError(f"unexpected option(s) {', '.join(map(repr, unknown))}; allowed: "
                            f"{', '.join(self.by_name)}")
        return {o.name: o.validate(given.get(o.name, o.default)) for o in self.options}

    def signature(self, *leading: inspect.Parameter) -> inspect.Signature:
        """A keyword-only signature with the declared defaults (for ``help()`` and tools)."""
        params = [inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, default=o.default)
                  for o in self.options]
        return inspect.Signature([*leading, *params])

    def config_class(self, name: str, namespace: Mapping[str, Any] | None = None) -> type:
        """A frozen dataclass of the recorded options, in declaration order, with their
        defaults (the run's config.json); `namespace` adds methods."""
        fields_ = [(o.name, Any, field(default_factory=_factory(o.default))
                    if isinstance(o.default, (dict, list)) else field(default=o.default))
                   for o in self.options if o.recorded]
        return make_dataclass(name, fields_, frozen=True, namespace=dict(namespace or {}))

    def stage_options(self, stage: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """The options stage `stage`'s fingerprint holds: every option naming the stage, left
        out only at the value older runs implicitly used (`Option.legacy`)."""
        return {o.name: values[o.name] for o in self.options
                if stage in o.stages
                and (o.legacy_at(stage) is NEW or values[o.name] != o.legacy_at(stage))}

    def stages(self) -> set[str]:
        return {s for o in self.options for s in o.stages}

    def typer_command(self, body: Callable[..., Any], *, doc: str,
                      callbacks: Mapping[str, Callable[[Any], Any]] | None = None
                      ) -> Callable[..., Any]:
        """A function typer turns into a command with these options; it calls
        ``body(**values)`` with each command-line value converted by its `Option.parse`.

        Args:
            body: the command's work, taking every option by keyword.
            doc: the command's help.
            callbacks: extra parse-time checks by option name (e.g. a model folder's files),
                each returning the value or raising ``typer.BadParameter``.
        """
        import typer

        callbacks = dict(callbacks or {})
        params, notes = [], {}
        for o in self.options:
            if not o.cli:
                continue
            default = o.default if o.cli_default is NEW else o.cli_default
            if isinstance(default, tuple):
                default = list(default)
            extra: dict[str, Any] = {}
            if o.min is not None:
                extra["min"] = o.min
            if o.positional:
                extra["metavar"] = o.name.upper()
            if o.max is not None:
                extra["max"] = o.max
            if o.envvar is not None:
                extra["envvar"], extra["show_default"] = o.envvar, False
            decls = [o.flag] if o.flag else []  # typer derives --x (bools: --x/--no-x)
            make = typer.Argument if o.positional else typer.Option
            info = make(default, *([] if o.positional else decls), help=o.help_text(),
                        callback=_callback(o, callbacks.get(o.name)), **extra)
            params.append(inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY,
                                            default=info, annotation=o.type))
            notes[o.name] = o.type

        def command(**values: Any) -> Any:
            for o in self.options:
                if o.cli and o.parse is not None and values.get(o.name) is not None:
                    values[o.name] = o.parse(values[o.name])
            return body(**values)

        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = notes
        command.__doc__ = doc
        command.__name__ = getattr(body, "__name__", "command")
        return command


def _factory(value: Any) -> Callable[[], Any]:
    return lambda: type(value)(value)


def _callback(o: Option, extra: Callable[[Any], Any] | None) -> Callable[[Any], Any] | None:
    """The parse-time check of `o`: its Choice, range and `parse`, then `extra`."""
    if o.choice is None and not o.positive and o.parse is None and extra is None:
        return None

    def check(value: Any) -> Any:
        import typer

        if value is not None and value != []:
            try:
                if o.choice is not None:
                    o.choice.parse(value)
                if o.positive and not value > 0:
                    raise ValueError(f"must be > 0, got {value}")
                if o.parse is not None:
                    o.parse(value)
            except ValueError as e:
                raise typer.BadParameter(str(e)) from None
        return extra(value) if extra is not None else value

    return check
