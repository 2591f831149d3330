"""The pipeline's stages as plain functions: what each Kubeflow step does, MLflow logging included.

A Kubeflow step (pipelines/steps.py) reads its inputs, calls one function here and writes its
outputs; the same functions run in tests without kfp. Each reads what to do from the run's config,
whose recipe (yanjin/family.py) says how this family member is made, so no stage branches on a
member's name. Every MLflow name comes from the registry module.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from .. import progress
from .. import registry as R
from ..config import PipelineConfig
from ..family import ADAPTED, TEACHER
from . import data as D
from .distributed import World, write_split


def _logging_to(tracking_uri: str, run_id: str):
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    return mlflow.start_run(run_id=run_id)


def _params(prefix: str, values) -> dict:
    return {f"{prefix}.{k}": v for k, v in asdict(values).items()}


# -- validate ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Validated:
    run_id: str
    data_sha256: str            # the files as given
    split_sha256: str           # the training split as written (the drift monitor's reference)
    report: dict                # the Great Expectations verdict and the label list


def validate_and_split(train_data: str, test_data: str, label_set: str, cfg: PipelineConfig, tracking_uri: str,
                       experiment: str, artifact_root: str, git_commit: str,
                       train_out: str, val_out: str, test_out: str) -> Validated:
    """Open the MLflow run (the version's, or the family run's), check the data contract, split, and write
    the splits as parquet. A failed contract closes the run as FAILED with its report and raises
    DataValidationError."""
    import mlflow

    from .validate import DataValidationError, validate_splits

    p = cfg.data
    source = D.DataSource(train_data, test_data, label_set, p.text_column, p.label_column)
    # a file in the registry's store (a retraining set) is read by its URI; recorded as given
    local = D.DataSource(*(D.local_file(f, tracking_uri) if f else f for f in (train_data, test_data, label_set)),
                         p.text_column, p.label_column)
    train, test = local.read("train"), local.read("test")
    labels = D.read_label_set(local.labels or None, train)
    data_sha = D.sha256_files(local.files)

    mlflow.set_tracking_uri(tracking_uri)
    name = f"{experiment} validate" if experiment == R.family_experiment(cfg.model_name) else \
        R.run_name(experiment, None, "train")
    with mlflow.start_run(experiment_id=R.ensure_experiment(experiment, artifact_root or None), run_name=name) as run:
        _tag_run(cfg, source, data_sha, git_commit)
        try:
            verdict = validate_splits({"train": train, "test": test}, {"train": train_data, "test": test_data},
                                      labels, cfg.validation).to_dict()
        except DataValidationError as e:
            mlflow.log_dict(e.report.to_dict(), R.VALIDATION_REPORT)
            mlflow.set_tag(R.RUN_VALIDATION, "failed")
            raise  # the run is closed as FAILED by the context manager
        # the contract holds for the files as given; smoke profiles sample only afterwards
        train, labels = D.subsample(train, labels, p)
        test = test[test[D.LABEL].isin(labels)] if p.max_classes > 0 else test
        tr, va = D.split_train_val(train, p)
        for frame, path in ((tr, train_out), (va, val_out), (test, test_out)):
            write_split(frame, path, cfg.distributed.row_group_rows)  # row groups: what one rank reads
        _log_validated(verdict, train_out, val_out, test_out, labels, experiment, artifact_root)
    return Validated(run.info.run_id, data_sha, R.sha256_file(train_out), verdict | {"labels": labels})


def start_member_run(train_set: str, val_set: str, test_set: str, report: dict, cfg: PipelineConfig,
                     tracking_uri: str, experiment: str, artifact_root: str, git_commit: str, train_data: str,
                     test_data: str, data_sha256: str, family_run_id: str, label_set: str = "") -> str:
    """A family member's own MLflow run, for data validated once by the family run: the same record a
    one-member run has (tags, data, verdict, training split), linked to the family run. Returns its id."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(experiment_id=R.ensure_experiment(experiment, artifact_root or None),
                          run_name=R.run_name(experiment, None, "train")) as run:
        _tag_run(cfg, D.DataSource(train_data, test_data, label_set, cfg.data.text_column, cfg.data.label_column),
                 data_sha256, git_commit)
        mlflow.set_tag(R.RUN_FAMILY, family_run_id)
        verdict = {k: v for k, v in report.items() if k != "labels"}
        _log_validated(verdict, train_set, val_set, test_set, report["labels"], experiment, artifact_root,
                       shared_from=family_run_id)
    return run.info.run_id


