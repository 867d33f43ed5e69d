"""The four tracker adapters behind `train.report_to` (registered in train/trackers.py), all local.

Each has `location(run_dir)`, `start(run_dir, params, run_name, step)`, `log(metrics, step)` and
`finish()`, and imports its library only when started. Where each writes, and how to look:

    tensorboard  RUN/tensorboard/ (event files; `tensorboard --logdir RUN/tensorboard`)
    mlflow       sqlite:///RUN/mlflow.db (MLflow's default store since 3.7; the file store is deprecated):
                 `mlflow ui --backend-store-uri sqlite:///RUN/mlflow.db`
    trackio      RUN/trackio/tailorlm.db (its local SQLite): `TRACKIO_DIR=RUN/trackio trackio show`
    wandb        RUN/wandb/offline-run-*/ (offline mode: no login, no network): `wandb sync` uploads it later

`max_value` is the longest text value a tracker takes as a parameter (MLflow: 6000 characters).
Every library's calls home are switched off (MLflow's telemetry; W&B's analytics, which read its mode
from the environment); a test traces the run's connect() calls to check that none leaves the machine.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import time
from pathlib import Path

from ..run.folder import RunDir

PROJECT = "tailorlm"   # MLflow experiment, trackio project, W&B project; the run is named after its folder


@contextlib.contextmanager
def _env(**values: str | None):
    """Environment switches a library reads while it starts (None: unset), then put back as they were."""
    before = {k: os.environ.get(k) for k in values}
    for k, v in values.items():
        os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    try:
        yield
    finally:
        for k, v in before.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)


class TensorBoard:
    """Scalars via torch's SummaryWriter (float32, TensorBoard's scalar type); the params as a text table."""
    extra, max_value = "tensorboard", 1000

    @staticmethod
    def location(run_dir: Path):
        return RunDir.at(run_dir).tensorboard

    def start(self, run_dir: Path, params: dict, run_name: str, step: int = 0) -> None:
        from torch.utils.tensorboard import SummaryWriter   # needs the tensorboard package

        # a resume drops what the killed run logged past its checkpoint, as metrics.jsonl does
        self.writer = SummaryWriter(log_dir=str(self.location(run_dir)), purge_step=step + 1 if step else None)
        if not step:
            rows = "\n".join(f"| {k} | {v} |" for k, v in params.items())
            self.writer.add_text("config", f"| key | value |\n|---|---|\n{rows}", 0)

    def log(self, metrics: dict, step: int) -> None:
        for k, v in metrics.items():
            self.writer.add_scalar(k, v, step)
        self.writer.flush()   # on disk now: a killed run keeps what it logged (not up to 2 minutes later)

    def finish(self) -> None:
        self.writer.close()


class MLflow:
    """MlflowClient on a SQLite store in the run (no global tracking URI set, no server, no telemetry)."""
    extra, max_value = "mlflow", 6000   # mlflow.utils.validation.MAX_PARAM_VAL_LENGTH

    @staticmethod
    def location(run_dir: Path) -> str:
        return f"sqlite:///{RunDir.at(run_dir.resolve()).mlflow_db}"

    def start(self, run_dir: Path, params: dict, run_name: str, step: int = 0) -> None:
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")   # read at every call: kept for the process
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)   # not "Creating initial ... tables"
        self.client = client = MlflowClient(tracking_uri=self.location(run_dir))
        exp = client.get_experiment_by_name(PROJECT)
        eid = exp.experiment_id if exp else client.create_experiment(
            PROJECT, artifact_location=RunDir.at(run_dir.resolve()).mlflow_artifacts.as_uri())
        earlier = client.search_runs([eid], max_results=1) if step else []   # a resume logs on into it
        self.run_id = earlier[0].info.run_id if earlier else client.create_run(eid, run_name=run_name).info.run_id
        items = [Param(k, str(v)) for k, v in params.items()] if not earlier else []
        for i in range(0, len(items), 100):   # MLflow takes at most 100 params per batch
            client.log_batch(self.run_id, params=items[i:i + 100])

    def log(self, metrics: dict, step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def finish(self) -> None:
        self.client.set_terminated(self.run_id)


class Trackio:
    """trackio's local SQLite store. trackio reads TRACKIO_DIR once, when imported: the first run in a
    process sets it to RUN/trackio (unless the user set it); later runs in that process log beside it."""
    extra, max_value = "trackio", 10_000
    inline = True   # called on the loop's thread: it prints (silenced here), and queues its writes itself

    @staticmethod
    def location(run_dir: Path):
        """Where trackio writes: its folder once imported, else TRACKIO_DIR, else RUN/trackio."""
        imported = sys.modules.get("trackio.utils")
        return (getattr(imported, "TRACKIO_DIR", None) or os.environ.get("TRACKIO_DIR")
                or RunDir.at(run_dir.resolve()).trackio)

    def start(self, run_dir: Path, params: dict, run_name: str, step: int = 0) -> None:
        local = {"TRACKIO_DIR": str(self.location(run_dir)),
                 "TRACKIO_SERVER_URL": None, "TRACKIO_SPACE_ID": None}   # never a server or a Space
        with _env(**local), contextlib.redirect_stdout(io.StringIO()):   # its banner would cut the progress bar
            import trackio

            self.run = trackio.init(project=PROJECT, name=run_name, config=params, resume="allow" if step else "never",
                                    embed=False, auto_log_cpu=False, auto_log_gpu=False)

    def log(self, metrics: dict, step: int) -> None:
        self.run.log(metrics, step=step)

    def finish(self) -> None:
        import trackio

        with contextlib.redirect_stdout(io.StringIO()):
            trackio.finish()   # (this run's, and forgotten: else trackio finishes it again at exit, aloud)


class WandB:
    """Weights & Biases in offline mode: a run folder under RUN/wandb, no login, no network."""
    extra, max_value = "wandb", 10_000

    @staticmethod
    def location(run_dir: Path):
        return RunDir.at(run_dir).wandb

    def start(self, run_dir: Path, params: dict, run_name: str, step: int = 0) -> None:
        with _env(WANDB_MODE="offline", WANDB_SILENT="true"):   # also read by its process-wide analytics,
            self._start(run_dir, params, run_name, step)        # which would post to W&B's server otherwise

    def _start(self, run_dir: Path, params: dict, run_name: str, step: int) -> None:
        import wandb

        earlier = sorted(RunDir.at(run_dir).wandb.glob("offline-run-*")) if step else []   # a resume keeps the id
        rid = earlier[-1].name.rsplit("-", 1)[-1] if earlier else None
        self.run = wandb.init(
            project=PROJECT, name=run_name, dir=str(run_dir), mode="offline", config=params, id=rid,
            resume="allow" if rid else None, reinit="create_new",
            settings=wandb.Settings(silent=True, console="off", x_disable_stats=True, x_disable_meta=True,
                                    save_code=False, disable_git=True))

    def log(self, metrics: dict, step: int) -> None:
        self.run.log(metrics, step=step)

    def finish(self) -> None:
        self.run.finish()
