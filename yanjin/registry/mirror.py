"""The ledger and its MLflow mirror, moved together: every alias change of yanjin goes through here.

A move is: (1) one ledger transaction, fenced by the model's lease, that compares and sets the alias
and appends the intent to the audit; (2) the MLflow alias set to match (what the MLflow UI, serving
and `models:/name@alias` read); (3) one more audit entry confirming it (or saying it failed). The
rollout's share and a ledger head anchor are mirrored to tags the same way.

A mirror that differs from the ledger is a *drift*: an intent the mirror never confirmed (the writer
died between (1) and (3); `Release.complete` finishes it) or a move made outside yanjin (the MLflow
UI; reported, and undone or adopted only by `yanjin reconcile`).

A registry written before the ledger (aliases, `yanjin.audit.*` tags and the rollout tag in MLflow)
is migrated into the ledger the first time the model is used (`Release.migrate`).
"""
from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

from .ledger import AliasConflict, AuditEntry, Lease, Ledger, LedgerError
from .names import (AUDIT_PREFIX, CHALLENGER, CHAMPION, LEDGER_HEAD_TAG, ROLLOUT_RUNNING, ROLLOUT_SHADOW, ROLLOUT_TAG,
                    SHADOW_TAG, SHARE_TAG)

MIRRORED_ALIASES = (CHAMPION, CHALLENGER)


@dataclass(frozen=True)
class Drift:
    model: str
    alias: str
    ledger: str | None
    mlflow: str | None
    unconfirmed: bool   # the ledger's own move, not yet confirmed in MLflow (vs a move made outside yanjin)

    def __str__(self) -> str:
        what = ("yanjin's move not yet mirrored (yanjin controller run completes it)" if self.unconfirmed else
                "moved outside yanjin (e.g. the MLflow UI); undo or adopt it: yanjin reconcile "
                f"{self.model} --undo | --adopt")
        return f"{self.model}@{self.alias}: ledger v{self.ledger}, MLflow v{self.mlflow}: {what}"


