"""Checkers for client histories recorded by the simulator and by real-cluster tests."""

from __future__ import annotations

from tidekv.check.linearizability import (
    CheckResult,
    KeyResult,
    Model,
    Operation,
    RegisterModel,
    Verdict,
    check_history,
    check_operations,
)

__all__ = [
    "CheckResult",
    "KeyResult",
    "Model",
    "Operation",
    "RegisterModel",
    "Verdict",
    "check_history",
    "check_operations",
]
