import numpy as np
import pytest
import torch

from data.clip_dataset import SAMPLES_DIR
from data.video_io import read_video, to_tensor
from modules.metrics import ClipScorer, flow_consistency, optical_flow, psnr, splat, ssim, warp, warping_error


@pytest.fixture(scope="module")
def pan():
    frames = read_video(SAMPLES_DIR / "pan_astronaut.mp4")
    flow = np.load(SAMPLES_DIR / "pan_astronaut.flow.npy")
    return frames, flow


def test_psnr_and_ssim():
    rng = np.random.RandomState(0)
    a = rng.randint(0, 256, (3, 24, 24, 3)).astype(np.uint8)
    assert np.isinf(psnr(a, a)).all() and psnr(a, a).shape == (3,)
    shifted = np.clip(a.astype(int) + 10, 0, 255).astype(np.uint8)
    b = np.where(a < 240, shifted, a - 10).astype(np.uint8)  # every pixel differs by exactly 10
    np.testing.assert_allclose(psnr(a, b), 20 * np.log10(255 / 10), atol=1e-6)
    noisy = np.clip(a + rng.normal(0, 25, a.shape), 0, 255).astype(np.uint8)
    p = psnr(a, noisy)
    assert (p < 25).all() and (p > 15).all()
    np.testing.assert_allclose(ssim(a, a), 1.0)
    assert (ssim(a, noisy) < 1.0).all()
    # framework tensors are accepted too
    np.testing.assert_allclose(psnr(to_tensor(a), to_tensor(b)), psnr(a, b))
    with pytest.raises(ValueError, match="same shape"):
        psnr(a, a[:2])


def test_ssim_on_photo(pan):
    frames, _ = pan
    rng = np.random.RandomState(1)
    noisy = np.clip(frames + rng.normal(0, 25, frames.shape), 0, 255).astype(np.uint8)
    s = ssim(frames, noisy)
    assert s.shape == (8,) and (s < 0.8).all() and (s > 0.1).all()
    assert (ssim(frames, frames[[0] * 8]) < 0.9)[1:].all()  # moved content is dissimilar
    assert (psnr(frames, noisy) < psnr(frames, np.clip(frames + rng.normal(0, 5, frames.shape), 0, 255).astype(np.uint8))).all()


def test_warp_shift_and_mask():
    frame = np.arange(5 * 6 * 3, dtype=np.float32).reshape(5, 6, 3)
    flow = np.zeros((5, 6, 2), np.float32)
    flow[..., 0] = -2  # sample 2 px to the left
    out, mask = warp(frame, flow, return_mask=True)
    np.testing.assert_array_equal(out[:, 2:], frame[:, :-2])
    assert mask[:, 2:].all() and not mask[:, :2].any()
    with pytest.raises(ValueError, match="flow must be shaped"):
        warp(frame, flow[:, :3])


def test_farneback_recovers_known_pan(pan):
    frames, gt = pan
    assert gt.shape == (7, 64, 64, 2) and gt.dtype == np.float32
    flow = optical_flow(frames)
    assert flow.shape == gt.shape
    inner = flow[:, 8:-8, 8:-8]
    np.testing.assert_allclose(np.median(inner, axis=(0, 1, 2)), [-2, 0], atol=0.1)
    zoom = read_video(SAMPLES_DIR / "zoom_coffee_12f.mp4")
    zflow = optical_flow(zoom[:3], method="dis")
    np.testing.assert_allclose(np.median(zflow[:, 8:-8, 8:-8], axis=(0, 1, 2)), [-3, -1], atol=0.2)


