"""Distillation-loss zoo (plain PyTorch): Hinton KD plus RepDistiller's FitNet, AT, SP, VID, RKD,
PKT and CRD, combined by one ``Criterion``: gamma * task + alpha * KD_T + sum_m beta_m * L_m.

Typical use::

    crit = build_criterion(KDConfig(alpha=0.9, gamma=0.1, methods=[CRDConfig()]), task,
                           student=s, teacher=t, input_shape=(1, 28, 28), num_samples=n_real + n_fake)
    opt = Adam([*s.parameters(), *crit.parameters()])
    loss = crit(s(x, return_features=True), crit.run_teacher(t, x), y, index=idx)

See docs/kd_methods.md for the compatibility table and the CRD index contract.

The names below load on first use: ``rayflow.config`` reads the method configs
(``rayflow.kd.config``, pydantic only) and must not pull torch in for ``rayflow --help``.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "KDBatch": "base", "KDLoss": "base",
    "ATConfig": "config", "BLKDConfig": "config", "CRDConfig": "config", "FitNetConfig": "config",
    "KDConfig": "config", "KDMethodConfig": "config", "PKTConfig": "config", "RKDConfig": "config",
    "SPConfig": "config", "VIDConfig": "config", "TAKDConfig": "config", "KDTableEntry": "config",
    "Criterion": "criterion", "build_criterion": "criterion",
    "KNOWN_METHODS": "errors", "KDConfigError": "errors", "KDMethodUnavailable": "errors",
    "FeatureSpec": "features", "probe_features": "features",
    "build_method": "registry", "list_methods": "registry", "method_config": "registry",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'rayflow.kd' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"rayflow.kd.{_WHERE[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