class Release:
    """The MLflow client, the ledger and the authenticated principal acting through them."""

    def __init__(self, client, ledger: Ledger, principal: str, lease_ttl_s: float = 120.0) -> None:
        self.client = client
        self.ledger = ledger
        self.principal = principal
        self.lease_ttl_s = lease_ttl_s
        self._migrated: set[str] = set()

    @contextmanager
    def holding(self, model: str, wait_s: float = 30.0) -> Iterator[Lease]:
        self.migrate(model)
        with self.ledger.hold(model, self.principal, self.lease_ttl_s, wait_s) as lease:
            if lease.broke:
                self.ledger.note(self.principal, model, "lease-takeover",
                                 f"took over the release lease that {lease.broke} left to expire", lease)
            yield lease

    # -- moves -------------------------------------------------------------------------------------------
    def move(self, lease: Lease, model: str, alias: str, expected: str | None, version: str | None, action: str,
             reason: str, forced: bool = False, principal: str | None = None) -> AuditEntry:
        """Compare-and-set `model@alias` (expected -> version) in the ledger, then mirror it to MLflow."""
        who = principal or self.principal
        with self.ledger.fenced(lease) as conn:
            intent = self.ledger.append(conn, who, model, action, "intent", reason, alias=alias,
                                        from_version=expected, to_version=version, forced=forced)
            self.ledger.compare_and_set(conn, model, alias, expected, version, intent.seq)
            if alias == CHAMPION:
                self.ledger.close_proposals(conn, model, alias)
        return self._mirror_and_confirm(lease, model, alias, intent, who)

    def _mirror_and_confirm(self, lease: Lease | None, model: str, alias: str, intent: AuditEntry,
                            who: str) -> AuditEntry:
        try:
            self._set_mlflow_alias(model, alias, intent.to_version)
        except Exception as e:  # noqa: BLE001 - recorded; the ledger holds the move, the mirror catches up
            with self.ledger.fenced(None) as conn:
                self.ledger.append(conn, who, model, intent.action, "failed", f"MLflow mirror not set: {e}"[:2000],
                                   alias=alias, from_version=intent.from_version, to_version=intent.to_version,
                                   intent_seq=intent.seq)
            raise LedgerError(f"{model}@{alias}: the ledger moved to v{intent.to_version}, but MLflow's alias could "
                              f"not be set ({e}); `yanjin controller run --once` completes it") from e
        with self.ledger.fenced(None) as conn:
            if self.ledger.alias(model, alias, conn) != intent.to_version:
                # a later holder moved it meanwhile: put the mirror back to what the ledger says now
                current = self.ledger.alias(model, alias, conn)
                self._set_mlflow_alias(model, alias, current)
            done = self.ledger.append(conn, who, model, intent.action, "done", intent.reason, alias=alias,
                                      from_version=intent.from_version, to_version=intent.to_version,
                                      forced=intent.forced, intent_seq=intent.seq)
            if self.ledger.alias(model, alias, conn) == intent.to_version:
                self.ledger.set_audit_seq(conn, model, alias, done.seq)   # deleting this entry is then seen
        self._anchor(model)
        return done

    def _set_mlflow_alias(self, model: str, alias: str, version: str | None) -> None:
        from mlflow.exceptions import MlflowException

        if version is None:
            try:
                self.client.delete_registered_model_alias(model, alias)
            except MlflowException:
                pass   # not set: nothing to remove
        else:
            self.client.set_registered_model_alias(model, alias, version)

    def _anchor(self, model: str) -> None:
        """The audit head, mirrored where the release role alone writes: deleting the ledger's newest
        entries then shows as a head the ledger no longer has."""
        seq, digest = self.ledger.head()
        self.client.set_registered_model_tag(model, LEDGER_HEAD_TAG, f"{seq}:{digest}")

    def mirror_rollout(self, model: str, state: dict) -> None:
        running = state.get("status") == ROLLOUT_RUNNING
        in_shadow = running and state.get("phase") == ROLLOUT_SHADOW
        share = state["plan"][state["step"]] if running and not in_shadow else 0.0
        self.client.set_registered_model_tag(model, ROLLOUT_TAG, json.dumps(state))
        self.client.set_registered_model_tag(model, SHADOW_TAG, json.dumps(state.get("shadow") if in_shadow
                                                                           else {"share": 0.0}))
        self.client.set_registered_model_tag(model, SHARE_TAG, f"{share:g}")
        self._anchor(model)

    # -- drift between ledger and mirror -------------------------------------------------------------------
    def drift(self, model: str) -> list[Drift]:
        """Where MLflow's aliases differ from the ledger. The ledger is read first: a move in flight then
        shows as unconfirmed (its intent is there, its confirmation not yet), never as an outside move."""
        self.migrate(model)
        ledger = self.ledger.aliases_of(model)
        last = {}
        for e in self.ledger.history(model):
            if e.alias and e.phase in ("intent", "done"):
                last[e.alias] = e
        mlflow_aliases = {a: str(v) for a, v in self.client.get_registered_model(model).aliases.items()}
        found = []
        for alias in sorted(set(MIRRORED_ALIASES) | set(ledger) | set(mlflow_aliases)):
            if ledger.get(alias) != mlflow_aliases.get(alias):
                e = last.get(alias)
                found.append(Drift(model, alias, ledger.get(alias), mlflow_aliases.get(alias),
                                   e is not None and e.phase == "intent"))
        return found

    def complete(self, model: str) -> list[str]:
        """Finish yanjin's own unconfirmed moves (the writer died between ledger and mirror)."""
        done = []
        for d in self.drift(model):
            if d.unconfirmed:
                intent = next(e for e in reversed(self.ledger.history(model)) if e.alias == d.alias)
                self._mirror_and_confirm(None, model, d.alias, intent, self.principal)
                done.append(f"{model}@{d.alias}: mirrored v{d.ledger}")
        return done

    def reconcile(self, model: str, adopt: bool, reason: str) -> list[str]:
        """Undo (set MLflow back to the ledger) or adopt (move the ledger to MLflow) every move made outside
        yanjin, as the authenticated principal, with the audit saying which."""
        changed = []
        with self.holding(model) as lease:
            for d in self.drift(model):
                if d.unconfirmed:
                    continue
                if adopt:
                    self.move(lease, model, d.alias, d.ledger, d.mlflow, "adopt-outside-move",
                              f"{reason} (MLflow showed v{d.mlflow}, ledger had v{d.ledger})")
                    changed.append(f"{model}@{d.alias}: ledger adopted v{d.mlflow}")
                else:
                    with self.ledger.fenced(lease) as conn:
                        intent = self.ledger.append(conn, self.principal, model, "undo-outside-move", "intent",
                                                    f"{reason} (MLflow showed v{d.mlflow})", alias=d.alias,
                                                    from_version=d.mlflow, to_version=d.ledger)
                    self._mirror_and_confirm(lease, model, d.alias, intent, self.principal)
                    changed.append(f"{model}@{d.alias}: MLflow set back to v{d.ledger}")
        return changed

    # -- migration from the tags of a registry written before the ledger ------------------------------------
    def migrate(self, model: str) -> list[str]:
        """Bring `model`'s aliases, old `yanjin.audit.*` entries and rollout tag into the ledger, once."""
        if model in self._migrated:
            return []
        key = f"migrated:{model}"
        if self.ledger.get_meta(key) is not None:
            self._migrated.add(model)
            return []
        from mlflow.exceptions import MlflowException

        try:
            registered = self.client.get_registered_model(model)
        except MlflowException:
            return []   # not registered yet: nothing to migrate
        notes = []
        old = sorted(((int(k[len(AUDIT_PREFIX):].split(".")[0]), json.loads(v)) for k, v in registered.tags.items()
                      if k.startswith(AUDIT_PREFIX)), key=lambda p: (p[0], p[1].get("at", 0)))
        with self.ledger.fenced(None) as conn:
            if self.ledger.get_meta_in(conn, key) is not None:
                self._migrated.add(model)
                return []
            for _, e in old:
                self.ledger.append(conn, f"{e.get('who', '?')} (self-declared, before the ledger)", model,
                                   e.get("action", "?"), "record", f"migrated from MLflow tags: {e.get('reason', '')}",
                                   alias=e.get("alias"), from_version=e.get("from_version"),
                                   to_version=e.get("to_version"), forced=bool(e.get("forced", False)),
                                   at=float(e.get("at", 0.0)))
            for alias, version in sorted(registered.aliases.items()):
                if self.ledger.alias(model, alias, conn) is None:
                    entry = self.ledger.append(conn, self.principal, model, "migrate", "done",
                                               "alias as found in MLflow when the ledger first saw this model",
                                               alias=alias, to_version=str(version))
                    self.ledger.compare_and_set(conn, model, alias, None, str(version), entry.seq)
                    notes.append(f"{model}@{alias} = v{version}")
            if ROLLOUT_TAG in registered.tags and self.ledger.rollout(model, conn) is None:
                self.ledger.write_rollout(conn, model, json.loads(registered.tags[ROLLOUT_TAG]))
                notes.append(f"{model}: rollout state")
            self.ledger.set_meta(conn, key, json.dumps({"audit_entries": len(old), "moved": notes}))
        self._migrated.add(model)
        return [f"{len(old)} audit entries"] + notes if (old or notes) else []


def anchor_problems(release: Release, models: list[str]) -> list[str]:
    """Ledger heads mirrored to MLflow that the ledger no longer has (its newest entries deleted)."""
    from mlflow.exceptions import MlflowException

    entries = {e.seq: e.hash for e in release.ledger.history()}
    problems = []
    for model in models:
        try:
            raw = release.client.get_registered_model(model).tags.get(LEDGER_HEAD_TAG)
        except MlflowException:
            continue
        if raw:
            seq, digest = raw.split(":", 1)
            if entries.get(int(seq)) != digest:
                problems.append(f"{model}: MLflow's anchor names audit entry {seq} ({digest[:12]}…), which the ledger "
                                f"no longer holds as written")
    return problems


__all__ = ["AliasConflict", "Drift", "Release", "anchor_problems"]