def _tag_run(cfg: PipelineConfig, source: D.DataSource, data_sha: str, git_commit: str) -> None:
    import mlflow

    mlflow.set_tags(R.VersionTags(variant=cfg.model.variant, profile=cfg.profile, data_sha256=data_sha,
                                  git_commit=git_commit).to_tags()
                   | {R.RUN_PIPELINE: "yanjin", R.RUN_SOURCE_TAG: f"yanjin pipeline ({cfg.model.variant}, profile {cfg.profile})"})
    mlflow.log_params(source.run_params())   # the data as given (paths or URIs); the columns are in the config


def _log_validated(verdict: dict, train_set: str, val_set: str, test_set: str, labels: list[str], model: str,
                   artifact_root: str, shared_from: str = "") -> None:
    """The passed verdict, the split sizes, and where the training split (the drift monitor's reference) is
    kept: a run of the customer-data experiment, not this run, so that serving, which reads this run's
    model, cannot read its rows. A family member shares its family run's (`shared_from`): one copy."""
    import mlflow

    mlflow.log_dict(verdict, R.VALIDATION_REPORT)
    mlflow.set_tag(R.RUN_VALIDATION, "passed")
    n = {name: len(pd.read_parquet(path, columns=[D.LABEL])) for name, path in
         (("train", train_set), ("val", val_set), ("test", test_set))}
    mlflow.log_params({"data.n_train": n["train"], "data.n_val": n["val"], "data.n_test": n["test"],
                       "data.n_labels": len(labels)})
    client = R.client()
    if shared_from:
        mlflow.set_tag(R.DATA_RUN_TAG, R.split_run(client, shared_from))
        return
    with tempfile.TemporaryDirectory() as tmp:  # under the registry's name for it
        split = Path(tmp) / R.TRAINING_DATA_FILE
        split.write_bytes(Path(train_set).read_bytes())
        data_run = R.keep_customer_rows(client, split, R.TRAINING_DATA_ARTIFACT, f"{model} training split",
                                        {R.DATA_OF_TAG: model}, artifact_root or None)
    mlflow.set_tag(R.DATA_RUN_TAG, data_run)


# -- domain text --------------------------------------------------------------------------------------
def domain_sources(spec: str, train_file: str | Path, data_dir: str | Path | None = None) -> list[str]:
    """The recipe's domain-text sources (`adapt.domain_text`) as paths: `train` is the training file,
    relative paths start at `data_dir` (default: the training file's folder), and a source ending in
    `?` is skipped when absent; any other missing source is an error."""
    base = Path(data_dir) if data_dir else Path(train_file).resolve().parent
    out = []
    for raw in (s.strip() for s in spec.split(",") if s.strip()):
        optional, name = raw.endswith("?"), raw.rstrip("?")
        path = Path(train_file) if name == "train" else Path(name) if Path(name).is_absolute() else base / name
        if name != "train" and not path.exists():  # a missing training file is the validate step's to report
            if optional:
                continue
            raise D.DataError(f"domain text source {name!r} ({path}) does not exist (adapt.domain_text)")
        out.append(str(path.resolve()) if name != "train" else str(path))
    return out


@dataclass(frozen=True)
class Domain:
    kind: str                   # skipped | corpus | adapted
    metadata: dict = field(default_factory=dict)


