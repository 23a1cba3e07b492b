"""Model parts: loading from local diffusers folders, tiny presets, video inflation."""
from modules.models.loading import DiffusionParts, ModelNotFoundError, load_parts
from modules.models.video_unet import FRAME_ATTENTION_MODES, VideoUNet

__all__ = ["DiffusionParts", "ModelNotFoundError", "load_parts", "VideoUNet", "FRAME_ATTENTION_MODES"]
