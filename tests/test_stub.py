"""The hand-written stub ormkit/_ormkit.pyi must match the built native module ormkit._ormkit.

The stub is parsed with ``ast`` (never imported) and compared with the module at runtime:
(a) the same public top-level names, (b) the same public members on every class, (c) the same
base classes, (d) the same parameters (names, kinds, defaults) for every method and function
whose runtime signature is known, and properties/staticmethods where the runtime has them.
When the Rust API in rust/py/ changes, rebuild and update the stub until this passes.
"""

from __future__ import annotations

import ast
import inspect
import types
from pathlib import Path

import pytest

from ormkit import _ormkit

STUB_PATH = Path(__file__).resolve().parent.parent / "ormkit" / "_ormkit.pyi"
STUB = ast.parse(STUB_PATH.read_text(encoding="utf-8"), filename=str(STUB_PATH))

_KINDS = inspect.Parameter


def _is_dunder(name: str) -> bool:
    return name.startswith("__") and name.endswith("__") and len(name) > 4


def _is_private(name: str) -> bool:
    return name.startswith("_") and not _is_dunder(name)


def _targets(node: ast.stmt) -> list[str]:
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return [node.target.id]
    if isinstance(node, ast.Assign):
        return [t.id for t in node.targets if isinstance(t, ast.Name)]
    return []


def _top_level() -> dict[str, ast.stmt]:
    names: dict[str, ast.stmt] = {}
    for node in STUB.body:
        if isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            names[node.name] = node
        for t in _targets(node):
            names[t] = node
    return {n: node for n, node in names.items() if not n.startswith("_")}


def _stub_classes() -> dict[str, ast.ClassDef]:
    return {n: node for n, node in _top_level().items() if isinstance(node, ast.ClassDef)}


def _members(cls: ast.ClassDef) -> dict[str, ast.stmt]:
    members: dict[str, ast.stmt] = {}
    for node in cls.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            members.setdefault(node.name, node)  # the first of several @overload
        for t in _targets(node):
            members[t] = node
    return members


