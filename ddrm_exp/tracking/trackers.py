"""Experiment trackers: where per-image results and summaries go besides the run directory."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Protocol

from omegaconf import DictConfig, OmegaConf

from ddrm_exp.tracking.files import write_json_atomic

log = logging.getLogger(__name__)


class Tracker(Protocol):
    def log_result(self, record: dict[str, Any], image_paths: dict[str, Path]) -> None: ...
    def log_summary(self, summary: dict[str, Any], grid_path: Path | None) -> None: ...
    def log_video(
        self, sequence: dict[str, Any], frames: list[dict[str, Any]], video: Path
    ) -> None: ...
    def finish(self) -> None: ...


class NullTracker:
    """``logger=none``: the run directory is the only record."""

    def log_result(self, record: dict[str, Any], image_paths: dict[str, Path]) -> None:
        pass

    def log_summary(self, summary: dict[str, Any], grid_path: Path | None) -> None:
        pass

    def log_video(
        self, sequence: dict[str, Any], frames: list[dict[str, Any]], video: Path
    ) -> None:
        pass

    def finish(self) -> None:
        pass


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}/{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = value


class WandbTracker:
    """One wandb run per job; the jobs of a multirun share a group.

    Per-image metrics go into a ``results`` table (with the restoration as a wandb Image), the
    summary into ``run.summary`` flattened as ``restored/psnr/mean`` etc., the grid as an image.
    """

    TABLE_COLUMNS = ("index", "name", "psnr", "ssim", "lpips", "baseline_psnr", "residual_rel")

    def __init__(
        self,
        logger_cfg: DictConfig,
        run_config: DictConfig,
        output_dir: Path,
        group: str | None,
        job_name: str,
    ) -> None:
        import wandb  # imported lazily: slow to import, and logger=none must not need it

        self._wandb = wandb
        os.environ.setdefault("WANDB_SILENT", "true")
        self.log_images = bool(logger_cfg.get("log_images", True))
        self.run = wandb.init(
            project=logger_cfg.get("project") or "ddrm_exp",
            entity=logger_cfg.get("entity"),
            group=logger_cfg.get("group") or group,
            name=job_name,
            tags=list(logger_cfg.get("tags") or []),
            mode=logger_cfg.get("mode", "offline"),
            dir=str(output_dir),
            config=OmegaConf.to_container(run_config, resolve=True),  # type: ignore[arg-type]
            reinit="finish_previous",
        )
        self.table_rows: list[list[Any]] = []
        self.images: list[Any] = []
        # Where this job's wandb run is, for tables and for `wandb sync`, without parsing wandb's
        # binary files.
        write_json_atomic(
            output_dir / "wandb_run.json",
            {
                "project": self.run.project,
                "group": self.run.group,
                "name": self.run.name,
                "id": self.run.id,
                "mode": logger_cfg.get("mode", "offline"),
                "dir": str(Path(self.run.dir).parent),
            },
        )

    def log_result(self, record: dict[str, Any], image_paths: dict[str, Path]) -> None:
        row = [record.get("index"), record.get("name")]
        row += [record.get("restored", {}).get(k) for k in ("psnr", "ssim", "lpips")]
        row += [
            record.get("baseline", {}).get("psnr"),
            record.get("restored", {}).get("residual_rel"),
        ]
        self.table_rows.append(row)
        if self.log_images and "restored" in image_paths:
            self.images.append(
                self._wandb.Image(str(image_paths["restored"]), caption=record.get("name"))
            )
        self.run.log(
            {f"image/{k}": v for k, v in zip(self.TABLE_COLUMNS[2:], row[2:], strict=True)}
        )

    def log_summary(self, summary: dict[str, Any], grid_path: Path | None) -> None:
        flat: dict[str, Any] = {}
        _flatten("", summary, flat)
        for key, value in flat.items():
            if isinstance(value, int | float | str | bool) or value is None:
                self.run.summary[key] = value
        payload: dict[str, Any] = {
            "results": self._wandb.Table(columns=list(self.TABLE_COLUMNS), data=self.table_rows)
        }
        if self.log_images and grid_path is not None and grid_path.exists():
            payload["grid"] = self._wandb.Image(str(grid_path), caption="titled columns")
        if self.images:
            payload["restorations"] = self.images
        self.run.log(payload)

    FRAME_COLUMNS = ("frame", "psnr", "ssim", "flicker", "warping_error", "nfe")

    def log_video(
        self, sequence: dict[str, Any], frames: list[dict[str, Any]], video: Path
    ) -> None:
        """task=video: the sequence's video, and its per-frame metrics as a table and a curve."""
        name = sequence["sequence"]
        rows = [
            [
                r.get("frame"),
                r.get("restored", {}).get("psnr"),
                r.get("restored", {}).get("ssim"),
                r.get("temporal", {}).get("flicker"),
                r.get("temporal", {}).get("warping_error"),
                r.get("nfe"),
            ]
            for r in frames
        ]
        table = self._wandb.Table(columns=list(self.FRAME_COLUMNS), data=rows)
        payload: dict[str, Any] = {
            f"frames/{name}": table,
            f"psnr_per_frame/{name}": self._wandb.plot.line(
                table, "frame", "psnr", title=f"{name}: PSNR per frame"
            ),
        }
        if self.log_images:
            fmt = video.suffix.lstrip(".")
            payload[f"video/{name}"] = self._wandb.Video(str(video), format=fmt, caption=name)
        self.run.log(payload)

    def finish(self) -> None:
        self.run.finish()
