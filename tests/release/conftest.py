"""A release over a real MLflow registry (SQLite) and a real release ledger (SQLite), as one principal;
`as_principal` gives the same registry and ledger to another person."""
from yanjin.registry.ledger import Ledger
from yanjin.registry.mirror import Release


def release_for(client, ledger_path, principal: str = "ops", lease_ttl_s: float = 120.0) -> Release:
    return Release(client, Ledger(f"sqlite:///{ledger_path}"), principal, lease_ttl_s)


def as_principal(release: Release, principal: str) -> Release:
    return Release(release.client, release.ledger, principal, release.lease_ttl_s)
