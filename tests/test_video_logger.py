"""Which codec the logged videos use, and a GIF beside any that browsers would not play."""
import numpy as np

from data.video_io import write_video
from modules.callbacks.video_logger import browser_safe, describe_codec, video_codec, wandb_videos


def frames(n=4, h=16, w=24):
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (n, h, w, 3), dtype=np.uint8)


def test_the_writer_makes_browser_safe_h264(tmp_path):
    p = write_video(tmp_path / "a.mp4", frames(), fps=8)
    info = video_codec(p)
    assert info["codec"] == "h264" and info["pix_fmt"] == "yuv420p" and browser_safe(info)
    assert describe_codec(info).startswith("H.264 yuv420p")
    media, codecs = wandb_videos({"side_by_side": p}, fps=8)
    assert set(media) == {"video/side_by_side"} and not (tmp_path / "a.gif").exists()


def test_a_gif_is_logged_beside_an_mp4_browsers_cannot_play(tmp_path):
    p = write_video(tmp_path / "b.mp4", frames(), fps=8, pix_fmt="yuv444p")  # High 4:4:4: not for browsers
    assert not browser_safe(video_codec(p))
    media, codecs = wandb_videos({"edit:a cat": p}, fps=8)
    assert set(media) == {"video/edit_a_cat", "video/edit_a_cat_gif"}
    gif = tmp_path / "b.gif"
    assert gif.stat().st_size > 0 and "yuv444p" in codecs["edit:a cat"]
    import imageio.v3 as iio

    assert iio.imread(gif).shape[0] == 4  # all frames
