"""Typed config schemas generated from the signatures they configure, so that each default lives in one place.

A process's, loss's or sampler's options and their defaults are its constructor's (or function's) parameters.
``schema_from_signature`` turns them into a dataclass that Hydra's ConfigStore holds as ``schema/<group>/<name>``;
a group's YAML file extends it (``defaults: [/schema/process/ddpm@_here_, _self_]``) and sets only what differs.
A wrong key or a value of the wrong type then fails when the command line is composed, before anything runs.
"""
from __future__ import annotations

import dataclasses
import inspect
import typing
from typing import Any, Callable, Iterable, Optional

from omegaconf import MISSING

_PLAIN = (bool, int, float, str)


def _field_type(hint: Any) -> Any:
    """The annotation OmegaConf can check: a plain type, Optional of one, else Any (tensors, lists, unions)."""
    if hint in _PLAIN:
        return hint
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, getattr(__import__("types"), "UnionType", ())) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1 and rest[0] in _PLAIN:
            return Optional[rest[0]]
    return Any


def schema_from_signature(obj: Callable, target: str, *, name: str | None = None, skip: Iterable[str] = (),
                          keyword_only: bool = False, fixed: dict[str, Any] | None = None) -> type:
    """A dataclass with ``_target_`` = ``target``, the ``fixed`` fields (e.g. ``_partial_``) and one field per
    parameter of ``obj`` (its keyword-only ones if ``keyword_only``) with the parameter's default."""
    try:
        hints = typing.get_type_hints(obj.__init__ if inspect.isclass(obj) else obj)
    except Exception:  # noqa: BLE001 - an annotation this Python cannot evaluate: the field stays untyped
        hints = {}
    fields: list[tuple] = [("_target_", str, dataclasses.field(default=target))]
    for key, value in (fixed or {}).items():
        fields.append((key, type(value), dataclasses.field(default=value)))
    skip = set(skip)
    for p in inspect.signature(obj).parameters.values():
        if p.name in skip or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.name == "self":
            continue
        if keyword_only and p.kind is not p.KEYWORD_ONLY:
            continue
        default = MISSING if p.default is inspect.Parameter.empty else p.default
        if isinstance(default, (list, dict)):
            field = dataclasses.field(default_factory=lambda d=default: type(d)(d))
        else:
            field = dataclasses.field(default=default)
        ftype = _field_type(hints.get(p.name, Any))
        if default is None and ftype is not Any and typing.get_origin(ftype) is not typing.Union:
            ftype = Optional[ftype]
        fields.append((p.name, ftype, field))
    return dataclasses.make_dataclass(name or f"{obj.__name__}Config", fields)


__all__ = ["schema_from_signature"]
