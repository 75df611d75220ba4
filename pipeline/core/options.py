"""Command-line options generated from a stage's pydantic config, so the config is the CLI.

Each field becomes `--field-name` with its description as help; `Literal` fields get choices,
booleans get `--x/--no-x` (or a named opposite, such as `--lowercase/--cased`). Options not
given are left out, so the config's own defaults apply and the config's validation names the
field of any bad value.
"""

from __future__ import annotations

import argparse
import types
import typing
from typing import Any, Literal

from pydantic import BaseModel, ValidationError


def add_config_options(
    parser: argparse.ArgumentParser, model: type[BaseModel], skip: tuple[str, ...] = ()
) -> None:
    group = parser.add_argument_group(f"{model.__name__} options")
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        flag = "--" + name.replace("_", "-")
        kind, choices = _scalar_type(field.annotation)
        default = field.get_default(call_default_factory=True)
        help_text = f"{field.description or ''} (default: {default})".strip().replace("%", "%%")
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "help": help_text}
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        if kind is bool and "cli_false_flag" in extra:  # e.g. --lowercase / --cased
            pair = group.add_mutually_exclusive_group()
            pair.add_argument(flag, action="store_true", **kwargs)
            false_flag = f"--{extra['cli_false_flag']}"
            pair.add_argument(
                false_flag,
                action="store_false",
                dest=name,
                default=argparse.SUPPRESS,
                help=f"the opposite of {flag}",
            )
        elif kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        elif kind is list:
            group.add_argument(flag, nargs="+", metavar=name.upper(), **kwargs)
        elif choices:
            group.add_argument(flag, choices=choices, **kwargs)
        else:
            group.add_argument(flag, type=kind, metavar=name.upper(), **kwargs)


def config_from_args(model: type[BaseModel], args: argparse.Namespace, **given: Any) -> BaseModel:
    values = {name: getattr(args, name) for name in model.model_fields if hasattr(args, name)}
    return model(**{**values, **given})


def describe_validation_error(error: ValidationError) -> str:
    """`--field-name: problem` lines, in the words a command-line user typed."""
    lines = []
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"])
        where = f"--{field.replace('_', '-')}: " if field else ""
        lines.append(f"{where}{item['msg'].removeprefix('Value error, ')}")
    return "\n".join(lines)


def _scalar_type(annotation: Any) -> tuple[Any, list[str] | None]:
    """(python type for argparse, choices) for a field annotation like `int | None`."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _scalar_type(args[0])
    if origin is Literal:
        return str, [str(a) for a in typing.get_args(annotation)]
    if origin is list:
        return list, None
    return annotation, None
