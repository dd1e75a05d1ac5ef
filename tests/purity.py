"""One purity guard for every pure package (raft, versioning, sharding, the chaos checks).

Each package's ``test_purity.py`` names its own :class:`Rules` (which imports it may use
and how it may touch ``random``) and runs :func:`violations` over its modules' source,
read with :mod:`ast`. What is banned everywhere: calls that reach the file system, the
console or the interpreter (``open``, ``print``, ``exec``, ...), the clock through
``datetime.now()`` and its kin, and any import not on the package's allow-list (so
``time``, ``os``, ``socket``, ``asyncio``, ``threading`` are out unless a package lists
them, which none does). Adding an import to an allow-list is a conscious decision made in
that package's test file.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Literal

BANNED_CALLS = frozenset(
    {"open", "input", "print", "exec", "eval", "compile", "__import__", "breakpoint"}
)
BANNED_ATTRIBUTE_CALLS = frozenset(
    {
        "datetime.now",
        "datetime.utcnow",
        "datetime.today",
        "date.today",
        "datetime.datetime.now",
        "datetime.datetime.utcnow",
        "datetime.datetime.today",
        "datetime.date.today",
        "datetime.fromtimestamp",
        "datetime.datetime.fromtimestamp",
    }
)
# named so the message says why; importing any of them is banned unless allowed
IMPURE_MODULES = frozenset(
    {
        "asyncio",
        "io",
        "os",
        "pathlib",
        "random",
        "secrets",
        "select",
        "selectors",
        "shutil",
        "signal",
        "socket",
        "subprocess",
        "sys",
        "tempfile",
        "threading",
        "time",
        "urllib",
        "uuid",
    }
)

RandomPolicy = Literal["none", "injected", "seeded"]


@dataclass(frozen=True)
class Rules:
    """What one pure package may import, and how it may use ``random``.

    ``random``: ``"none"`` — no use at all (it must also be absent from ``imports``);
    ``"injected"`` — only as the type of a generator handed in (``import random`` for
    annotations; every ``random.<x>(...)`` call is banned, ``random.Random()`` included);
    ``"seeded"`` — ``random.Random(seed)`` with an argument, nothing else (no module-level
    functions, no ``from random import``).
    ``prefixes``: its own modules (``"tidekv.raft."`` allows ``tidekv.raft`` and below).
    """

    imports: frozenset[str]
    prefixes: tuple[str, ...]
    random: RandomPolicy = "none"


def _allowed(name: str, rules: Rules) -> bool:
    if name in rules.imports:
        return True
    return any(name == p.rstrip(".") or name.startswith(p) for p in rules.prefixes)


def violations(source: str, rules: Rules) -> list[str]:
    """Every impurity in ``source``, one line each (empty when the module is pure)."""
    out: list[str] = []
    for node in ast.walk(ast.parse(source)):
        line = getattr(node, "lineno", 0)
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or ""]
            if node.module == "random" and rules.random != "none":
                out.append(f"line {line}: from random import ... (take a generator instead)")
        for name in names:
            if _allowed(name, rules):
                continue
            if name.split(".")[0] in IMPURE_MODULES:
                out.append(f"line {line}: imports {name} (I/O, clock or randomness)")
            else:
                out.append(f"line {line}: imports {name}, not on the allow-list")
        if isinstance(node, ast.Call):
            func = ast.unparse(node.func)
            if func in BANNED_CALLS or func in BANNED_ATTRIBUTE_CALLS:
                out.append(f"line {line}: calls {func}()")
            elif func.startswith("random."):
                seeded = func == "random.Random" and bool(node.args)
                if not (rules.random == "seeded" and seeded):
                    out.append(f"line {line}: calls {func}() (a random source of its own)")
    return out


__all__ = ["Rules", "violations"]
