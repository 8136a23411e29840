"""Parameter rules: each notebook declares its papermill parameters' types and
ranges once, in its setup cell, and a bad value fails there with one clear
message naming the parameter, the value and the allowed range.

    setup("01_steps_epochs_and_batches",
          seed=(seed, Int(0, 2**31 - 1)),
          epochs=(epochs, Int(1, 50)))

What is rejected, with a ParameterError: a value of the wrong type (a string,
None, True where a number belongs, a list where a scalar belongs), NaN and ±inf,
integers too large for a float or for int64, a value out of range, a list of the
wrong length, and any bad list item (its position is named: 'batch_sizes[2]').
Names that are not parameters of the notebook are rejected by setup() (see
unknown_parameter_error). Between parameters: check_relation() for a rule such
as "a < b", check_cost() for "this combination would run too long".
"""
from __future__ import annotations

import difflib
import math
import numbers
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

INT64_MIN, INT64_MAX = -2**63, 2**63 - 1


class ParameterError(ValueError):
    """A notebook parameter is outside its declared type or range."""


def _describe(value: Any) -> str:
    try:
        text = repr(value)
    except ValueError:  # an int with more digits than Python will print
        return f"<an integer of about {int(value.bit_length() * math.log10(2)) + 1} digits>"
    return text if len(text) <= 80 else text[:77] + "..."


def _fail(name: str, value: Any, allowed: str) -> None:
    raise ParameterError(
        f"parameter {name!r} = {_describe(value)} ({type(value).__name__}) "
        f"is not allowed: expected {allowed}"
    )


def _interval(lo, hi, lo_open=False, hi_open=False) -> str:
    left = "(" if lo_open else "["
    right = ")" if hi_open else "]"
    def fmt(v):
        return str(v) if isinstance(v, int) else f"{v:g}"
    lo_s = "-inf" if lo is None else fmt(lo)
    hi_s = "inf" if hi is None else fmt(hi)
    return f"{left}{lo_s}, {hi_s}{right}"


@dataclass(frozen=True)
class Int:
    """An integer in [lo, hi]. Bools are rejected; an open end (None) still stops
    at the int64 range, so no value reaches NumPy or TensorFlow that they cannot hold."""
    lo: int | None = None
    hi: int | None = None

    def _bounds(self) -> tuple[int, int]:
        return (INT64_MIN if self.lo is None else self.lo, INT64_MAX if self.hi is None else self.hi)

    def allowed(self) -> str:
        lo, hi = self._bounds()
        return f"an integer in {_interval(lo, hi)}"

    def check(self, name: str, value: Any) -> int:
        is_int = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        if isinstance(value, float) and value.is_integer():
            is_int = True  # papermill/YAML may hand us 4.0 for 4 (inf and NaN are not integers)
        if not is_int:
            _fail(name, value, self.allowed())
        value = int(value)
        lo, hi = self._bounds()
        if not lo <= value <= hi:
            _fail(name, value, self.allowed())
        return value


