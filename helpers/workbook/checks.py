"""Check cells: assert a claim the lesson just made, and say what was measured."""
from __future__ import annotations


class ClaimFailed(AssertionError):
    """A claim made in a lesson's prose did not hold on this run."""


def check(condition: bool, claim: str, measured: str = "") -> None:
    """Raise ClaimFailed unless `condition`; print a one-line confirmation otherwise.

    claim: what the lesson says should hold ("BN at m=2 halves the variance").
    measured: the numbers behind it ("ratio = 0.501 ± 0.004").
    """
    if not bool(condition):
        raise ClaimFailed(f"expected: {claim}; measured: {measured or 'see above'}")
    print(f"✔ {claim}" + (f"  —  measured: {measured}" if measured else ""))
