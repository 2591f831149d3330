"""The registry: MLflow's names, the verified store, and the release ledger MLflow's aliases mirror.

- names.py: every alias, tag key, artifact path and bundle file yanjin keeps in MLflow, named once;
- store.py: versions downloaded and verified against their recorded digests, bundles registered;
- ledger.py: release state (aliases, leases, the hash-chained audit, approvals, rollouts) in a database
  with transactions: SQLite in the state folder, PostgreSQL on a cluster;
- mirror.py: the ledger and MLflow's aliases moved together, drift between them found;
- principal.py: who acts, as the registry authenticated them.

The package imports no other yanjin module and imports MLflow only inside the functions that call it.
Names and store functions are re-exported here (`from yanjin.registry import CHAMPION, download_version`).
"""
from .names import *  # noqa: F401,F403
from .names import __all__ as _names
from .store import *  # noqa: F401,F403
from .store import __all__ as _store

__all__ = _names + _store
