"""The yanjin BentoML service: one registered model's @champion (and @challenger during an A/B
test) behind ONNX Runtime, with adaptive batching, review flags, a prediction log and hot swap.

    yanjin serve --model banking77-lite           # or: bentoml serve yanjin.serving.service:Classifier

Endpoints: POST /predict, POST /feedback (an API key), POST /review (a reviewer's key), POST /info,
and BentoML's /readyz, /livez, /metrics, /docs.json (OpenAPI). Who may call what: serving/auth.py.
Settings come from `YANJIN_SERVE_SETTINGS` (JSON, written by `yanjin serve`).
"""
from __future__ import annotations

import logging
import random
import threading
import unicodedata
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Annotated, Optional

import bentoml
import numpy as np
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

from .auth import Authenticator, KeyFile, key_principal, principal
from .batch import classify_each
from .docs import DocsPages
from .guard import RequestGuard
from ..traffic.sampling import LOW_CONFIDENCE, TRUNCATED, review_selection
from ..traffic.store import FEEDBACK, REVIEW, SHADOW, Prediction, UnknownPrediction, db_error
from .predlog import PredictionLog
from .watcher import AliasWatcher, ServedModel, Shadow, VersionCache
from .routing import CHALLENGER, CHAMPION, assign_arm, read_secret
from .settings import from_env

log = logging.getLogger("yanjin.serving")
EXAMPLE_INPUT = [  # shown in the Swagger UI (/docs) as each endpoint's example request (OpenAPI 3.0: `example`)
    {"text": "my card has not arrived yet", "key": "user-42"}, {"text": "how do I top up by bank transfer?"}]
EXAMPLE_LABEL = {"prediction_id": "3f2b8c1e-6a0d-4c7e-9f51-2d8e7b4a9c10", "label": "card_arrival"}
# the fields of /feedback and /review, one definition for both
PREDICTION_ID = Field(max_length=64, examples=[EXAMPLE_LABEL["prediction_id"]],
                      json_schema_extra={"example": EXAMPLE_LABEL["prediction_id"]})
LABEL = Field(max_length=200, examples=[EXAMPLE_LABEL["label"]], json_schema_extra={"example": EXAMPLE_LABEL["label"]})
SETTINGS = from_env()  # read once, at import: the worker's entry point
SERVED = bentoml.metrics.Gauge(  # on /metrics: which version, variant and ORT provider each arm runs
    name="yanjin_served_model", documentation="1 for the model version serving each A/B arm",
    labelnames=["model", "arm", "version", "variant", "provider"])
LOG_ROWS = bentoml.metrics.Gauge(  # on /metrics: the prediction log's rows by fate (nothing is lost unseen)
    name="yanjin_prediction_log_rows", documentation="prediction log rows since start: queued now, written, "
    "retried after a database error, dropped", labelnames=["state"])
REDACTED = bentoml.metrics.Gauge(  # on /metrics: what redaction replaced before storing, per type (never the values)
    name="yanjin_redacted", documentation="identifiers replaced in logged texts since start, per type", labelnames=["type"])
SHADOW_TEXTS = bentoml.metrics.Counter(  # on /metrics: texts the challenger scored in shadow, or skipped when behind
    name="yanjin_shadow_texts", documentation="texts sampled for the shadow comparison, by fate: scored, skipped "
    "(the shadow scorer was behind), failed", labelnames=["fate"])
SHADOW_SLOTS = 4   # shadow batches waiting or running at once; beyond, texts are answered and logged unshadowed


INVISIBLE = {"Zs", "Zl", "Zp", "Cc", "Cf"}  # separators, controls, format (zero-width) characters


