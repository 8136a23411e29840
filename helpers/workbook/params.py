"""Parameter rules: each notebook declares its papermill parameters' types and
ranges once, in its setup cell, and a bad value fails there with one clear
message naming the parameter, the value and the allowed range.

    setup("01_steps_epochs_and_batches",
          seed=(seed, Int(0, 2**31 - 1)),
          epochs=(epochs, Int(1, 50)))
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Sequence


class ParameterError(ValueError):
    """A notebook parameter is outside its declared type or range."""


def _describe(value: Any) -> str:
    text = repr(value)
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
    """An integer in [lo, hi] (None = unbounded). Bools are rejected."""
    lo: int | None = None
    hi: int | None = None

    def allowed(self) -> str:
        return f"an integer in {_interval(self.lo, self.hi)}"

    def check(self, name: str, value: Any) -> int:
        is_int = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        if isinstance(value, float) and value.is_integer():
            is_int = True  # papermill/YAML may hand us 4.0 for 4
        if not is_int:
            _fail(name, value, self.allowed())
        value = int(value)
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
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
        value = float(value)
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
class Choice:
    options: tuple

    def allowed(self) -> str:
        return "one of " + ", ".join(repr(o) for o in self.options)

    def check(self, name: str, value: Any) -> Any:
        if isinstance(value, bool) or value not in self.options:
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
            except ParameterError:
                _fail(name, value, self.allowed())
        if self.unique and len(set(out)) != len(out):
            _fail(name, value, self.allowed())
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


__all__ = ["ParameterError", "Int", "Float", "Bool", "Choice", "ListOf", "IntList",
           "FloatList", "validate", "check_relation"]
