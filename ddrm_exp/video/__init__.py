"""Video restoration (report §6 and §9): BSD sequences restored frame by frame, in order."""

from ddrm_exp.video.sequences import VideoSequence, group_sequences
from ddrm_exp.video.temporal import TemporalSettings

__all__ = ["TemporalSettings", "VideoSequence", "group_sequences"]