class Item(BaseModel):
    text: str = Field(description="The customer message to classify.")
    key: Optional[str] = Field(None, max_length=256, description="Sticky A/B key, e.g. a user id; honoured only with an "
                               "API key (bound to it), random arm when absent or anonymous.")
    asked_by: SkipJsonSchema[Optional[str]] = None   # the caller's API key name, set by the middleware (auth.bind_keys)

    @field_validator("text")
    @classmethod
    def usable_text(cls, text: str) -> str:
        if not text.strip():
            raise ValueError("text is empty or only whitespace")
        for position, char in enumerate(text[: SETTINGS.max_chars]):
            if char not in "\t\n\r" and unicodedata.category(char) == "Cc":  # NUL, escapes, DEL: never typed
                raise ValueError(f"text contains control character U+{ord(char):04X} at position {position}")
        if all(unicodedata.category(c) in INVISIBLE for c in text[: SETTINGS.max_chars]):
            raise ValueError("text has no visible characters (only spaces, control or format characters)")
        if len(text) > SETTINGS.max_chars:
            if not SETTINGS.truncate:
                raise ValueError(f"text has {len(text)} characters; the limit is {SETTINGS.max_chars} "
                                 f"(the server can truncate instead: truncate=true)")
            return text[: SETTINGS.max_chars]
        return text


class Scored(BaseModel):
    label: str
    confidence: float


EXAMPLE_RESULT = {  # an answer as the server gives it: the response example in the Swagger UI
    "prediction_id": EXAMPLE_LABEL["prediction_id"], "label": "card_arrival", "confidence": 0.912,
    "top_k": [{"label": "card_arrival", "confidence": 0.912}, {"label": "card_delivery_estimate", "confidence": 0.041},
              {"label": "lost_or_stolen_card", "confidence": 0.012}],
    "needs_review": False, "truncated": False, "share_read": 1.0, "model": "banking77-lite", "version": "3",
    "variant": "lite", "arm": CHAMPION, "error": None}


class Result(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": EXAMPLE_RESULT})

    prediction_id: str
    label: str
    confidence: float
    top_k: list[Scored]
    needs_review: bool = Field(description=f"confidence below the review threshold ({SETTINGS.review_threshold}), "
                                           "or the text was truncated")
    truncated: bool = Field(False, description="the model read only the start of the text: it has a limit of tokens "
                                               "(see share_read); the prediction goes to review")
    share_read: float = Field(1.0, description="share of the text's characters the model read")
    model: str
    version: str
    variant: str
    arm: str
    error: Optional[str] = Field(None, description="set when the model failed on this text alone (label empty); "
                                                   "the other texts of the request are answered")


class LogGate:
    """Why /predict should be refused now (RequestGuard asks before any work is queued): the prediction log
    cannot keep what would be answered. Set by the service where every answer must be logged."""
    log: PredictionLog | None = None

    def __call__(self) -> str | None:
        return self.log.refusing() if self.log is not None else None


LOG_GATE = LogGate()


class Labelled(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": {"ok": True, **EXAMPLE_LABEL, "source": "review",
                                                             "given_by": "anna"}})

    ok: bool
    prediction_id: str
    label: str
    source: str = Field(description="review (a reviewer's label, trusted) or feedback (a client's)")
    given_by: str = Field(description="the name of the API key that gave it")
    disputed: bool = Field(False, description="reviewers disagree without a majority: back on the review queue for "
                                              "a third person, no label of it trusted until then")


