"""The study from its configuration to its report (`run_study`); `python -m mobile_pirl_tf.study`
is this with flags."""

import dataclasses
import os

from mobile_pirl_tf.core.progress import duration
from mobile_pirl_tf.study import plan
from mobile_pirl_tf.study.cells import CellRunner
from mobile_pirl_tf.study.costs import Budget, Costs, OutOfBudget
from mobile_pirl_tf.study.footprint import backbone_footprint
from mobile_pirl_tf.study.report import Report
from mobile_pirl_tf.study.stages import Study
from mobile_pirl_tf.study.trials import TrialLog


def build(config, base, log=print, footprints=True):
    """(study, source) ready to plan or run: splits, source, runner, costs, budget, trials.

    Args:
      config: the `StudyConfig` (validated).
      base: the `TrainConfig` every run starts from.
      footprints: measure stage D's costs (off in tests that inject scores).
    """
    from mobile_pirl_tf.data import labelled, sources

    os.makedirs(config.output_dir, exist_ok=True)
    os.makedirs(config.runs_folder(), exist_ok=True)
    budget = Budget(config.budget_hours)
    train, test = labelled.folder_splits(config.eval_data_dir)
    splits = (labelled.balanced_subset(train, config.eval_train_images, seed=0),
              labelled.balanced_subset(test, config.eval_test_images, seed=0))
    source = sources.make_source(base.dataset, base.data_dir, base.tfds_data_dir,
                                 base.tfds_manual_dir)
    steps = source.num_examples // base.batch_size
    if base.steps_per_epoch:
        steps = min(steps, base.steps_per_epoch)
    runner = CellRunner(base, config.output_dir, config.runs_folder(), splits,
                        config.keep_checkpoints, log)
    costs = Costs(os.path.join(config.output_dir, "costs.json"), base, steps,
                  len(splits[0].labels) + len(splits[1].labels))
    for run, record in runner.recorded():  # what this machine's runs really took
        costs.observe(run.cell, record)
    trials = TrialLog(config.storage_url())
    footprint = None
    if footprints:
        def footprint(backbone):
            return backbone_footprint(backbone, base.image_size, source, config.output_dir,
                                      config.phone_results, log)
    study = Study(config, runner, costs, budget, footprint, trials.record, log)
    return study, source, trials


def calibrate(study, log=print):
    """Measures the costs of every backbone the study trains that costs.json lacks."""
    c = study.c
    backbones = list(dict.fromkeys(list(c.backbones) + [c.study_backbone or c.backbones[0]]
                                   + ([c.reference_backbone] if c.reference_backbone else [])))
    todo = [b for b in backbones if not study.costs.measured(b)]
    if not todo:
        return
    log(f"calibration: {len(todo)} backbone(s) to measure on this machine, about "
        f"{duration(study.costs.calibration_seconds(todo))} ({study.budget.text()})")
    scratch = os.path.join(c.runs_folder(), "calibration")
    for i, backbone in enumerate(todo, 1):
        study.budget.check(study.costs.calibration_seconds([backbone]), f"measuring {backbone}")
        log(f"calibration {i}/{len(todo)}: {backbone}")
        study.costs.measure(backbone, scratch, log)


def run_study(config, base, log=print, command="python -m mobile_pirl_tf.study"):
    """Plans, calibrates (unless --dry_run) and runs (or continues) the study, then writes its
    report; returns the `Study`."""
    study, source, trials = build(config, base, log)
    report = Report(study, base, command, 0.0, {}, source.num_examples)
    trials.sync(report.records())
    if config.dry_run:
        todo = [b for b in config.backbones if not study.costs.measured(b)]
        if todo:
            log(f"(calibration, the first step of a real run or --calibrate, would measure "
                f"{len(todo)} backbone(s) here in about "
                f"{duration(study.costs.calibration_seconds(todo))})")
        for line in plan.describe(study, plan.plan(study)):
            log(line)
        return study
    try:
        calibrate(study, log)
    except OutOfBudget as e:
        log(f"stopping at the budget during calibration: {e}")
        return study
    plans = plan.plan(study)
    for line in plan.describe(study, plans):
        log(line)
    if config.calibrate:
        return study
    study.run()
    report = Report(study, base, command, study.budget.elapsed(), plans, source.num_examples)
    report.write(log)
    return study


def base_from(train_config, config):
    """The base `TrainConfig` of the study's runs (model_dir and the per-run fields are set per
    run)."""
    return dataclasses.replace(train_config, transforms="jigsaw", model_dir="",
                               backbone=config.backbones[0]).validate()
