"""Typed training options: what an algorithm can be configured by, declared where it registers.

An :class:`Option` has a name, a type, a default, a help text and its valid range or choices.
Every algorithm gets the :data:`COMMON` options (layers, hidden, epochs, ...) with its own
defaults where they differ (``AlgorithmSpec.defaults``), plus the options it declares itself.
:func:`resolve_options` turns what a caller gave (``fit(**options)`` or the command line) into
the complete, checked option dict of a run; the command line's flags are generated from the
same declarations (:func:`add_to_parser`), so ``ffkernels train --algo ff-vn --help`` lists
exactly what ff-vn accepts. ``None`` for an option means "the algorithm's default".
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Option:
    """One option of an algorithm.

    Attributes:
        name: the keyword (``fit(name=...)``); the command-line flag is ``--name-with-dashes``.
        type: ``int``, ``float``, ``str`` or ``bool``.
        default: the value when the caller gives none (``None``: resolved by the algorithm,
            e.g. "every layer's width").
        help: one line for ``--help``.
        choices: the allowed values of a ``str`` option.
        minimum, maximum: inclusive bounds of a number (``minimum_exclusive``: strict).
        nullable: ``None`` is a valid resolved value (the algorithm decides at run time).
    """
    name: str
    type: type
    default: object
    help: str
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    minimum_exclusive: bool = False
    nullable: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def check(self, value):
        """``value`` converted to this option's type, or ``ValueError``/``TypeError`` naming it."""
        if value is None:
            if self.nullable:
                return None
            raise ValueError(f"{self.name} must be given (no default)")
        if self.type is bool:
            if not isinstance(value, bool):
                raise TypeError(f"{self.name} must be True or False, got {value!r}")
            return value
        if self.type is int:
            if isinstance(value, bool) or not isinstance(value, int):
                if isinstance(value, float) and value.is_integer():
                    value = int(value)
                else:
                    raise TypeError(f"{self.name} must be an int, got {value!r}")
        elif self.type is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"{self.name} must be a number, got {value!r}")
            value = float(value)
            if not math.isfinite(value):
                raise ValueError(f"{self.name} must be finite, got {value}")
        elif self.type is str:
            if not isinstance(value, str):
                raise TypeError(f"{self.name} must be a string, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"{self.name} must be one of {list(self.choices)}, got {value!r}")
        if self.minimum is not None:
            if value < self.minimum or (self.minimum_exclusive and value == self.minimum):
                op = ">" if self.minimum_exclusive else ">="
                raise ValueError(f"{self.name} must be {op} {self.minimum:g}, got {value!r}")
        if self.maximum is not None and value > self.maximum:
            raise ValueError(f"{self.name} must be <= {self.maximum:g}, got {value!r}")
        return value


def positive_int(name, default, help, **kw) -> Option:
    return Option(name, int, default, help, minimum=1, **kw)


def positive_float(name, default, help, **kw) -> Option:
    return Option(name, float, default, help, minimum=0.0, minimum_exclusive=True, **kw)


def nonnegative_float(name, default, help, **kw) -> Option:
    return Option(name, float, default, help, minimum=0.0, **kw)


def choice(name, default, choices, help) -> Option:
    return Option(name, str, default, help, choices=tuple(choices))


#: Options every algorithm has (their defaults may be overridden per algorithm).
COMMON = (
    positive_int("layers", 4, "number of layers"),
    positive_int("hidden", 128, "width of every hidden layer", maximum=1 << 20),
    positive_int("epochs", 1000, "maximum epochs (per layer for greedy schedules)"),
    positive_int("patience", 100, "early stopping: validations without improvement before a stage stops"),
    positive_int("val_every", 2, "validate every this many epochs"),
    positive_float("lr", None, "learning rate of every layer's optimiser"),
    nonnegative_float("weight_decay", None, "weight decay of every layer's optimiser"),
    Option("seed", int, 0, "seed of the initialisation, the negatives and the shuffles", minimum=0),
    positive_int("threads", 1, "intra-op CPU threads while training (0: keep torch's setting)", nullable=True),
)
COMMON_NAMES = tuple(o.name for o in COMMON)


@dataclass(frozen=True)
class OptionSet:
    """The options of one algorithm: :data:`COMMON` (with overridden defaults) + its own."""
    algo: str
    options: tuple
    defaults: dict = field(default_factory=dict)
    models: tuple = ("gcn",)

    def all(self) -> tuple:
        """Every option (the model, the common ones, then its own), with this algorithm's defaults."""
        out = [Option("model", str, self.models[0], "the model to train", choices=tuple(self.models))]
        for opt in COMMON:
            if opt.name in self.defaults:
                opt = Option(**{**opt.__dict__, "default": self.defaults[opt.name]})
            out.append(opt)
        return tuple(out) + tuple(self.options)

    def names(self) -> tuple:
        return tuple(o.name for o in self.all())


def resolve_options(option_set: OptionSet, given: dict, other_algorithms: dict | None = None) -> dict:
    """The complete, checked options of a run: ``given`` values over the algorithm's defaults.

    ``given[name] = None`` means "the default". An unknown name is a ``ValueError`` that says
    which algorithms do have it (``other_algorithms``: ``{algo: OptionSet}``), so an option an
    algorithm cannot honour is never silently ignored.
    """
    declared = {o.name: o for o in option_set.all()}
    for name in given:
        if name not in declared:
            owners = sorted(a for a, s in (other_algorithms or {}).items() if name in s.names())
            hint = f"; algorithms that have it: {', '.join(owners)}" if owners else ""
            raise ValueError(f"algo {option_set.algo!r} has no option {name!r} (its options: "
                             f"{', '.join(declared)}){hint}")
    out = {}
    for name, opt in declared.items():
        value = given.get(name)
        if value is None:
            value = opt.default
        if name == "threads" and value == 0:  # 0: keep torch's own thread setting
            value = None
        out[name] = opt.check(value)
    return out


def add_to_parser(parser, option_set: OptionSet) -> None:
    """Add one ``--flag`` per option of ``option_set`` to an argparse parser (default ``None``:
    the resolved default applies, so the parser never hides an algorithm's own default)."""
    import argparse
    common = parser.add_argument_group("options of every algorithm")
    own = parser.add_argument_group(f"options of --algo {option_set.algo}") if option_set.options else None
    for opt in option_set.all():
        group = common if opt.name in COMMON_NAMES or opt.name == "model" else own
        shown = "the algorithm's choice" if opt.default is None else repr(opt.default)
        text = f"{opt.help} (default: {shown})"
        if opt.type is bool:
            group.add_argument(opt.flag, dest=opt.name, action=argparse.BooleanOptionalAction, default=None,
                               help=text)
        else:
            group.add_argument(opt.flag, dest=opt.name, type=opt.type, default=None, choices=opt.choices,
                               help=text, metavar=None if opt.choices else opt.type.__name__.upper())


def _shown(value) -> str:
    return "the algorithm's choice" if value is None else f"`{value!r}`"


def options_markdown(algorithms: dict) -> str:
    """The options of every registered algorithm as Markdown tables (docs/api.md's table)."""
    out = ["| common option | type | default | meaning |", "|---|---|---|---|"]
    for opt in COMMON:
        out.append(f"| `{opt.name}` | {opt.type.__name__} | {_shown(opt.default)} | {opt.help} |")
    out.append("")
    out.append("| algo | models | its defaults | its own options (type, default: meaning) |")
    out.append("|---|---|---|---|")
    for name, spec in sorted(algorithms.items()):
        defaults = ", ".join(f"`{k}={v!r}`" for k, v in sorted(spec.options.defaults.items())) or "-"
        own = "<br>".join(
            f"`{o.name}` ({o.type.__name__}, {_shown(o.default)}"
            + (f", one of {', '.join(o.choices)}" if o.choices else "") + f"): {o.help}"
            for o in spec.options.options) or "-"
        out.append(f"| `{name}` | {', '.join(spec.models)} | {defaults} | {own} |")
    return "\n".join(out) + "\n"


__all__ = ["options_markdown", "Option", "OptionSet", "COMMON", "COMMON_NAMES", "resolve_options", "add_to_parser", "positive_int",
           "positive_float", "nonnegative_float", "choice"]