def prepare_domain(test_set: str, sources: list[str], cfg: PipelineConfig, tracking_uri: str, run_id: str,
                   out_dir: str, world: World | None = None, resume_dir: str = "") -> Domain:
    """What the recipe needs of the domain text: nothing (fine-tuned from MiniLM), the cleaned corpus
    (compression keeps its vocabulary), or an adapted encoder (domain-adaptive pretraining), on the
    ranks `distributed` asks for (as train_member). Adaptation writes no resume checkpoints: it is one
    pass, and a restart repeats it."""
    from .adapt import adapt_encoder, clean_corpus, read_corpus
    from .distributed import SINGLE

    os.makedirs(out_dir, exist_ok=True)
    if world is None and cfg.recipe.start == ADAPTED and needs_ranks(cfg):
        from .launch import on_ranks

        return Domain(**on_ranks("prepare_domain", {"test_set": test_set, "sources": sources, "tracking_uri": tracking_uri,
                                                    "run_id": run_id, "out_dir": out_dir}, cfg))
    world = world or SINGLE
    if not cfg.recipe.uses_domain_text:
        return Domain("skipped", {"adapted": False})
    texts = read_corpus(sources, cfg.data.text_column)
    exclude = pd.read_parquet(test_set)[D.TEXT].tolist()
    if cfg.recipe.start == TEACHER:  # test text excluded: the vocabulary must not be fit to it
        corpus, n_excluded = clean_corpus(texts, exclude)
        Path(out_dir, "corpus.json").write_text(json.dumps(corpus))
        with _logging_to(tracking_uri, run_id):  # recorded, so `yanjin reproduce` finds the same text
            import mlflow

            mlflow.log_param(R.RUN_PARAM_CORPUS, ",".join(sources))
        return Domain("corpus", {"texts": len(corpus), "excluded_test_texts": n_excluded})
    import mlflow

    encoder = os.path.join(out_dir, "encoder.safetensors")
    place = _placement(cfg, "adapt", world)
    with _logging_to(tracking_uri, run_id) if world.lead else contextlib.nullcontext():
        log = _lead_log(world)
        log.log_params(_params("adapt", cfg.adapt) | {R.RUN_PARAM_CORPUS: ",".join(sources), "adapt.placement": str(place)}
                       | ({"adapt.ranks": world.size} if world.parallel else {}))
        result = adapt_encoder(texts, exclude, cfg.model, cfg.adapt, encoder,
                               on_step=lambda step, loss: log.log_metric("adapt_loss", loss, step=step), place=place,
                               world=world)
        log.log_metrics({"adapt_texts": result.n_texts, "adapt_excluded_test_texts": result.n_excluded_test,
                         "adapt_seconds": result.seconds})
        log.log_artifact(encoder, R.ADAPTED_ENCODER_ARTIFACT)
    if world.lead:
        print(f"adapted on {result.n_texts} texts ({result.n_excluded_test} test texts excluded), "
              f"final loss {result.final_loss:.4f}")
    return Domain("adapted", {"adapted": True, "texts": result.n_texts, "excluded_test_texts": result.n_excluded_test})


# -- train --------------------------------------------------------------------------------------------
def _placement(cfg: PipelineConfig, step: str, world: World | None = None):
    """The device and precision `compute` asks for, as this step's pod sees them (printed: the log says
    where a version trained); under torchrun every rank of a GPU node takes its own GPU."""
    from .device import choose
    from .distributed import SINGLE, rank_placement

    world = world or SINGLE
    place = rank_placement(choose(cfg.compute), world)
    if world.lead:
        print(f"{step}: {place}" + (f", {world.size} ranks" if world.parallel else ""))
    return place


@dataclass(frozen=True)
class Trained:
    lineage: dict               # version tags this training decides: checkpoint digest, the teacher
    best_epoch: int
    best_val_accuracy: float
    seconds: float


def _teacher(cfg: PipelineConfig, tracking_uri: str, tmp: str, version: str | None,
             world: World | None = None) -> tuple[R.Downloaded, Path]:
    """The teacher's given version (the one this family run registered), else its champion; bundle and
    checkpoint both verified. `version` "" means this run rejected its teacher: the champion teaches."""
    name = R.registered_model_name(cfg.model_name, cfg.recipe.teacher)
    if version:
        found = R.download_version(name, version, os.path.join(tmp, "bundle"), tracking_uri)
        if world is None or world.lead:
            print(f"teacher: {name} v{version}, registered by this run")
    else:
        found = R.find_champion(name, os.path.join(tmp, "bundle"), tracking_uri=tracking_uri)
        if found is None:
            raise RuntimeError(f"{cfg.model.variant.capitalize()} distils {name}@{R.CHAMPION}, which does not exist "
                               f"in {tracking_uri}; build it first: yanjin pipeline run --variant {cfg.recipe.teacher}")
        if world is None or world.lead:
            print(f"teacher: {name}@{R.CHAMPION} (v{found.version})"
                  + (f"; this run's {cfg.recipe.teacher} was rejected by its gate" if version == "" else ""))
    return found, R.download_checkpoint(found, os.path.join(tmp, "ckpt"), tracking_uri)