def _decorators(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> set[str]:
    return {ast.unparse(d).rsplit(".", 1)[-1] for d in fn.decorator_list}


def _builtin_members(cls: type) -> set[str]:
    """Members a class gets from object (or BaseException), which the stub need not list."""
    inherited = set(dir(object))
    if issubclass(cls, BaseException):
        inherited |= set(dir(BaseException))
    return inherited


# PyO3 implements some special methods through a slot that Python shows under another name:
# `__getattr__` (called only when normal lookup fails) fills tp_getattro, seen as `__getattribute__`.
SLOT_ALIASES = {"__getattr__": "__getattribute__"}


def _defined_natively(cls: type, name: str) -> bool:
    """True when `name` comes from the class or a non-builtin base, not from object/BaseException."""
    name = SLOT_ALIASES.get(name, name)
    return any(name in vars(k) for k in cls.__mro__ if k.__module__ != "builtins")


def _report(title: str, diffs: list[str]) -> str:
    return f"{title} ({STUB_PATH.name} vs ormkit._ormkit):\n  " + "\n  ".join(diffs)


# (a) top-level names


def test_top_level_names_match() -> None:
    stub = _top_level()
    runtime = {n for n in dir(_ormkit) if not n.startswith("_")}
    diffs = [f"{n}: in the stub, missing from the module" for n in sorted(set(stub) - runtime)]
    diffs += [f"{n}: in the module, missing from the stub" for n in sorted(runtime - set(stub))]
    for name in sorted(set(stub) & runtime):
        node, obj = stub[name], getattr(_ormkit, name)
        if isinstance(node, ast.ClassDef) and not isinstance(obj, type):
            diffs.append(f"{name}: a class in the stub, a {type(obj).__name__} in the module")
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and (isinstance(obj, type) or not callable(obj)):
            diffs.append(f"{name}: a function in the stub, a {type(obj).__name__} in the module")
    assert not diffs, _report("top-level names differ", diffs)


# (b) class members


@pytest.mark.parametrize("name", sorted(_stub_classes()))
def test_class_members_match(name: str) -> None:
    cls = getattr(_ormkit, name, None)
    if not isinstance(cls, type):
        pytest.fail(f"{name}: a class in the stub but not in the module (see test_top_level_names_match)")
    stub = set(_members(_stub_classes()[name]))
    inherited = _builtin_members(cls)
    runtime = {
        n for n in dir(cls) if not _is_private(n) and not (_is_dunder(n) and n not in stub) and n not in inherited
    }
    runtime |= {n for n in stub if _is_dunder(n) and _defined_natively(cls, n)}
    diffs = [f"{name}.{n}: in the stub, missing from the runtime class" for n in sorted(stub - runtime)]
    diffs += [f"{name}.{n}: on the runtime class, missing from the stub" for n in sorted(runtime - stub)]
    assert not diffs, _report(f"members of {name} differ", diffs)


# (c) base classes


@pytest.mark.parametrize("name", sorted(_stub_classes()))
def test_class_bases_match(name: str) -> None:
    cls = getattr(_ormkit, name, None)
    if not isinstance(cls, type):
        pytest.fail(f"{name}: a class in the stub but not in the module (see test_top_level_names_match)")
    node = _stub_classes()[name]
    stub = [ast.unparse(b).rsplit(".", 1)[-1] for b in node.bases] or ["object"]
    runtime = [b.__name__ for b in cls.__bases__]
    assert stub == runtime, _report(f"bases of {name} differ", [f"stub {stub}, runtime {runtime}"])


# (d) signatures, properties and staticmethods


def _stub_params(fn: ast.FunctionDef | ast.AsyncFunctionDef, drop_self: bool) -> list[tuple[str, str, str | None]]:
    a = fn.args
    positional = [(p, _KINDS.POSITIONAL_ONLY) for p in a.posonlyargs] + [
        (p, _KINDS.POSITIONAL_OR_KEYWORD) for p in a.args
    ]
    defaults: list[ast.expr | None] = [None] * (len(positional) - len(a.defaults)) + list(a.defaults)
    params = [(p.arg, kind, d) for (p, kind), d in zip(positional, defaults, strict=True)]
    if drop_self and params:
        params = params[1:]
    if a.vararg:
        params.append((a.vararg.arg, _KINDS.VAR_POSITIONAL, None))
    params += [(p.arg, _KINDS.KEYWORD_ONLY, d) for p, d in zip(a.kwonlyargs, a.kw_defaults, strict=True)]
    if a.kwarg:
        params.append((a.kwarg.arg, _KINDS.VAR_KEYWORD, None))
    # The runtime has no positional-only marker on the parameters after `self`.
    return [
        (
            n,
            (_KINDS.POSITIONAL_OR_KEYWORD if k is _KINDS.POSITIONAL_ONLY else k).name,
            None if d is None else ast.unparse(d),
        )
        for n, k, d in params
    ]


def _runtime_params(obj: object, drop_self: bool) -> list[tuple[str, str, str | None]] | None:
    try:
        sig = inspect.signature(obj)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    params = list(sig.parameters.values())
    if drop_self and params:
        params = params[1:]
    return [
        (
            p.name,
            (_KINDS.POSITIONAL_OR_KEYWORD if p.kind is _KINDS.POSITIONAL_ONLY else p.kind).name,
            None if p.default is _KINDS.empty else repr(p.default),
        )
        for p in params
    ]


def _signature_diffs() -> list[str]:
    diffs: list[str] = []
    for name, node in _top_level().items():
        obj = getattr(_ormkit, name, None)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and callable(obj):
            got, want = _stub_params(node, drop_self=False), _runtime_params(obj, drop_self=False)
            if want is not None and got != want:
                diffs.append(f"{name}(): stub {got}, runtime {want}")
    for cname, cnode in _stub_classes().items():
        cls = getattr(_ormkit, cname, None)
        if not isinstance(cls, type):
            continue
        for mname, mnode in _members(cnode).items():
            if not isinstance(mnode, ast.FunctionDef | ast.AsyncFunctionDef) or not hasattr(cls, mname):
                continue
            raw = inspect.getattr_static(cls, mname)
            decorators = _decorators(mnode)
            where = f"{cname}.{mname}"
            is_property = isinstance(raw, property | types.GetSetDescriptorType | types.MemberDescriptorType)
            if ("property" in decorators) != is_property:
                diffs.append(f"{where}: property in the stub is {'property' in decorators}, at runtime {is_property}")
                continue
            if is_property:
                continue
            is_static = isinstance(raw, staticmethod)
            if ("staticmethod" in decorators) != is_static:
                diffs.append(
                    f"{where}: staticmethod in the stub is {'staticmethod' in decorators}, at runtime {is_static}"
                )
                continue
            if isinstance(raw, types.WrapperDescriptorType) or not _defined_natively(cls, mname):
                continue  # slot wrappers only report (self, /, ...) generically
            got = _stub_params(mnode, drop_self=not is_static)
            want = _runtime_params(getattr(cls, mname), drop_self=not is_static)
            if want is not None and got != want:
                diffs.append(f"{where}(): stub {got}, runtime {want}")
    return sorted(diffs)


def test_signatures_match() -> None:
    diffs = _signature_diffs()
    assert not diffs, _report("signatures differ", diffs)