def test_ssim_is_the_gaussian_window_ssim(pan):
    """SSIM with the 11x11, sigma 1.5 Gaussian window as torchmetrics computes it, checked against
    scikit-image: torchmetrics fills the 5-pixel border by reflection (numpy's 'reflect') and averages
    over the whole frame, so scikit-image on the reflect-padded frames (which crops exactly that border
    again) must give the same per-frame value."""
    from skimage.metrics import structural_similarity

    frames, _ = pan
    rng = np.random.RandomState(2)
    noisy = np.clip(frames + rng.normal(0, 12, frames.shape), 0, 255).astype(np.uint8)
    ours = ssim(frames, noisy)
    pad = lambda x: np.pad(x, ((5, 5), (5, 5), (0, 0)), mode="reflect")  # noqa: E731
    ref = [structural_similarity(pad(x), pad(y), channel_axis=-1, data_range=255, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False) for x, y in zip(frames, noisy)]
    np.testing.assert_allclose(ours, ref, atol=1e-7)
    # a non-square frame and a different degradation
    blur = ((frames[:, :40].astype(np.float64) + np.roll(frames[:, :40], 1, axis=2)) / 2).astype(np.uint8)
    ref = [structural_similarity(pad(x), pad(y), channel_axis=-1, data_range=255, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False) for x, y in zip(frames[:, :40], blur)]
    np.testing.assert_allclose(ssim(frames[:, :40], blur), ref, atol=1e-7)
    # the old uniform 7x7 window gives a different value
    uniform = [structural_similarity(x, y, channel_axis=-1, data_range=255, win_size=7) for x, y in zip(frames, noisy)]
    assert np.abs(ours - np.array(uniform)).max() > 5e-3
    with pytest.raises(ValueError, match="11x11 Gaussian window"):
        ssim(frames[:, :8, :8], frames[:, :8, :8])


def test_psnr_matches_independent_formula(pan):
    frames, _ = pan
    rng = np.random.RandomState(3)
    noisy = np.clip(frames + rng.normal(0, 9, frames.shape), 0, 255).astype(np.uint8)
    mse = ((frames.astype(np.float64) - noisy) ** 2).reshape(len(frames), -1).mean(1)
    np.testing.assert_allclose(psnr(frames, noisy), 10 * np.log10(255.0**2 / mse), atol=1e-5)  # torchmetrics: float32 log
    assert psnr(frames, noisy).dtype == np.float64 and psnr(frames, noisy).shape == (8,)


def occluder_video(num_frames=4, size=48, box=(16, 12, 14), step=3, seed=0):
    """A textured static background with a textured square moving right by ``step`` px per frame,
    and its exact forward (n -> n+1, on frame n) and backward (n+1 -> n, on frame n+1) flows."""
    rng = np.random.RandomState(seed)
    bg = (rng.rand(size, size, 3) * 255).astype(np.uint8)
    y0, x0, side = box
    patch = (rng.rand(side, side, 3) * 255).astype(np.uint8)
    frames, fwd, bwd = [], [], []
    for n in range(num_frames):
        f = bg.copy()
        f[y0:y0 + side, x0 + n * step:x0 + n * step + side] = patch
        frames.append(f)
    for n in range(num_frames - 1):
        fl = np.zeros((size, size, 2), np.float32)
        fl[y0:y0 + side, x0 + n * step:x0 + n * step + side, 0] = step
        bl = np.zeros((size, size, 2), np.float32)
        bl[y0:y0 + side, x0 + (n + 1) * step:x0 + (n + 1) * step + side, 0] = -step
        fwd.append(fl)
        bwd.append(bl)
    return np.stack(frames), np.stack(fwd), np.stack(bwd)


def test_forward_backward_check_marks_occlusions():
    frames, fwd, bwd = occluder_video()
    y0, x0, side, step = 16, 12, 14, 3
    for n in range(len(fwd)):
        left = x0 + n * step  # the square's left edge in frame n
        # on frame n+1: the strip the square uncovered (visible in n+1, hidden in n) fails the check
        dis = np.zeros((48, 48), bool)
        dis[y0:y0 + side, left:left + step] = True
        np.testing.assert_array_equal(~flow_consistency(bwd[n], fwd[n]), dis)
        # on frame n: the background the square is about to cover fails the check
        occ = np.zeros((48, 48), bool)
        occ[y0:y0 + side, left + side:left + side + step] = True
        np.testing.assert_array_equal(~flow_consistency(fwd[n], bwd[n]), occ)