def _student_start(cfg: PipelineConfig, tracking_uri: str, tmp: str) -> tuple[R.Downloaded, Path] | None:
    """compress.student_from's checkpoint, verified: the version it names, else the member's champion."""
    if not cfg.compress.student_from:
        return None
    member, version = cfg.compress.student_source
    name = R.registered_model_name(cfg.model_name, member)
    bundle = os.path.join(tmp, "student-bundle")
    found = (R.download_version(name, version, bundle, tracking_uri) if version
             else R.find_champion(name, bundle, tracking_uri=tracking_uri))
    if found is None:
        raise RuntimeError(f"compress.student_from: {name}@{R.CHAMPION} does not exist in {tracking_uri}; "
                           f"build it first: yanjin pipeline run --variant {member}")
    return found, R.download_checkpoint(found, os.path.join(tmp, "student-ckpt"), tracking_uri)


def train_member(train_set: str, val_set: str, labels: list[str], domain_dir: str, cfg: PipelineConfig,
                 tracking_uri: str, run_id: str, out_dir: str, teacher_version: str | None = None,
                 world: World | None = None, resume_dir: str = "") -> Trained:
    """Fine-tune from the pretrained or adapted encoder, or compress the teacher, as the recipe says:
    the teacher version a family run registered (`teacher_version`), else the teacher's champion. The
    checkpoint is logged to the run (a later member may start from it).

    When `distributed` asks for ranks or resume checkpoints, this call hands the work to torchrun
    (or a Kubeflow Trainer job), whose every rank calls it again with its `world`: each reads its shard
    of the splits, and rank 0 alone logs to the one MLflow run."""
    from .distributed import SINGLE, read_shard
    from .resume import Resume
    from .train import train_classifier

    if world is None and needs_ranks(cfg):
        from .launch import on_ranks

        return Trained(**on_ranks("train_member", {
            "train_set": train_set, "val_set": val_set, "labels": labels, "domain_dir": domain_dir,
            "tracking_uri": tracking_uri, "run_id": run_id, "out_dir": out_dir, "teacher_version": teacher_version,
        }, cfg))
    world = world or SINGLE
    train, val = read_shard(train_set, world), read_shard(val_set, world)
    lineage: dict = {}
    place = _placement(cfg, "train", world)
    every = cfg.distributed.checkpoint_every  # 0: no checkpoints, a restarted world starts over
    resume = Resume(Path(resume_dir), every) if resume_dir and every else None
    with _logging_to(tracking_uri, run_id) if world.lead else contextlib.nullcontext():
        log = _lead_log(world)
        # model.* is logged from the checkpoint's own spec once it exists: the profile's values are not the network
        # (a base's architecture is read when training starts, Lite's sizes are what pruning left)
        log.log_params(_params("train", cfg.train) | {"train.placement": str(place)}
                       | ({"train.ranks": world.size} if world.parallel else {}))

        def on_epoch(rec: dict) -> None:  # rank 0 only (fit)
            log.log_metrics({k: v for k, v in rec.items() if k != "epoch"}, step=rec["epoch"])
            line = f"epoch {rec['epoch']}: train loss {rec['train_loss']:.4f}, val accuracy {rec['val_accuracy']:.4f}"
            print(line)
            progress.note(line)

        if cfg.recipe.start == TEACHER:
            from ..models.family import checkpoint_spec
            from .distill import distill_classifier, starts_elsewhere

            log.log_params(_params("compress", cfg.compress))
            with tempfile.TemporaryDirectory() as tmp:
                teacher, teacher_ckpt = _teacher(cfg, tracking_uri, tmp, teacher_version, world)
                # student_from only matters when the teacher's blocks cannot be the student's
                needed = starts_elsewhere(checkpoint_spec(teacher_ckpt).base, cfg.compress)
                init = _student_start(cfg, tracking_uri, tmp) if needed else None
                corpus = json.loads(Path(domain_dir, "corpus.json").read_text())
                result = distill_classifier(train, val, labels, teacher_ckpt, teacher.bundle_dir, corpus, cfg.compress,
                                            cfg.train, out_dir, on_epoch=on_epoch, student=cfg.model, place=place,
                                            world=world, resume=resume, student_checkpoint=init[1] if init else None)
            lineage = {"teacher_model": teacher.model, "teacher_version": teacher.version,
                       "teacher_run_id": teacher.run_id}
            if init:
                lineage |= {"student_init_model": init[0].model, "student_init_version": init[0].version}
            elif cfg.compress.student_from and world.lead:
                print(f"compress.student_from {cfg.compress.student_from!r} unused: the teacher shares the student's "
                      f"base, so the student starts as the teacher's own blocks")
            log.set_tags(lineage)
            log.log_metrics({"teacher_params": result.teacher_params, "student_params": result.student_params,
                             "student_vocab_size": result.vocab_size})
            if world.lead:
                began = {"teacher": "the teacher's blocks", "pretrained": f"pretrained {cfg.compress.student_base}",
                         "checkpoint": f"{lineage.get('student_init_model')} v{lineage.get('student_init_version')}"}
                print(f"distilled {teacher.model} v{teacher.version}: {result.teacher_params:,} -> "
                      f"{result.student_params:,} parameters, vocabulary {result.vocab_size:,}; the student started "
                      f"as {began[result.student_start]}")
        else:
            adapted = os.path.join(domain_dir, "encoder.safetensors") if cfg.recipe.start == ADAPTED else None
            result = train_classifier(train, val, labels, cfg.model, cfg.train, out_dir, on_epoch=on_epoch,
                                      encoder_weights=adapted, place=place, world=world, resume=resume,
                                      recipe_start=cfg.recipe.start)
        log.log_metrics({"best_val_accuracy": result.best_val_accuracy, "train_seconds": result.seconds})
        if cfg.train.calibrate and world.lead:  # on every validation row, not this rank's shard
            from .calibrate import calibrate_checkpoint

            temperature = calibrate_checkpoint(out_dir, read_shard(val_set), cfg.train.eval_batch_size, place)
            log.log_metric("calibration_temperature", temperature)
            print(f"calibrated: logits / {temperature:.3f} (temperature fitted on the validation rows)")
        if world.lead:
            from ..models.family import checkpoint_spec

            log.log_params(_params("model", checkpoint_spec(out_dir)))
        log.log_artifacts(out_dir, R.CHECKPOINT_ARTIFACT)
    if not world.lead:  # the checkpoint and its record are rank 0's
        return Trained({}, result.best_epoch, result.best_val_accuracy, result.seconds)
    lineage["checkpoint_sha256"] = R.checkpoint_sha256(out_dir)
    return Trained(lineage, result.best_epoch, result.best_val_accuracy, result.seconds)


