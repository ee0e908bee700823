"""The study's runs as Optuna trials (`--storage`: SQLite by default, an RDB URL for several
machines): one completed trial per scored run, its value the linear top-1 and its user
attributes the stage, role, cell, seed, epochs and the other scores, so the study can be
browsed with Optuna's tools (optuna-dashboard, `study.trials_dataframe()`). The runs' records
are the source of truth: trials missing from the storage (a new machine, a new storage) are
added from them (`sync`)."""

import logging

STUDY_NAME = "mobile-pirl"


class TrialLog:
    def __init__(self, storage):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.study = optuna.create_study(study_name=STUDY_NAME, storage=storage,
                                         direction="maximize", load_if_exists=True)
        self.known = {t.user_attrs.get("run") for t in self.study.get_trials(deepcopy=False)}

    def record(self, stage, role, run, result):
        """Adds the run's completed trial (once; another worker may have added it)."""
        if run.key in self.known or result is None:
            return
        import optuna

        attrs = {"run": run.key, "stage": stage, "role": role, "backbone": run.cell.backbone,
                 "transforms": run.cell.transforms, "seed": run.seed, "epochs": run.epochs,
                 **{k: result.get(k) for k in ("knn_top1", "linear_top5", "seconds",
                                               "machine")}}
        try:
            self.study.add_trial(optuna.trial.create_trial(
                value=result["linear_top1"], params={}, distributions={}, user_attrs=attrs))
        except Exception as e:  # noqa: BLE001 - the record is kept; the storage is a mirror
            logging.warning("could not add %s to the Optuna storage: %s", run.key, e)
            return
        self.known.add(run.key)

    def sync(self, runs_and_records, stage="?", role="read back"):
        """Adds a trial for every (run, record) the storage lacks."""
        for run, record in runs_and_records:
            self.record(stage, role, run, record)
