"""Command-line flags defined once, as typed dataclass fields, and YAML config values checked against them.

Each group of flags is one dataclass (as transformers' `HfArgumentParser` uses them); a command is the list of
groups it needs. The same definition gives the argparse flags (`add_flags`), their `--help`, and the check and
conversion of a YAML value to the flag's type (`convert`).

Why not `HfArgumentParser` itself: its `parse_yaml_file` / `parse_dict` hand YAML values to the dataclass
unchecked (`learning_rate: 1e-4`, which YAML reads as a string, stays a string; a quoted `"no"` for a boolean is
kept as a truthy string), it cannot tell a flag given on the command line from one left at its default (which
the precedence defaults < YAML < command line needs), and it spells booleans `--flag true` / `--no_flag` and
doubles every flag with a `--dashed-name`, where the training commands use `--flag` / `--no-flag`.

Example:
    >>> import argparse
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class Optimization:
    ...     TITLE = "optimization"
    ...     learning_rate: float = flag(1e-4, "peak learning rate", check="> 0")
    ...     scale_lr: bool = flag(False, "scale the learning rate by the batch size")
    >>> parser = argparse.ArgumentParser()
    >>> add_flags(parser, [Optimization])
    >>> vars(parser.parse_args(["--learning_rate", "3e-4", "--scale_lr"]))
    {'learning_rate': 0.0003, 'scale_lr': True}
    >>> convert("1e-4", float, "training.learning_rate")
    0.0001
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Union

from .errors import ConfigError

_NONE = type(None)


def flag(default: Any, help: str = "", *, check: str | None = None, aliases: Iterable[str] = ()) -> Any:  # noqa: A002
    """A dataclass field that is also a flag. `check`: ">= 1", "> 0", "[0, 1)", "(0, 1)"...; `aliases`: other names
    (without dashes) accepted on the command line and in config files."""
    return field(default=default, metadata={"help": help, "check": check, "aliases": tuple(aliases)})


@dataclass(frozen=True)
class FlagSpec:
    """One flag as read from its dataclass field."""

    name: str
    type: Any
    default: Any
    help: str
    check: str | None
    aliases: tuple[str, ...]
    section: str | None  # the YAML section that may set it (None: command line only)
    title: str  # the --help group it is listed in


def flag_specs(groups: Iterable[type]) -> dict[str, FlagSpec]:
    """Every flag of `groups` by name; a name defined twice is a programming error (one definition per flag)."""
    specs: dict[str, FlagSpec] = {}
    for group in groups:
        hints = typing.get_type_hints(group)
        for item in dataclasses.fields(group):
            if item.name in specs:
                raise TypeError(
                    f"flag --{item.name} is defined by both {specs[item.name].title!r} and {group.__name__}"
                )
            specs[item.name] = FlagSpec(
                name=item.name,
                type=hints[item.name],
                default=item.default,
                help=item.metadata.get("help", ""),
                check=item.metadata.get("check"),
                aliases=item.metadata.get("aliases", ()),
                section=getattr(group, "SECTION", "training"),
                title=getattr(group, "TITLE", group.__name__),
            )
    return specs


def add_flags(
    parser: argparse.ArgumentParser,
    groups: Iterable[type],
    defaults: dict[str, Any] | None = None,
    suppress_defaults: bool = False,
) -> None:
    """Add the flags of `groups` to `parser`, one argparse group each. `defaults` override the fields' defaults;
    with `suppress_defaults` the parser returns only the flags actually given (their defaults are shown in --help)."""
    defaults = defaults or {}
    by_title: dict[str, argparse._ArgumentGroup] = {}
    for spec in flag_specs(groups).values():
        if spec.title not in by_title:
            by_title[spec.title] = parser.add_argument_group(spec.title)
        default = defaults.get(spec.name, spec.default)
        kwargs = _argparse_kwargs(spec, default)
        if suppress_defaults:
            kwargs["default"] = argparse.SUPPRESS
            shown = "" if default is None else f" (default: {default})"
            kwargs["help"] = f"{kwargs['help']}{shown}".lstrip().replace("%", "%%")
        else:
            kwargs["help"] = kwargs["help"].replace("%", "%%")
        names = [f"--{spec.name}", *(f"--{alias}" for alias in spec.aliases)]
        by_title[spec.title].add_argument(*names, dest=spec.name, **kwargs)


def _argparse_kwargs(spec: FlagSpec, default: Any) -> dict[str, Any]:
    base = _without_none(spec.type)
    if base is bool:
        return {"action": argparse.BooleanOptionalAction, "default": default, "help": spec.help}
    if typing.get_origin(base) is Literal:
        return {"choices": list(typing.get_args(base)), "default": default, "help": spec.help}
    if base in (int, float, str):
        return {"type": base, "default": default, "help": spec.help}
    raise TypeError(f"flag --{spec.name}: type {spec.type} has no command-line form")


def _without_none(annotation: Any) -> Any:
    """`X | None` -> X (other unions are left as they are)."""
    if _is_union(annotation):
        members = [member for member in typing.get_args(annotation) if member is not _NONE]
        if len(members) == 1:
            return members[0]
    return annotation


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (Union, types.UnionType)


# ---------------------------------------------------------------------------------------------- values


def convert(value: Any, annotation: Any, name: str) -> Any:
    """`value` (from YAML or Python) as `annotation` wants it, or a `ConfigError` naming `name`.

    Strings that spell a number become numbers (YAML reads `1e-4` as a string); a boolean takes only true or false
    (a quoted "no" would otherwise be a truthy string); a list is never taken for a single value.
    """
    if annotation is Any or isinstance(annotation, (str, typing.ForwardRef)):
        return value  # an annotation that cannot be resolved here: left to the class that uses the value
    if _is_union(annotation):
        return _convert_union(value, annotation, name)
    if value is None:
        raise ConfigError(f"{name} cannot be null: expected {describe(annotation)}")
    origin = typing.get_origin(annotation)
    if origin is Literal:
        return _convert_choice(value, typing.get_args(annotation), name)
    if origin in (list, tuple):
        return _convert_list(value, annotation, name)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        hint = " (a quoted string: write true or false without quotes)" if isinstance(value, str) else ""
        raise ConfigError(f"{name} must be true or false, got {value!r}{hint}")
    if annotation in (int, float):
        return _convert_number(value, annotation, name)
    if annotation is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{name} must be a string, got {value!r}")
    if isinstance(annotation, type) and not isinstance(value, annotation):
        raise ConfigError(f"{name} must be {describe(annotation)}, got {value!r}")
    return value


def _convert_union(value: Any, annotation: Any, name: str) -> Any:
    members = typing.get_args(annotation)
    if value is None:
        if _NONE in members:
            return None
        raise ConfigError(f"{name} cannot be null: expected {describe(annotation)}")
    members = [member for member in members if member is not _NONE]
    for member in members:  # a value already of one of the types is kept as it is (an int for `float | int`)
        if isinstance(member, type) and type(value) is member:
            return value
    first_error: ConfigError | None = None
    for member in members:
        try:
            return convert(value, member, name)
        except ConfigError as error:
            first_error = first_error or error
    if len(members) == 1:
        raise first_error
    raise ConfigError(f"{name} must be {describe(annotation)}, got {value!r}")


def _convert_number(value: Any, kind: type, name: str) -> int | float:
    what = "an integer" if kind is int else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ConfigError(f"{name} must be {what}, got {value!r}")
    if isinstance(value, str):
        try:
            value = int(value) if kind is int else float(value)
        except ValueError:
            raise ConfigError(f"{name} must be {what}, got the string {value!r}") from None
    if kind is int and isinstance(value, float):
        if not value.is_integer():
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        value = int(value)
    return kind(value)


def _convert_choice(value: Any, choices: tuple, name: str) -> Any:
    if value is False and "no" in choices:
        return "no"  # YAML 1.1 reads an unquoted `no` (mixed_precision: no) as false
    if value in choices and not isinstance(value, bool):
        return value
    raise ConfigError(
        f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}"
        f"{did_you_mean(str(value), [str(choice) for choice in choices])}"
    )


def _convert_list(value: Any, annotation: Any, name: str) -> list:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{name} must be a list, got {value!r}")
    item_types = [item for item in typing.get_args(annotation) if item is not Ellipsis] or [Any]
    return [convert(item, item_types[0], f"{name}[{index}]") for index, item in enumerate(value)]


def describe(annotation: Any) -> str:
    """'an integer', 'a number or null', "one of 'l1', 'l2'"... for messages."""
    if _is_union(annotation):
        members = [member for member in typing.get_args(annotation) if member is not _NONE]
        text = " or ".join(dict.fromkeys(describe(member) for member in members))  # list | tuple: "a list" once
        return f"{text} or null" if _NONE in typing.get_args(annotation) else text
    if typing.get_origin(annotation) is Literal:
        return "one of " + ", ".join(map(repr, typing.get_args(annotation)))
    if typing.get_origin(annotation) in (list, tuple):
        return "a list"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(
        annotation, getattr(annotation, "__name__", str(annotation))
    )


_CHECK = re.compile(
    r"^\s*(?:(?P<op>>=|>|<=|<)\s*(?P<bound>[-\d.e]+)|(?P<open>[\[(])\s*(?P<low>[-\d.e]+)\s*,"
    r"\s*(?P<high>[-\d.e]+)\s*(?P<close>[\])]))\s*$"
)


def check_bound(value: Any, check: str | None, name: str) -> None:
    """Raise a `ConfigError` unless `value` (None passes) meets `check`: ">= 1", "> 0", "[0, 1)", "(0, 1]"..."""
    if check is None or value is None:
        return
    match = _CHECK.match(check)
    if match is None:
        raise ValueError(f"bad check {check!r} on {name}")
    if match["op"]:
        bound = float(match["bound"])
        ok = {">=": value >= bound, ">": value > bound, "<=": value <= bound, "<": value < bound}[match["op"]]
        if not ok:
            raise ConfigError(f"{name} must be {match['op']} {match['bound']}, got {value}")
        return
    low, high = float(match["low"]), float(match["high"])
    above = value >= low if match["open"] == "[" else value > low
    below = value <= high if match["close"] == "]" else value < high
    if not (above and below):
        raise ConfigError(f"{name} must lie in {check.strip()}, got {value}")


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """' (did you mean 'learning_rate'?)' for the nearest valid name, or ''."""
    matches = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.6)
    return f" (did you mean {matches[0]!r}?)" if matches else ""


class OneLineErrorParser(argparse.ArgumentParser):
    """An argparse parser whose usage errors are one line, `<prog>: error: <message>`, as the commands' own errors
    (a training command has ~80 flags: argparse's usage block would bury the message). `--help` is unchanged."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")