@bentoml.service(
    name="yanjin",
    http={"host": "127.0.0.1"},                           # not exposed unless --host says so
    traffic={"timeout": 30, "max_concurrency": 4 * SETTINGS.max_concurrency},  # backstop; RequestGuard answers first
    workers=1,
)
class Classifier:
    def __init__(self) -> None:
        import mlflow

        self.settings = SETTINGS
        mlflow.set_tracking_uri(SETTINGS.tracking_uri)
        self.cache = VersionCache(SETTINGS.cache_size, SETTINGS.threads, SETTINGS.ort_spin,
                                  {"engine_cache": SETTINGS.engine_cache, "max_batch": SETTINGS.max_batch_size,
                                   "fp16": SETTINGS.gpu_fp16})
        self.watcher = AliasWatcher(SETTINGS.model, self.cache, SETTINGS.poll_seconds,
                                    default_share=SETTINGS.challenger_share, on_swap=self._export_metrics)
        self.watcher.refresh()     # not ready (no /readyz 200) until a verified champion is loaded
        self.watcher.start()
        self.predictions = PredictionLog(SETTINGS.prediction_log, on_stats=self._export_log_stats,
                                         redactor=SETTINGS.redactor(), max_backlog=SETTINGS.max_log_backlog,
                                         retries=None if SETTINGS.require_log else 5)
        if SETTINGS.require_log:
            LOG_GATE.log = self.predictions
        self.rng = random.Random()
        self.shadow_rng = random.Random()
        self.shadow_pool = ThreadPoolExecutor(1, thread_name_prefix="shadow")   # off the answer path
        self.shadow_slots = threading.BoundedSemaphore(SHADOW_SLOTS)
        self.ab_secret = read_secret(SETTINGS.ab_secret, create=True)  # `yanjin serve` made it; a cluster mounts it
        log.info("serving %s: %s", SETTINGS.model, {a: m and m.version for a, m in self.watcher.arms.items()})

    def _export_metrics(self, arm: str, old: ServedModel | None, new: ServedModel) -> None:
        if old is not None:
            SERVED.labels(old.name, arm, old.version, old.variant, old.provider).set(0)
        SERVED.labels(new.name, arm, new.version, new.variant, new.provider).set(1)

    @staticmethod
    def _export_log_stats(stats) -> None:
        for state, n in vars(stats).items():
            if state != "redacted":
                LOG_ROWS.labels(state).set(n)
        for kind, n in stats.redacted.items():
            REDACTED.labels(kind).set(n)

    @bentoml.on_shutdown
    def _write_the_log(self) -> None:
        """A rolling update sends SIGTERM: every acknowledged prediction is written before exit."""
        self.watcher.stop()
        self.shadow_pool.shutdown(wait=True)   # shadowed rows are logged with their pairs
        self.predictions.close()
        log.info("prediction log closed: %s", self.predictions.stats)

    def __is_ready__(self) -> bool:
        return self.watcher.ready and not (self.settings.require_log and self.predictions.refusing())

    @bentoml.api(batchable=True, max_batch_size=SETTINGS.max_batch_size, max_latency_ms=SETTINGS.max_latency_ms)
    def predict(self, items: Annotated[list[Item], Field(
            min_length=1, max_length=SETTINGS.max_items, examples=[EXAMPLE_INPUT],
            json_schema_extra={"example": EXAMPLE_INPUT})]) -> list[Result]:
        """Classify texts. Concurrent requests are merged into one model call (adaptive batching)."""
        arms, shadow = self.watcher.arms, self.watcher.shadow  # one snapshot per batch: a hot swap never splits it
        if self.settings.require_log and (why := self.predictions.refusing()):
            raise bentoml.exceptions.ServiceUnavailable(f"{why}; every answer must be logged (require_log)")
        if arms[CHAMPION] is None:
            raise bentoml.exceptions.ServiceUnavailable("no verified champion loaded yet")
        share = self.watcher.share if arms[CHALLENGER] is not None else 0.0
        chosen = [assign_arm(item.key, share, self.ab_secret, self.rng) for item in items]
        results: list[Result | None] = [None] * len(items)
        rows = []
        for arm in (CHALLENGER, CHAMPION):  # challenger first: texts it fails on fall back to the champion
            idx = [i for i, a in enumerate(chosen) if a == arm]
            if not idx:
                continue
            model: ServedModel = arms[arm]
            failed = []
            for part in classify_each(lambda texts: model.classifier.predict_proba(texts, batch_size=len(texts)),
                                      [items[i].text for i in idx]):
                at = [idx[j] for j in part.positions]
                if part.error is None:
                    for i, result, row in self._results(at, [items[i].text for i in at], part.probs, model, arm,
                                                        part.latency_ms):
                        results[i] = result
                        rows.append(replace(row, principal=key_principal(items[i].key), asked_by=items[i].asked_by))
                    continue
                failed.append(part.error)
                for i in at:
                    if arm == CHALLENGER:  # the champion answers what the challenger failed on
                        chosen[i] = CHAMPION
                    else:
                        results[i] = Result.model_construct(
                            prediction_id="", label="", confidence=0.0, top_k=[], needs_review=False, model=model.name,
                            version=model.version, variant=model.variant, arm=arm,
                            error=f"the model failed on this text ({part.error.split(':')[0]})")
            if failed:  # counted per arm: the rollout's error guardrail reads these
                self.predictions.failure(model.name, model.version, arm, len(failed), failed[0])
                log.error("%s v%s (%s) failed on %d of %d texts: %s", model.name, model.version, arm, len(failed),
                          len(idx), failed[0])
        if arms[CHALLENGER] is not None and shadow.share > 0:
            held = [r for r in rows if r.arm == CHAMPION and self.shadow_rng.random() < shadow.share]
            if held and self.shadow_slots.acquire(blocking=False):
                kept = {r.id for r in held}
                rows = [r for r in rows if r.id not in kept]
                self.shadow_pool.submit(self._score_in_shadow, held, arms[CHALLENGER], shadow)
            elif held:
                SHADOW_TEXTS.labels("skipped").inc(len(held))
        self.predictions.append(rows)
        return results

    def _score_in_shadow(self, rows: list[Prediction], challenger: ServedModel, shadow: Shadow) -> None:
        """The challenger scores texts the champion answered, after the answer went out; each pair is logged
        together, the champion's row marked for review where the pair helps the verdict (traffic.sampling)."""
        out = rows
        try:
            start = time.perf_counter()
            probs = challenger.classifier.predict_proba([r.text for r in rows], batch_size=len(rows))
            latency_ms, now = (time.perf_counter() - start) * 1000, time.time()
            best = probs.argmax(axis=1).tolist()
            out = []
            for row, j, p in zip(rows, best, probs[np.arange(len(rows)), best].tolist()):
                label = challenger.classifier.labels[j]
                reason, pi = review_selection(row.label, label, row.needs_review, shadow.disagreement_p,
                                              shadow.audit_p, self.shadow_rng.random())
                out.append(replace(row, review_reason=reason, inclusion_p=pi))
                out.append(Prediction(str(uuid.uuid4()), now, row.text, label, p, challenger.name, challenger.version,
                                      challenger.variant, SHADOW, latency_ms, p < self.settings.review_threshold,
                                      pair_id=row.id, asked_by=row.asked_by))
            SHADOW_TEXTS.labels("scored").inc(len(rows))
        except Exception as e:  # noqa: BLE001 - the champion's rows are logged whatever the challenger did
            SHADOW_TEXTS.labels("failed").inc(len(rows))
            self.predictions.failure(challenger.name, challenger.version, SHADOW, len(rows), f"{type(e).__name__}: {e}")
            log.error("%s v%s (shadow) failed on %d texts: %s", challenger.name, challenger.version, len(rows), e)
        finally:
            self.shadow_slots.release()
            self.predictions.append(out)

    def _results(self, idx: list[int], texts: list[str], probs: np.ndarray, model: ServedModel, arm: str,
                 latency_ms: float):
        """(index, Result, log row) per text. The whole batch's top-k in one numpy call; the Results are
        built without re-validation (every field is computed here, not read from the client)."""
        labels, k, now = model.classifier.labels, self.settings.top_k, time.time()
        top = np.argsort(-probs, axis=1)[:, :k]                                   # (n, k) label ids, best first
        top_p = np.take_along_axis(probs, top, axis=1).tolist()                   # (n, k) as Python floats
        shares = model.classifier.tokenizer.read_shares(texts)                    # 1.0 unless cut at max_length tokens
        for i, text, ids, ps, share in zip(idx, texts, top.tolist(), top_p, shares):
            pid, label, confidence = str(uuid.uuid4()), labels[ids[0]], ps[0]
            low, truncated = confidence < self.settings.review_threshold, share < 1.0
            result = Result.model_construct(
                prediction_id=pid, label=label, confidence=confidence,
                top_k=[Scored.model_construct(label=labels[j], confidence=p) for j, p in zip(ids, ps)],
                needs_review=low or truncated, truncated=truncated, share_read=round(share, 3), model=model.name,
                version=model.version, variant=model.variant, arm=arm)
            yield i, result, Prediction(pid, now, text, label, confidence, model.name, model.version, model.variant,
                                        arm, latency_ms, low or truncated,
                                        review_reason=LOW_CONFIDENCE if low else TRUNCATED if truncated else None)

    def _label(self, prediction_id: str, label: str, ctx: bentoml.Context, review: bool) -> Labelled:
        who = principal(ctx.request.headers)
        if who is None:  # the middleware lets no anonymous call through; never record one if it did
            raise bentoml.exceptions.Unauthenticated("an API key is needed")
        champion = self.watcher.arms[CHAMPION]
        if champion is not None and label not in champion.classifier.labels:
            raise bentoml.exceptions.InvalidArgument(f"unknown label {label!r}; the model knows "
                                                     f"{len(champion.classifier.labels)} labels, e.g. {champion.classifier.labels[:3]}")
        try:
            agreed = (self.predictions.review if review else self.predictions.feedback)(prediction_id, label, who[0])
        except UnknownPrediction:
            raise bentoml.exceptions.NotFound(f"no prediction with id {prediction_id!r}") from None
        except sa.exc.DBAPIError as e:   # locked or unreachable: nothing was recorded, the caller may retry
            log.warning("label for %s not recorded: %s", prediction_id, db_error(e))
            raise bentoml.exceptions.ServiceUnavailable("the prediction log is busy or unreachable; nothing was "
                                                        "recorded, retry") from None
        return Labelled(ok=True, prediction_id=prediction_id, label=label, source=REVIEW if review else FEEDBACK,
                        given_by=who[0], disputed=review and agreed is None)

    @bentoml.api
    def feedback(self, ctx: bentoml.Context, prediction_id: str = PREDICTION_ID, label: str = LABEL) -> Labelled:
        """A client reports the true label of an earlier prediction (an API key). Kept beside earlier labels,
        never overwriting them; rollouts and retraining count it only where the profile trusts client feedback."""
        return self._label(prediction_id, label, ctx, review=False)

    @bentoml.api
    def review(self, ctx: bentoml.Context, prediction_id: str = PREDICTION_ID, label: str = LABEL) -> Labelled:
        """A reviewer labels a prediction (a reviewer's key): trusted by rollouts and retraining."""
        return self._label(prediction_id, label, ctx, review=True)

    @bentoml.api(route="/info")
    def info(self) -> dict:
        """What is being served: versions per arm, variants, providers, A/B share, limits."""
        from ..models.inference import available_providers

        arms = self.watcher.arms
        s = self.settings
        return {
            "model": s.model,
            "arms": {arm: None if m is None else {"version": m.version, "variant": m.variant, "provider": m.provider,
                                                  "artifact_sha256": m.sha256} for arm, m in arms.items()},
            "ab": {"challenger_share": self.watcher.challenger_share, "share_set": self.watcher.share,
                   "configured_challenger_share": s.challenger_share, "sticky_by": "key",
                   "shadow": vars(self.watcher.shadow_in_force)},
            "providers_available": available_providers(),
            "cached_versions": self.cache.versions(),
            "refusals": self.watcher.errors,
            "limits": {"max_chars": s.max_chars, "truncate": s.truncate, "max_items": s.max_items,
                       "tokens_read": {arm: m.classifier.spec.max_length for arm, m in arms.items() if m is not None},
                       "max_body_bytes": s.max_body_bytes, "max_batch_size": s.max_batch_size,
                       "max_latency_ms": s.max_latency_ms},
            "review_threshold": s.review_threshold,
            "prediction_log": vars(self.predictions.stats),
        }


def fix_media_types(service) -> None:
    """BentoML derives each response's media type from the output model's JSON schema on every call
    (1.5 ms here: as long as Lite's model takes); the types are fixed, so they are worked out once."""
    for api in service.apis.values():
        if api.output_spec.media_type is None:
            api.output_spec.media_type = api.output_spec.mime_type()


fix_media_types(Classifier)
Classifier.add_asgi_middleware(DocsPages, generated=lambda: Classifier.openapi_spec.asdict(), model=SETTINGS.model,
                               open_predict=SETTINGS.open_predict, max_chars=SETTINGS.max_chars,
                               review_threshold=SETTINGS.review_threshold)
Classifier.add_asgi_middleware(RequestGuard, max_body_bytes=SETTINGS.max_body_bytes,
                               max_in_flight=SETTINGS.max_concurrency, refusing=LOG_GATE)
Classifier.add_asgi_middleware(Authenticator, keys=KeyFile(SETTINGS.api_keys), open_predict=SETTINGS.open_predict)
