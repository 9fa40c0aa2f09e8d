"""Where rank 0's training metrics go: TensorBoard by default, MLflow / W&B when configured."""

from __future__ import annotations

from typing import Any

from s1ray.train.config import TrainConfig


class MetricSinks:
    """TensorBoard by default, MLflow / W&B when configured; rank 0 only."""

    def __init__(self, cfg: TrainConfig, run_name: str, tb_dir: str | None):
        self.writers: list[Any] = []
        self.mlflow = self.wandb = None
        if cfg.logging.tensorboard and tb_dir:
            from torch.utils.tensorboard import SummaryWriter

            self.writers.append(SummaryWriter(tb_dir))
        if cfg.logging.mlflow_tracking_uri:
            try:
                import mlflow
            except ImportError as e:
                raise RuntimeError("logging.mlflow_tracking_uri is set but mlflow is not installed: "
                                   "pip install mlflow") from e
            mlflow.set_tracking_uri(cfg.logging.mlflow_tracking_uri)
            mlflow.set_experiment(cfg.logging.mlflow_experiment)
            mlflow.start_run(run_name=run_name)
            self.mlflow = mlflow
        if cfg.logging.wandb_project:
            try:
                import wandb
            except ImportError as e:
                raise RuntimeError("logging.wandb_project is set but wandb is not installed: pip install wandb") from e
            wandb.init(project=cfg.logging.wandb_project, name=run_name, id=run_name, resume="allow")
            self.wandb = wandb

    def log(self, metrics: dict[str, float], step: int) -> None:
        for w in self.writers:
            for k, v in metrics.items():
                w.add_scalar(f"train/{k}", v, step)
        if self.mlflow:
            self.mlflow.log_metrics(metrics, step=step)
        if self.wandb:
            self.wandb.log(metrics, step=step)

    def close(self) -> None:
        for w in self.writers:
            w.close()
        if self.mlflow:
            self.mlflow.end_run()
        if self.wandb:
            self.wandb.finish()
