"""Optional experiment tracking: `logger=tensorboard` or `logger=wandb` (metrics.jsonl is always written).

A tracker gets each line of metrics.jsonl as it is logged. RUN_DIR/tracking.json remembers the
last step a tracker was given (and the wandb run's id), so a resumed run continues the same
tracked run and does not send again the steps it redoes after its last checkpoint (their values
are the same: resuming is exact).
"""

import json
import uuid
from pathlib import Path

from omegaconf import DictConfig

from minicl.common import write_json


class Tracker:
    """Sends metrics.jsonl records to a tracking backend, each step at most once over resumes."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / "tracking.json"
        self.state = json.loads(self.path.read_text()) if self.path.exists() else {"last_step": -1}

    def log(self, record: dict) -> None:
        if record["step"] <= self.state["last_step"]:
            return  # sent before the run was interrupted and resumed
        self.send({k: v for k, v in record.items() if k != "step"}, record["step"])
        self.state["last_step"] = record["step"]
        self.save()

    def save(self) -> None:
        write_json(self.path, self.state)

    def send(self, values: dict, step: int) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class TensorBoard(Tracker):
    """Scalars train/<name> in RUN_DIR/tensorboard, through torch.utils.tensorboard."""

    def __init__(self, run_dir: Path):
        super().__init__(run_dir)
        from torch.utils.tensorboard import SummaryWriter  # deferred: needs the tensorboard extra

        self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def send(self, values: dict, step: int) -> None:
        for name, value in values.items():
            self.writer.add_scalar(f"train/{name}", value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandB(Tracker):
    """A wandb run with the run's resolved config, its id kept in tracking.json for resumes."""

    def __init__(self, run_dir: Path, logger: DictConfig, config: dict):
        super().__init__(run_dir)
        import wandb  # deferred: needs the wandb extra

        self.state.setdefault("wandb_id", uuid.uuid4().hex[:8])
        self.save()
        self.run = wandb.init(
            project=logger.project,
            entity=logger.entity,
            mode=logger.mode,
            dir=str(run_dir),
            id=str(self.state["wandb_id"]),
            resume="allow",
            config=config,
            name=run_dir.name,
        )

    def send(self, values: dict, step: int) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


def make_tracker(logger: DictConfig, run_dir: Path, config: dict) -> Tracker | None:
    """The tracker `logger.name` asks for, or None; a missing extra is named at once."""
    if logger.name == "none":
        return None
    try:
        return TensorBoard(run_dir) if logger.name == "tensorboard" else WandB(run_dir, logger, config)
    except ImportError as e:
        raise ImportError(f'logger={logger.name} needs its extra: pip install -e ".[{logger.name}]" ({e})') from e