def test_warping_error_direction_and_occlusion_mask():
    frames, fwd, bwd = occluder_video()
    y0, x0, side, step = 16, 12, 14, 3
    err, per_pair, masks = warping_error(frames, frames, flow=fwd, backward_flow=bwd, return_masks=True)
    # the source is perfectly warped by its own flow: ~0 once occlusions are masked
    assert per_pair.shape == (3,) and masks.shape == (3, 48, 48)
    assert err < 1e-12
    for n in range(3):
        # masks live on frame n+1 (frame n is warped onto n+1): exactly the disoccluded strip is left out
        hole = np.zeros((48, 48), bool)
        hole[y0:y0 + side, x0 + n * step:x0 + n * step + step] = True
        np.testing.assert_array_equal(~masks[n], hole)
        # splatting frame n by the forward flow reproduces frame n+1 on the scored pixels
        warped, valid = splat(frames[n].astype(np.float64), fwd[n], source_mask=flow_consistency(fwd[n], bwd[n]))
        np.testing.assert_array_equal(valid, masks[n])
        np.testing.assert_allclose(warped[valid], frames[n + 1][valid])
    # without the occlusion check the same perfect output would be penalised
    naive, _ = splat(frames[0].astype(np.float64), fwd[0])
    assert np.mean((naive / 255.0 - frames[1] / 255.0) ** 2) > 1e-3
    # changing output frame n+1 where it is disoccluded is not scored; changing it elsewhere is
    out = frames.copy()
    out[1, y0:y0 + side, x0:x0 + step] = 0
    assert warping_error(frames, out, flow=fwd, backward_flow=bwd)[1][0] < 1e-12
    out[1, 0:4, 0:4] = 255 - out[1, 0:4, 0:4]
    assert warping_error(frames, out, flow=fwd, backward_flow=bwd)[1][0] > 1e-4


def test_warping_error_with_ground_truth_flow(pan):
    frames, gt = pan
    back = -gt  # a constant pan: the backward flow is the negated forward flow
    err_gt, per_frame, masks = warping_error(frames, frames, flow=gt, backward_flow=back, return_masks=True)
    # content moves 2 px left: the two rightmost columns of frame n+1 enter the frame and are not scored
    assert (~masks[:, :, -2:]).all() and masks[:, :, :-2].all()
    err_zero, _ = warping_error(frames, frames, flow=np.zeros_like(gt), backward_flow=np.zeros_like(gt))
    err_est, _ = warping_error(frames, frames)  # both flows estimated on the source
    err_fwd_only, _ = warping_error(frames, frames, flow=gt)  # backward flow estimated
    assert per_frame.shape == (7,) and err_gt == pytest.approx(per_frame.mean())
    assert 0 <= err_gt < 1e-5 and err_zero > 0.01  # mp4 coding noise only
    assert err_fwd_only < 1e-5
    assert err_est < err_zero / 20
    # a temporally flickering output scores worse than the clean one
    flicker = frames.astype(int)
    flicker[1::2] = np.clip(flicker[1::2] + 40, 0, 255)
    err_flicker, _ = warping_error(frames, flicker.astype(np.uint8), flow=gt, backward_flow=back)
    assert err_flicker > 0.02 > err_gt
    with pytest.raises(ValueError, match="same shape"):
        warping_error(frames, frames[:, :32])
    with pytest.raises(ValueError, match="backward_flow must be shaped"):
        warping_error(frames, frames, flow=gt, backward_flow=back[:3])


def test_warping_error_on_every_bundled_clip():
    from pathlib import Path

    for video in sorted(Path(SAMPLES_DIR).glob("*.mp4")):
        frames = read_video(video)
        gt = np.load(video.with_name(video.stem + ".flow.npy"))
        err, _, masks = warping_error(frames, frames, flow=gt, backward_flow=-gt, return_masks=True)
        assert err < 1e-5, video.name  # mp4 coding noise only
        assert 0.8 < masks.mean() < 1.0, video.name


