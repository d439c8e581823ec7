"""What the zoo can be asked for, and how it says no.

Every refusal is a ``KDConfigError`` (a ValueError, so pydantic turns one raised in a validator
into a field error that rayflow's config loader prints as ``student.kd.methods.0: ...``). Methods
that exist in the literature but not here are also ``NotImplementedError``s.
"""

from __future__ import annotations

KNOWN_METHODS: tuple[str, ...] = ("blkd", "fitnet", "at", "sp", "vid", "rkd", "pkt", "crd")

_NOT_LOSSES = {
    "sskd": ("SSKD is not implemented: it needs a self-supervised rotation head on the teacher and "
             "four rotated copies of every image, which the student loop does not provide"),
    "takd": ("TAKD is not a loss: it is a chain of training stages (teacher -> assistant -> student, "
             "each distilled with blkd); list it in kd_table (e.g. kd_table=[takd] or {method: takd, "
             "assistant: cnn_small}), not in student.kd"),
}
TABLE_ONLY: tuple[str, ...] = ("takd",)  # stage chains: kd_table rows, never a loss term


class KDConfigError(ValueError):
    """A distillation setting that cannot work: unknown method, bad layer, incompatible models."""


class KDMethodUnavailable(KDConfigError, NotImplementedError):
    """A method name the zoo knows of but does not build as a loss (sskd, takd)."""


def known_list() -> str:
    return ", ".join(KNOWN_METHODS)


def check_method_name(name: object, table: bool = False) -> str:
    """`name` if the zoo builds it (or, `table`: if kd_table can have it as a row: also takd);
    otherwise one message naming it and the methods that exist."""
    if table and name in TABLE_ONLY:
        return name  # type: ignore[return-value]
    if isinstance(name, str) and name.lower() in _NOT_LOSSES:
        raise KDMethodUnavailable(f"{_NOT_LOSSES[name.lower()]}; implemented KD methods: {known_list()}")
    if name not in KNOWN_METHODS:
        raise KDConfigError(f"unknown KD method {name!r}; known methods: {known_list()}")
    return name  # type: ignore[return-value]