def needs_ranks(cfg: PipelineConfig) -> bool:
    """torchrun is asked for: several ranks, a Trainer job, or resume checkpoints (its restarts use them)."""
    d = cfg.distributed
    return d.world_size > 1 or d.launcher == "trainjob" or d.checkpoint_every > 0


class _Quiet:
    """The MLflow calls of ranks other than 0: they train, rank 0 keeps the record."""

    def log_params(self, *_a, **_k) -> None: ...
    def log_metrics(self, *_a, **_k) -> None: ...
    def log_metric(self, *_a, **_k) -> None: ...
    def set_tags(self, *_a, **_k) -> None: ...
    def log_artifacts(self, *_a, **_k) -> None: ...
    def log_artifact(self, *_a, **_k) -> None: ...


def _lead_log(world: World):
    import mlflow

    return mlflow if world.lead else _Quiet()


# -- export ---------------------------------------------------------------------------------------------
def export_member(checkpoint: str, cfg: PipelineConfig, out_dir: str) -> dict:
    """ONNX bundle with its parity check; INT8 when the recipe says so. Returns the bundle's metadata."""
    from .export import INT8_OPSET, OPSET, export_onnx, quantize_bundle

    result = export_onnx(checkpoint, out_dir, opset=INT8_OPSET if cfg.recipe.int8 else OPSET)
    meta = {"onnx_bytes": result.onnx_bytes, "parity_max_abs_diff": result.max_abs_diff}
    if cfg.recipe.int8:
        q = quantize_bundle(out_dir)
        meta |= {"onnx_bytes": q.int8_bytes, "fp32_onnx_bytes": q.fp32_bytes,
                 "int8_max_abs_diff_vs_fp32": q.max_abs_diff, "quantization": "int8-dynamic"}
        print(f"INT8: {q.fp32_bytes:,} -> {q.int8_bytes:,} bytes; max |logit diff| vs FP32 {q.max_abs_diff:.3f}")
    return meta