@dataclass(frozen=True)
class Float:
    """A finite real number in the interval lo..hi; open ends exclude the bound."""
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def allowed(self) -> str:
        return f"a finite number in {_interval(self.lo, self.hi, self.lo_open, self.hi_open)}"

    def check(self, name: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            _fail(name, value, self.allowed())
        try:
            converted = float(value)
        except OverflowError:  # an int beyond the float range, e.g. 10**400
            _fail(name, value, self.allowed())
        value = converted
        if not math.isfinite(value):
            _fail(name, value, self.allowed())
        if self.lo is not None and (value < self.lo or (self.lo_open and value == self.lo)):
            _fail(name, value, self.allowed())
        if self.hi is not None and (value > self.hi or (self.hi_open and value == self.hi)):
            _fail(name, value, self.allowed())
        return value


@dataclass(frozen=True)
class Bool:
    def allowed(self) -> str:
        return "True or False"

    def check(self, name: str, value: Any) -> bool:
        if not isinstance(value, bool):
            _fail(name, value, self.allowed())
        return value


@dataclass(frozen=True)
class Text:
    """A string (a path, a name): None, numbers and lists are rejected.

    allow_empty: whether "" is allowed (e.g. "empty means the default").
    max_len: the longest string allowed.
    """
    allow_empty: bool = True
    max_len: int = 4096

    def allowed(self) -> str:
        empty = "" if self.allow_empty else "non-empty "
        return f"a {empty}string of at most {self.max_len} characters"

    def check(self, name: str, value: Any) -> str:
        if not isinstance(value, str) or len(value) > self.max_len or (not value and not self.allow_empty):
            _fail(name, value, self.allowed())
        return value


@dataclass(frozen=True)
class Choice:
    options: tuple

    def allowed(self) -> str:
        return "one of " + ", ".join(repr(o) for o in self.options)

    def check(self, name: str, value: Any) -> Any:
        # `in` compares with ==, and True == 1: a bool only matches a bool option
        bools_allowed = any(isinstance(o, bool) for o in self.options)
        try:
            found = value in self.options
        except Exception:  # an object whose == does not return a bool (e.g. an array)
            found = False
        if not found or (isinstance(value, bool) and not bools_allowed):
            _fail(name, value, self.allowed())
        return value


@dataclass(frozen=True)
class ListOf:
    """A non-empty list (or tuple) whose every item passes `item`.

    min_len/max_len bound the length; unique=True rejects repeated items.
    """
    item: Int | Float | Choice
    min_len: int = 1
    max_len: int | None = None
    unique: bool = False

    def allowed(self) -> str:
        size = f"at least {self.min_len}"
        if self.max_len is not None:
            size += f" and at most {self.max_len}"
        extra = ", no repeats" if self.unique else ""
        return f"a list of {size} items, each {self.item.allowed()}{extra}"

    def check(self, name: str, value: Any) -> list:
        if not isinstance(value, (list, tuple)):
            _fail(name, value, self.allowed())
        if len(value) < self.min_len or (self.max_len is not None and len(value) > self.max_len):
            _fail(name, value, self.allowed())
        out = []
        for i, item in enumerate(value):
            try:
                out.append(self.item.check(f"{name}[{i}]", item))
            except ParameterError as err:
                # the item's own message names its position; add what the whole list must be
                raise ParameterError(f"{err} (item {i} of {name!r} = {_describe(value)}; "
                                     f"{name!r} must be {self.allowed()})") from None
        if self.unique and len(set(out)) != len(out):
            repeated = sorted({v for v in out if out.count(v) > 1})
            _fail(name, value, self.allowed() + f" (repeated: {', '.join(map(str, repeated))})")
        return out


def IntList(lo: int | None = None, hi: int | None = None, **kw) -> ListOf:
    return ListOf(Int(lo, hi), **kw)


def FloatList(lo=None, hi=None, lo_open=False, hi_open=False, **kw) -> ListOf:
    return ListOf(Float(lo, hi, lo_open, hi_open), **kw)


def validate(declared: dict[str, tuple[Any, Any]]) -> dict[str, Any]:
    """Check every (value, rule) pair; return the cleaned values by name.

    Raises ParameterError for the first bad value, before any work starts.
    """
    clean = {}
    for name, pair in declared.items():
        if not (isinstance(pair, tuple) and len(pair) == 2 and hasattr(pair[1], "check")):
            raise TypeError(
                f"setup(): declare {name!r} as ({name}, Rule), e.g. {name}=({name}, Int(1, 50))"
            )
        value, rule = pair
        clean[name] = rule.check(name, value)
    return clean


def check_relation(ok: bool, message: str) -> None:
    """For rules between parameters (e.g. 'anomalies_per_series < timesteps')."""
    if not ok:
        raise ParameterError(message)


def check_cost(estimate: float, limit: float, parameters: Mapping[str, Any], *, unit: str = "training steps",
               what: str = "this run") -> float:
    """Refuse a combination of parameters whose estimated cost exceeds a stated limit.

    estimate: the notebook's own estimate of the cost (e.g. epochs × steps per epoch,
      or bytes of one activation tensor), computed from the parameters.
    limit: the most the notebook allows, in the same unit.
    parameters: {name: value} of the parameters the estimate depends on; the
      message names them, so the reader knows which to lower.
    Returns the estimate (so a notebook can show it) when it is within the limit.

        check_cost(epochs * n_series / batch_size, 200_000, {"epochs": epochs, "n_series": n_series,
                   "batch_size": batch_size}, unit="training steps")
    """
    names = ", ".join(f"{n} = {_describe(v)}" for n, v in parameters.items())
    try:
        estimate = float(estimate)
    except (TypeError, ValueError, OverflowError):
        estimate = math.inf
    if not math.isfinite(estimate) or estimate > limit:
        shown = "too large to compute" if not math.isfinite(estimate) else f"{estimate:,.4g} {unit}"
        raise ParameterError(
            f"parameters {names} are not allowed together: {what} would cost {shown}; "
            f"expected at most {limit:,.4g} {unit} (lower one of {', '.join(map(repr, parameters))})")
    return estimate


def unknown_parameter_error(names: Iterable[str], allowed: Iterable[str], notebook: str = "") -> ParameterError:
    """The error for names that are not parameters of a notebook (a misspelt -p name).

    It names each unknown parameter, suggests the closest allowed name, and lists them all.
    """
    allowed = list(allowed)
    parts = []
    for name in names:
        close = difflib.get_close_matches(name, allowed, n=1, cutoff=0.6)
        parts.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    where = f"notebook {notebook}" if notebook else "this notebook"
    noun = "parameter" if len(parts) == 1 else "parameters"
    return ParameterError(
        f"unknown {noun} {', '.join(parts)}: {where} has no such parameter; "
        f"expected one of {', '.join(map(repr, allowed))}")


__all__ = ["ParameterError", "Int", "Float", "Bool", "Text", "Choice", "ListOf", "IntList",
           "FloatList", "validate", "check_relation", "check_cost", "unknown_parameter_error"]
