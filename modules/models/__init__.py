"""Model parts: model-family specs (`load_model`), tiny presets, video inflation."""
from modules.models.loading import ModelNotFoundError, load_parts
from modules.models.spec import (
    FAMILIES,
    PRESETS,
    ConditioningError,
    ModelFamilyError,
    ModelSpec,
    VideoSizeError,
    load_model,
)
from modules.models.video_unet import FRAME_ATTENTION_MODES, VideoUNet

__all__ = [
    "ModelNotFoundError", "load_parts", "VideoUNet", "FRAME_ATTENTION_MODES", "FAMILIES", "PRESETS",
    "ConditioningError", "ModelFamilyError", "ModelSpec", "VideoSizeError", "load_model",
]