# -- evaluate -------------------------------------------------------------------------------------------
def evaluate_member(bundle: str, test_set: str, cfg: PipelineConfig, tracking_uri: str, run_id: str,
                    out_dir: str) -> dict:
    """Test-set figures of the bundle, logged to the run with the per-class report and confusion matrix."""
    import mlflow

    from .evaluate import evaluate_bundle

    result = evaluate_bundle(bundle, pd.read_parquet(test_set), cfg.evaluate, out_dir)
    with _logging_to(tracking_uri, run_id):
        mlflow.log_metrics({f"test_{k}": v for k, v in numbers(result).items()})
        mlflow.log_artifacts(out_dir, R.EVALUATION_ARTIFACT)
    return result | {"run_id": run_id}


def numbers(result: dict) -> dict:
    return {k: v for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


# -- gate -----------------------------------------------------------------------------------------------
def gate_floors(params) -> dict[str, tuple[str, str]]:
    """The absolute conditions, as people read them: name -> (metric, bound)."""
    return {"accuracy": ("accuracy", f">= {params.min_accuracy}"), "macro-F1": ("macro_f1", f">= {params.min_macro_f1}"),
            "calibration error": ("ece", f"<= {params.max_ece}"),
            "margin over each champion": ("accuracy", f"{params.min_improvement:+} over the champions' accuracy")}


def _accuracy_on(found: R.Downloaded, test: pd.DataFrame, test_sha256: str) -> tuple[float, str]:
    """A registered version's accuracy on `test`: the figure it recorded when it was measured on these very
    rows (its verified ONNX file on the same texts answers the same), else re-scored here."""
    from .evaluate import accuracy_on
    from .gate import RECORDED, RESCORED

    if found.tags.test_sha256 == test_sha256 and found.tags.accuracy:
        return float(found.tags.accuracy), RECORDED
    return accuracy_on(found.bundle_dir, test), RESCORED


def gate_member(bundle: str, test_set: str, evaluation: dict, lineage: dict, cfg: PipelineConfig,
                tracking_uri: str, registered_model: str):
    """Floors, every champion the recipe must beat (on this test set) and, for a compressed member, the exact
    teacher version; the decision and its reasons are logged to the run."""
    import mlflow

    from .gate import ChampionScore, TeacherScore, decide

    test = pd.read_parquet(test_set)
    test_sha256 = D.frame_sha256(test)
    others = [R.registered_model_name(cfg.model_name, v.strip()) for v in cfg.gate.also_beat.split(",") if v.strip()]
    champions = []
    for name in [registered_model] + others:
        with tempfile.TemporaryDirectory() as tmp:
            champion = R.find_champion(name, tmp, tracking_uri=tracking_uri)
            if champion:
                champions.append(ChampionScore(name, champion.version, *_accuracy_on(champion, test, test_sha256)))
    same = identical_version(bundle, lineage, registered_model, tracking_uri)
    teacher = None
    if lineage.get("teacher_model"):
        with tempfile.TemporaryDirectory() as tmp:
            t = R.download_version(lineage["teacher_model"], lineage["teacher_version"], tmp, tracking_uri)
            accuracy, source = _accuracy_on(t, test, test_sha256)
            teacher = TeacherScore(t.model, t.version, accuracy, R.bundle_file(t.bundle_dir, R.ONNX_FILE).stat().st_size,
                                   source)
    decision = decide(evaluation, cfg.gate, champions, teacher, same)
    with _logging_to(tracking_uri, evaluation["run_id"]):
        mlflow.set_tag(R.RUN_GATE, decision.verdict)
        if not decision.register:
            mlflow.set_tag(R.RUN_NAME_TAG, R.run_name(registered_model, "rejected", "train"))
        mlflow.log_dict(decision.to_dict(), R.GATE_DECISION)
        for c in champions:
            mlflow.log_metric(f"champion_test_accuracy.{c.model}", c.accuracy)
        if teacher:
            mlflow.log_metrics({"teacher_test_accuracy": teacher.accuracy,
                                "accuracy_ratio_vs_teacher": evaluation["accuracy"] / teacher.accuracy,
                                "size_ratio_vs_teacher": evaluation["onnx_bytes"] / teacher.onnx_bytes})
    print(f"gate: {decision.verdict}" + "".join(f"\n  - {r}" for r in decision.reasons))
    return decision


def identical_version(bundle: str, lineage: dict, registered_model: str, tracking_uri: str) -> str:
    """The @champion or @challenger whose checkpoint or ONNX bundle equals the candidate's byte for byte, as
    "champion v3"; "" when none does. Deterministic training on the same rows, recipe and code gives the same
    bytes: registering them again would roll a version out against itself."""
    c = R.client(tracking_uri)
    checkpoint = lineage.get("checkpoint_sha256", "")
    onnx = R.bundle_sha256(bundle) if Path(bundle).is_dir() else ""   # a gate asked about scores alone has no bundle
    for alias in (R.CHAMPION, R.CHALLENGER):
        version = R.alias_version(c, registered_model, alias)
        if version is None:
            continue
        tags = R.version_tags(c, registered_model, version)
        if (onnx and onnx == tags.artifact_sha256) or (checkpoint and checkpoint == tags.checkpoint_sha256):
            return f"{alias} v{version}"
    return ""


# -- register -------------------------------------------------------------------------------------------
def register_member(bundle: str, evaluation: dict, lineage: dict, cfg: PipelineConfig, tracking_uri: str,
                    registered_model: str, data_sha256: str, split_sha256: str, git_commit: str,
                    ledger_url: str | None = None, credentials: tuple[str | None, str | None] = (None, None)) -> str:
    """Register the bundle with its complete record (recipe, lineage, digests, figures); returns the version.
    The release ledger (`ledger_url`, default beside an embedded MLflow) records who registered it, as the
    registry authenticated them (`credentials`: the MLflow user and password of a tracking server)."""
    import mlflow

    from ..registry.ledger import Ledger
    from ..registry.ledger import ledger_url as default_ledger
    from ..registry.mirror import Release
    from ..registry.principal import authenticated_principal

    tags = R.VersionTags(variant=cfg.model.variant, profile=cfg.profile, config=cfg.to_json(),
                         data_sha256=data_sha256, git_commit=git_commit, training_data_sha256=split_sha256,
                         test_sha256=evaluation.get("test_sha256", ""),
                         **{k: str(evaluation[k]) for k in R.METRIC_TAGS}, **lineage)
    mlflow.set_tracking_uri(tracking_uri)
    ledger = Ledger(default_ledger(tracking_uri, ledger_url), create=True)
    try:
        release = Release(R.client(tracking_uri), ledger, authenticated_principal(tracking_uri, *credentials),
                          cfg.release.lease_ttl_s)
        version = R.register_bundle(bundle, registered_model, evaluation["run_id"], tags, release)
        release.client.set_tag(evaluation["run_id"], R.RUN_NAME_TAG, R.run_name(registered_model, version, "train"))
        return version
    finally:
        ledger.close()


def card_member(registered_model: str, version: str, tracking_uri: str, ledger_url: str | None = None) -> str:
    """The registered version's model card, logged with it (card.write_card); returns the Markdown. The
    version is registered already: a card that cannot be written is reported, and `yanjin card --write`
    writes it later."""
    from ..registry.ledger import Ledger
    from ..registry.ledger import ledger_url as default_ledger
    from .card import write_card

    try:
        ledger = Ledger(default_ledger(tracking_uri, ledger_url))
        try:
            return write_card(R.client(tracking_uri), registered_model, version, ledger)
        finally:
            ledger.close()
    except Exception as e:  # noqa: BLE001 - the registration stands; say plainly what is missing
        message = f"model card of {registered_model} v{version} not written: {type(e).__name__}: {e}"
        print(message + f"; write it with: yanjin card {registered_model} {version} --write")
        return f"# {registered_model} version {version}\n\n{message}\n"


# -- the family run ---------------------------------------------------------------------------------------
def record_family(rows: dict[str, dict], cfg: PipelineConfig, tracking_uri: str, family_run_id: str) -> str:
    """The family table (member -> report.family_row) as Markdown, logged with its rows to the run that
    validated the family's data; returns the Markdown."""
    import mlflow

    from .report import family_markdown

    text = family_markdown(rows, cfg.profile)
    mlflow.set_tracking_uri(tracking_uri)
    with mlflow.start_run(run_id=family_run_id):
        mlflow.log_dict(rows, R.FAMILY_RUN_TABLE)
        mlflow.log_text(text, R.FAMILY_RUN_MARKDOWN)
        mlflow.set_tags({f"{R.RUN_GATE}.{member}": row["gate"] for member, row in rows.items()})
    print(text)
    return text
