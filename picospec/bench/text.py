"""How the benchmark's numbers and variants are written, in the report's markdown and the
`picospec simulate` table alike."""

from __future__ import annotations

from picospec.edge.config import Method
from picospec.verify import VerifyMode


def label(variant: tuple[Method, VerifyMode]) -> str:
    """A (method, verify mode) as tables name it: the method alone where the mode means nothing."""
    method, verify = variant
    return method.value if method in (Method.AR, Method.EDGE) else f"{method.value}/{verify.value}"


def optional_number(value: float | None, spec: str = ".2f", unit: str = "") -> str:
    """`value` formatted by `spec` with `unit` after it, or "-" where there is none."""
    return "-" if value is None else f"{value:{spec}}{unit}"
