"""Which process of a data-parallel job this is, before Lightning knows.

Lightning's DDP launcher starts ranks 1..N-1 by running the train stage's
command again (torchrun and SLURM start every rank that way), so everything
`training.train` does before `trainer.fit` runs once per process. Only rank
zero creates the MLflow run, writes files and logs; the other ranks only fit.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

# Set by rank zero before `trainer.fit`, so the processes Lightning's launcher
# starts inherit the run id (torchrun/SLURM ranks do not need it: they never log).
RUN_ID_ENV = "AEFLOW_MLFLOW_RUN_ID"
# Global rank, as set by torchrun/Lightning, SLURM and LSF's jsrun.
GLOBAL_RANK_VARS = ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK")


def is_rank_zero(env: Mapping[str, str] | None = None) -> bool:
    """True in a single-process run and in rank zero of a distributed one."""
    env = os.environ if env is None else env
    for var in GLOBAL_RANK_VARS:
        if env.get(var, "").strip():
            return int(env[var]) == 0
    # Lightning's launcher sets only LOCAL_RANK (and NODE_RANK on clusters) in its children.
    return all(int(env.get(var, "0") or 0) == 0 for var in ("LOCAL_RANK", "NODE_RANK", "GROUP_RANK"))


def share_run_id(run_id: str) -> None:
    os.environ[RUN_ID_ENV] = run_id


def shared_run_id() -> str | None:
    return os.environ.get(RUN_ID_ENV) or None
