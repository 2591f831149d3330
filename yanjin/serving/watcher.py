"""Which model versions serve: resolved from MLflow aliases, verified, cached, swapped atomically.

A version is loaded only after its files' sha256 matches the digest recorded at registration;
a mismatch is refused and the version already serving keeps serving. The watcher polls the
aliases, so moving `@champion` or `@challenger` (CLI or the MLflow UI) reaches the server within
one poll, and the swap is one reference assignment: a request sees the old or the new model,
never a half-loaded one.
"""
from __future__ import annotations

import json
import logging
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

from ..models.inference import OnnxClassifier
from ..registry import CHALLENGER, CHAMPION, SHADOW_TAG, SHARE_TAG, LineageError, download_version

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServedModel:
    name: str
    version: str
    variant: str
    sha256: str
    classifier: OnnxClassifier

    @property
    def provider(self) -> str:
        return self.classifier.providers[0]


WARM_UP = (1, 1, 8, 8, 32)  # batch sizes run once on load, before the version answers anything


def load_verified(name: str, version: str, threads: int = 0, spin: bool = True, gpu: dict | None = None) -> ServedModel:
    """Download one registered version, check its sha256 against its tag, open an ORT session (`gpu`: the
    OnnxClassifier's engine_cache, max_batch and fp16, used where a GPU provider runs)."""
    with tempfile.TemporaryDirectory() as tmp:
        found = download_version(name, version, tmp)  # refused unless it hashes to its registered digest
        classifier = OnnxClassifier.from_dir(found.bundle_dir, threads=threads, spin=spin,  # reads everything into memory
                                             **(gpu or {}))
    # ORT's first calls allocate and plan, TensorRT builds or loads its engine: paid here, before readiness,
    # never by a request or an A/B latency figure
    for size in WARM_UP:
        classifier.predict_proba(["warm up the session"] * size, batch_size=size)
    return ServedModel(name, version, found.tags.variant or "?", found.tags.artifact_sha256, classifier)


class VersionCache:
    """The last few loaded versions (LRU), so rolling back or flipping an A/B test is instant."""

    def __init__(self, capacity: int = 3, threads: int = 0, spin: bool = True, gpu: dict | None = None) -> None:
        self.capacity = capacity
        self.threads = threads
        self.spin = spin
        self.gpu = gpu
        self._items: OrderedDict[tuple[str, str], ServedModel] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str, version: str) -> ServedModel:
        key = (name, version)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        model = load_verified(name, version, self.threads, self.spin, self.gpu)  # outside the lock: loading takes seconds
        with self._lock:
            self._items[key] = model
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)
        return model

    def versions(self) -> list[str]:
        with self._lock:
            return [f"{n}/{v}" for n, v in self._items]


@dataclass(frozen=True)
class Shadow:
    """A shadow comparison in force: the share of champion-answered texts the challenger scores too, off the
    answer path, and how its disagreements and agreements are sampled for review (release.paired)."""
    share: float = 0.0
    disagreement_p: float = 1.0
    audit_p: float = 0.0

    @classmethod
    def from_tag(cls, raw: str) -> "Shadow":
        values = json.loads(raw)
        shadow = cls(float(values["share"]), float(values.get("disagreement_p", 1.0)), float(values.get("audit_p", 0.0)))
        if not all(0.0 <= v <= 1.0 for v in (shadow.share, shadow.disagreement_p, shadow.audit_p)):
            raise ValueError("shares and probabilities must lie in [0, 1]")
        if shadow.share > 0 and shadow.disagreement_p <= 0:
            raise ValueError("a shadow comparison must ask for some disagreements (disagreement_p > 0)")
        return shadow


class AliasWatcher:
    """Keeps `arms` = {"champion": ServedModel, "challenger": ServedModel | None}, the challenger's
    traffic share and the shadow comparison in step with MLflow: the aliases, and the tags a rollout
    writes (which win over the configured default, so every replica follows the same rollout plan)."""

    def __init__(self, name: str, cache: VersionCache, poll_seconds: float, default_share: float,
                 on_swap: Callable[[str, ServedModel | None, ServedModel], None] | None = None) -> None:
        self.name = name
        self.on_swap = on_swap
        self.cache = cache
        self.poll_seconds = poll_seconds
        self.default_share = default_share
        self.share = default_share
        self.shadow = Shadow()
        self.arms: dict[str, ServedModel | None] = {CHAMPION: None, CHALLENGER: None}
        self.errors: list[str] = []   # refusals and lookup failures, newest last (shown in /info)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def ready(self) -> bool:
        return self.arms[CHAMPION] is not None

    @property
    def challenger_share(self) -> float:
        """The share in force: 0 while no challenger is loaded."""
        return self.share if self.arms[CHALLENGER] is not None else 0.0

    def _note(self, message: str) -> None:
        log.error(message)
        self.errors = (self.errors + [message])[-20:]

    @property
    def shadow_in_force(self) -> Shadow:
        """The shadow comparison in force: none while no challenger is loaded."""
        return self.shadow if self.arms[CHALLENGER] is not None else Shadow()

    def _registry_state(self) -> tuple[dict[str, str], float, Shadow]:
        import mlflow
        from mlflow.exceptions import MlflowException

        try:
            model = mlflow.MlflowClient().get_registered_model(self.name)
        except MlflowException:
            return {}, self.share, self.shadow
        share = self.default_share
        if SHARE_TAG in model.tags:
            try:
                share = float(model.tags[SHARE_TAG])
                if not 0.0 <= share <= 1.0:
                    raise ValueError("outside [0, 1]")
            except ValueError as e:
                self._note(f"ignored tag {SHARE_TAG}={model.tags[SHARE_TAG]!r}: {e}; keeping share {self.share}")
                share = self.share
        shadow = Shadow()
        if SHADOW_TAG in model.tags:
            try:
                shadow = Shadow.from_tag(model.tags[SHADOW_TAG])
            except (ValueError, KeyError, TypeError) as e:
                self._note(f"ignored tag {SHADOW_TAG}={model.tags[SHADOW_TAG]!r}: {e}; keeping {self.shadow}")
                shadow = self.shadow
        return {alias: str(version) for alias, version in model.aliases.items()}, share, shadow

    def refresh(self) -> list[str]:
        """Load what the aliases point at now and take the current share; returns the changes made."""
        changes = []
        aliases, share, shadow = self._registry_state()
        if share != self.share:
            changes.append(f"challenger share: {self.share} -> {share}")
            self.share = share
        if shadow != self.shadow:
            changes.append(f"shadow: {self.shadow} -> {shadow}")
            self.shadow = shadow
        for arm in (CHAMPION, CHALLENGER) if share > 0 or shadow.share > 0 else (CHAMPION,):
            version = aliases.get(arm)
            current = self.arms[arm]
            if version is None or (current and current.version == version):
                continue
            try:
                model = self.cache.get(self.name, version)
            except (LineageError, OSError, ValueError) as e:
                self._note(f"refused {self.name} v{version} for {arm}: {e}")
                continue
            self.arms = self.arms | {arm: model}  # one assignment: readers see old or new, never a mix
            if self.on_swap:
                self.on_swap(arm, current, model)
            changes.append(f"{arm}: {current.version if current else '-'} -> {version}")
            log.info("now serving %s v%s as %s", self.name, version, arm)
        return changes

    def start(self) -> None:
        def loop() -> None:
            while not self._stop.wait(self.poll_seconds):
                try:
                    self.refresh()
                except Exception:  # a registry outage must not kill the watcher; the current model keeps serving
                    log.exception("alias refresh failed")

        self._thread = threading.Thread(target=loop, name="alias-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
