"""Frame sizes a model cannot take are refused at setup, before any decoding or training, with the
nearest valid sizes; a folder given with a prompt says how to unset it."""
import pytest

from data.clip_dataset import ClipDataModule


class Module:  # what the datamodule reads of the LightningModule: its loaded model (`parts`)
    def __init__(self, parts):
        self.parts = parts


def test_tiny_sd_height_31_is_refused_at_setup_before_decoding(tiny_parts):
    dm = ClipDataModule("samples/pan_astronaut.mp4", height=31, width=32, num_frames=4)
    with pytest.raises(ValueError, match=r"data.init_args.height/width \(31×32\).*height 31 is not a multiple of 2"
                                         r".*VAE.*30 or 32"):
        dm.check_frame_size(Module(tiny_parts))
    assert dm._dataset is None  # nothing decoded
    ClipDataModule("samples/pan_astronaut.mp4", height=30, width=32, num_frames=4).check_frame_size(Module(tiny_parts))


def test_a_folder_with_a_prompt_says_how_to_unset_it():
    with pytest.raises(ValueError, match=r"--data.init_args.prompt null"):
        ClipDataModule("samples", prompt="a photo of an astronaut")
