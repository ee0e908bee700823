"""The study's runs as Optuna trials (`--storage`: SQLite by default, an RDB URL for several
machines): one completed trial per scored run, its value the linear top-1 and its user
attributes the stage, role, cell, seed, epochs and the other scores, so the study can be
browsed with Optuna's tools (optuna-dashboard, `study.trials_dataframe()`). The runs' records
are the source of truth: trials missing from the storage (a new machine, a new storage) are
added from them (`sync`)."""

import logging
import os

from mobile_pirl_tf.core.errors import UsageError
from mobile_pirl_tf.core.records import set_aside

STUDY_NAME = "mobile-pirl"


class TrialLog:
    def __init__(self, storage):
        import optuna
        import sqlalchemy

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        try:
            self.study = optuna.create_study(study_name=STUDY_NAME, storage=storage,
                                             direction="maximize", load_if_exists=True)
        except sqlalchemy.exc.DatabaseError as e:
            path = storage[len("sqlite:///"):] if storage.startswith("sqlite:///") else None
            if not path or not os.path.exists(path):
                raise UsageError(f"--storage={storage} cannot be used "
                                 f"({str(e).splitlines()[0][:160]})") from None
            # A mirror of the records: set aside and rebuilt from them (`sync`).
            logging.warning("%s is damaged (%s); set aside as %s, its trials are rebuilt from "
                            "the records", path, str(e.orig if hasattr(e, "orig") else e)[:80],
                            set_aside(path))
            self.study = optuna.create_study(study_name=STUDY_NAME, storage=storage,
                                             direction="maximize")
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
