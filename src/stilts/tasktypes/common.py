"""Helpers shared by the task types."""

from __future__ import annotations

from stilts.errors import StiltsError


def field(row: dict, key: str, where: str):
    if key not in row or row[key] is None:
        raise StiltsError(f"{where}: missing field '{key}'")
    return row[key]


def text(row: dict, key: str, where: str) -> str:
    value = field(row, key, where)
    if not isinstance(value, str):
        raise StiltsError(f"{where}: field '{key}' must be text, got {type(value).__name__}")
    return value


def label_str(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).strip()


def first_token_pool(hidden):
    return hidden[:, 0]
