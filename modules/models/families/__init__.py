"""One module per model family; importing this package registers them in `spec.FAMILIES`."""
from modules.models.families import cogvideox, sd, sdxl, unet3d  # noqa: F401
