"""Type and range checks of settings dataclasses, in one place, from their annotations.

A field's annotation says what it accepts: ``int``, ``float`` (an int is taken and stored as a float),
``bool``, ``str``, ``Literal[...]`` choices, ``X | None``, ``tuple[int, ...]`` / ``tuple[float, float]``
(a JSON list is taken), ``dict``; ``Annotated[T, Range(...)]`` adds bounds. :func:`check_fields`
checks and normalises every field of a dataclass instance and raises :class:`ConfigError` naming the
field, the value and what is accepted. ``bool`` is never taken as a number (``utd=true`` is refused).

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class S:
    ...     n: PositiveInt = 1
    ...     p: Fraction = 0.5
    ...     def __post_init__(self):
    ...         check_fields(self, prefix="extra.")
    >>> S(n=3, p=1).p
    1.0
    >>> S(n=2.5)
    Traceback (most recent call last):
    ...
    torchrl_vmbpo.errors.ConfigError: extra.n must be an integer >= 1, got 2.5
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import textwrap
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from torchrl_vmbpo.errors import ConfigError


@dataclass(frozen=True)
class Range:
    """Bounds of a number (or of each element of a tuple): ``low <= x`` (``low < x`` if ``low_open``) and so on."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def holds(self, x: float) -> bool:
        if isinstance(x, float) and not math.isfinite(x):
            return False
        if self.low is not None and (x <= self.low if self.low_open else x < self.low):
            return False
        return not (self.high is not None and (x >= self.high if self.high_open else x > self.high))

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            return f" in {'(' if self.low_open else '['}{_num(self.low)}, {_num(self.high)}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f" {'>' if self.low_open else '>='} {_num(self.low)}"
        if self.high is not None:
            return f" {'<' if self.high_open else '<='} {_num(self.high)}"
        return ""


PositiveInt = Annotated[int, Range(1)]
NonNegativeInt = Annotated[int, Range(0)]
PositiveFloat = Annotated[float, Range(0, low_open=True)]
NonNegativeFloat = Annotated[float, Range(0)]
Fraction = Annotated[float, Range(0, 1)]


def check_fields(obj: Any, *, prefix: str = "") -> None:
    """Check every field of the dataclass ``obj`` against its annotation; store normalised values
    (int -> float for float fields, list -> tuple) even on frozen dataclasses.

    Raises:
        ConfigError: ``"{prefix}{field} must be {what is accepted}, got {value!r}"``.
    """
    hints = typing.get_type_hints(type(obj), include_extras=True)
    for f in dataclasses.fields(obj):
        if not f.init:
            continue
        value = getattr(obj, f.name)
        ok, normalised = _conform(hints[f.name], value)
        if not ok:
            raise ConfigError(f"{prefix}{f.name} must be {describe(hints[f.name])}, got {_show(value)}")
        if normalised is not value:
            object.__setattr__(obj, f.name, normalised)


def describe(hint: Any) -> str:
    """What a value of type ``hint`` may be, in words (``"an integer >= 1"``, ``"one of 'pi', 'q_c'"``)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        base, *marks = args
        bounds = "".join(m.describe() for m in marks if isinstance(m, Range))
        if typing.get_origin(base) is tuple:
            return f"{describe(base)}{' (each' + bounds + ')' if bounds else ''}"
        return describe(base) + bounds
    if origin in (Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        return " or ".join(describe(a) for a in rest) + (" or null" if len(rest) < len(args) else "")
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_plural(args[0])}"
        return f"a list of {len(args)} {_plural(args[0])}"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string", dict: "a mapping"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


def _conform(hint: Any, value: Any) -> tuple[bool, Any]:
    """(does ``value`` fit ``hint``, the normalised value)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Annotated:
        base, *marks = args
        ok, value = _conform(base, value)
        if not ok:
            return False, value
        items = value if isinstance(value, tuple) else (value,)
        return all(m.holds(x) for m in marks if isinstance(m, Range) for x in items if x is not None), value
    if origin in (Union, types.UnionType):
        if value is None:
            return type(None) in args, None
        for arg in args:
            if arg is not type(None):
                ok, normalised = _conform(arg, value)
                if ok:
                    return True, normalised
        return False, value
    if origin is Literal:
        return any(value == a and type(value) is type(a) for a in args), value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False, value
        element_types = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(element_types) != len(value) or (len(args) == 2 and args[1] is Ellipsis and not value):
            return False, value
        out = []
        for element_type, x in zip(element_types, value):
            ok, x = _conform(element_type, x)
            if not ok:
                return False, value
            out.append(x)
        return True, tuple(out)
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False, value
        return True, float(value)
    if hint is str:
        return isinstance(value, str), value
    if hint is dict:
        return isinstance(value, dict), value
    if hint is Any:
        return True, value
    return isinstance(value, hint), value


def _plural(hint: Any) -> str:
    word = describe(hint)
    return {"an integer": "integers", "a number": "numbers", "a string": "strings"}.get(word, word)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def field_docs(cls: type) -> dict[str, str]:
    """Each dataclass field's documentation, from the source: the string literal after the field or
    its trailing ``#:`` comment (the forms Sphinx reads), inherited fields included."""
    docs: dict[str, str] = {}
    for klass in reversed([k for k in cls.__mro__ if dataclasses.is_dataclass(k)]):
        try:
            source = textwrap.dedent(inspect.getsource(klass))
        except (OSError, TypeError):
            continue
        lines = source.splitlines()
        body = ast.parse(source).body[0].body
        for node, after in zip(body, [*body[1:], None]):
            if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
                continue
            if (
                isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[node.target.id] = " ".join(inspect.cleandoc(after.value.value).split())
            elif "#:" in lines[node.end_lineno - 1]:
                docs[node.target.id] = lines[node.end_lineno - 1].split("#:", 1)[1].strip()
    return docs


def describe_fields(obj: Any, *, prefix: str = "") -> list[tuple[str, Any, str, str]]:
    """``(name, value, what is accepted, documentation)`` for every field of the dataclass ``obj``."""
    hints = typing.get_type_hints(type(obj), include_extras=True)
    docs = field_docs(type(obj))
    return [
        (prefix + f.name, getattr(obj, f.name), describe(hints[f.name]), docs.get(f.name, ""))
        for f in dataclasses.fields(obj)
        if f.init
    ]