# -- CLIP ------------------------------------------------------------------------------------------


def tiny_tokenizer():
    from transformers import CLIPTokenizer

    words = "a photo of an astronaut cat cup coffee rocket".split()
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in sorted(set("".join(words))):
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    merges = []
    for w in words:  # merge each word left to right into one token
        symbols = list(w[:-1]) + [w[-1] + "</w>"]
        cur = symbols[0]
        for s in symbols[1:]:
            if (cur, s) not in merges:
                merges.append((cur, s))
            cur += s
            vocab.setdefault(cur, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=merges)


@pytest.fixture(scope="module")
def tiny_clip_dir(tmp_path_factory):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    path = tmp_path_factory.mktemp("tiny_clip")
    tok = tiny_tokenizer()
    assert tok.convert_ids_to_tokens(tok("a photo of a cat")["input_ids"])[1:-1] == ["a</w>", "photo</w>", "of</w>", "a</w>", "cat</w>"]
    cfg = CLIPConfig(
        text_config=dict(
            vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1,
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8
        ),
        projection_dim=16,
    )
    torch.manual_seed(0)
    CLIPModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    return path


def test_clip_scorer(tiny_clip_dir, pan):
    frames, _ = pan
    scorer = ClipScorer(tiny_clip_dir)
    align = scorer.text_alignment(frames, "a photo of an astronaut")
    assert scorer.text_alignment(frames, "a photo of an astronaut", scale=1.0) == pytest.approx(align / 100, abs=1e-5)
    cons = scorer.frame_consistency(frames)
    # the same numbers through CLIPModel's own forward (its normalised image/text embeddings)
    from transformers import AutoTokenizer, CLIPModel

    model = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    tokens = AutoTokenizer.from_pretrained(tiny_clip_dir)(["a photo of an astronaut"], return_tensors="pt")
    pixels = scorer.image_processor(images=list(frames), return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        out = model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"], pixel_values=pixels)
    img, txt = out.image_embeds.double(), out.text_embeds[0].double()
    assert align == pytest.approx(100 * float((img @ txt).mean()), abs=1e-4)
    sim = img @ img.T
    pairs = [float(sim[i, j]) for i in range(len(img)) for j in range(i + 1, len(img))]
    assert cons == pytest.approx(100 * np.mean(pairs), abs=1e-4)
    consecutive = [float(sim[i, i + 1]) for i in range(len(img) - 1)]
    assert scorer.frame_consistency(frames, pairs="consecutive") == pytest.approx(100 * np.mean(consecutive), abs=1e-4)
    assert np.mean(consecutive) != pytest.approx(np.mean(pairs), abs=1e-6)  # the two pair sets differ here
    still = np.repeat(frames[:1], 4, axis=0)
    assert scorer.frame_consistency(still) == pytest.approx(100.0, abs=1e-3)
    assert scorer.frame_consistency(still, scale=1.0) == pytest.approx(1.0, abs=1e-5)
    assert scorer.frame_consistency(still, pairs="consecutive") == pytest.approx(100.0, abs=1e-3)
    noise = np.random.RandomState(0).randint(0, 256, (4, 48, 40, 3)).astype(np.uint8)
    assert scorer.frame_consistency(noise) < 100.0 - 1e-3
    emb = scorer.image_embeddings(frames)
    assert emb.shape == (8, 16) and torch.allclose(emb.norm(dim=-1), torch.ones(8), atol=1e-5)
    # alignment differs between prompts (the text tower is used)
    assert scorer.text_alignment(frames, "a photo of a cat") != pytest.approx(align, abs=1e-6)
    with pytest.raises(ValueError, match="at least 2 frames"):
        scorer.frame_consistency(frames[:1])


def test_clip_scorer_missing_directory(tmp_path):
    missing = tmp_path / "clip-vit-base-patch32"
    with pytest.raises(FileNotFoundError) as err:
        ClipScorer(missing)
    assert str(missing) in str(err.value) and "openai/clip-vit-base-patch32" in str(err.value)
    missing.mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        ClipScorer(missing)
