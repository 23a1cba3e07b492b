"""The one optical-flow module (modules/flow.py): estimation against the bundled clips' ground truth,
chaining to frame 0, latent flow, the differentiable warp, bad input."""
import numpy as np
import pytest
import torch

from data.clip_dataset import ClipDataset
from modules import flow as fl
from modules import metrics
from modules.flow import FlowError, VideoFlow


def test_old_users_import_the_shared_module():
    assert metrics.optical_flow is fl.optical_flow and metrics.warp is fl.warp
    assert metrics.splat is fl.splat and metrics.flow_consistency is fl.flow_consistency
    import data.clip_dataset as cd

    assert cd.compose_flows is fl.compose_flows and cd.resize_crop_flow is fl.resize_crop_flow


@pytest.mark.parametrize("clip,method,limit", [("pan_astronaut", "dis", 0.1), ("pan_astronaut", "farneback", 0.1),
                                               ("zoom_coffee_12f", "dis", 0.3), ("zoom_coffee_12f", "farneback", 0.3)])
def test_estimated_flow_matches_the_bundled_ground_truth(clip, method, limit):
    ds = ClipDataset(f"samples/{clip}.mp4", num_frames=4)
    frames = ds.frames(0)
    est = VideoFlow.estimate(frames, method=method)
    gt = ds.flow(0)
    h, w = gt.shape[1:3]
    inner = np.zeros((h, w), bool)
    inner[8:-8, 8:-8] = True  # borders: content entering the frame has no correspondence
    epe = fl.end_point_error(est.forward.numpy()[:, inner], gt[:, inner])
    print(f"{clip} {method}: end-point error {epe:.3f} px (interior, {len(gt)} pairs)")
    assert epe < limit
    if clip.startswith("pan"):  # a translation: backward = −forward
        assert fl.end_point_error(est.backward.numpy()[:, inner], -gt[:, inner]) < limit


def test_chained_map_of_a_translation_is_the_translation():
    f, h, w, dy, dx = 6, 12, 16, 1.0, -2.0
    flow = VideoFlow.translation(f, h, w, dy=dy, dx=dx)
    back, valid = flow.to_first()
    fwd, fvalid = flow.from_first()
    ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    for j in range(f):
        assert torch.allclose(back[j, ..., 0], torch.full((h, w), -j * dx)) and torch.allclose(back[j, ..., 1], torch.full((h, w), -j * dy))
        assert torch.allclose(fwd[j], -back[j])
        # valid: the point of frame 0 it maps to is inside the frame
        inside = (xs - j * dx >= 0) & (xs - j * dx <= w - 1) & (ys - j * dy >= 0) & (ys - j * dy <= h - 1)
        assert torch.equal(valid[j], inside)


def test_chaining_non_uniform_flows_composes_point_maps():
    g = torch.Generator().manual_seed(0)
    h, w = 10, 12
    a = torch.randn(1, h, w, 2, generator=g) * 0.7
    b = torch.randn(1, h, w, 2, generator=g) * 0.7
    d, valid = fl.compose(a, b)
    p = fl.pixel_grid(h, w)[None]
    q = p + a  # then b sampled there (bilinear, border extended)
    ref, _ = fl.bilinear_sample(b.permute(0, 3, 1, 2), q, padding="border")
    assert torch.allclose(d, a + ref.permute(0, 2, 3, 1), atol=1e-6)
    assert torch.equal(valid, fl.in_frame(q, h, w))


def test_latent_flow_is_block_mean_over_factor():
    fwd = torch.zeros(2, 16, 16, 2)
    fwd[..., 0] = 8.0
    fwd[:, :8, :8, 1] = 4.0
    lat = VideoFlow(fwd, -fwd).to_latent(8)
    assert lat.size == (2, 2)
    assert torch.allclose(lat.forward[..., 0], torch.ones(2, 2, 2))
    assert lat.forward[0, 0, 0, 1] == 0.5 and lat.forward[0, 1, 1, 1] == 0
    with pytest.raises(FlowError, match="divisible"):
        VideoFlow(torch.zeros(1, 12, 12, 2), torch.zeros(1, 12, 12, 2)).to_latent(8)


def test_torch_warp_matches_the_numpy_warp_and_is_differentiable():
    rng = np.random.default_rng(0)
    frame = rng.random((9, 11, 3)).astype(np.float32)
    flow = rng.normal(0, 1.5, (9, 11, 2)).astype(np.float32)
    ref, mask = fl.warp(frame, flow, return_mask=True)
    x = torch.from_numpy(frame).permute(2, 0, 1)[None].requires_grad_(True)
    out, valid = fl.warp_tensor(x, torch.from_numpy(flow)[None])
    assert torch.equal(valid[0], torch.from_numpy(mask))
    got = out[0].permute(1, 2, 0).detach().numpy()
    np.testing.assert_allclose(got[mask], ref[mask], atol=2e-3)  # cv2.remap's fixed-point weights (1/32 px)
    (out * valid[:, None]).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # exact at integer displacements
    y, _ = fl.warp_tensor(x.detach(), torch.full((1, 9, 11, 2), 1.0))
    assert torch.equal(y[0, :, :-1, :-1], x.detach()[0, :, 1:, 1:])


def test_bad_flows_are_refused_with_the_fix():
    with pytest.raises(FlowError, match=r"\(F-1, H, W, 2\) = \(3, 8, 8, 2\)"):
        fl.check_flow(torch.zeros(3, 8, 9, 2), 4, 8, 8)
    bad = torch.zeros(3, 8, 8, 2)
    bad[1, 2, 2, 0] = float("nan")
    with pytest.raises(FlowError, match=r"NaN or inf values \(pairs \[1\]\)"):
        VideoFlow(bad, torch.zeros(3, 8, 8, 2))
    with pytest.raises(FlowError, match="at least 2 frames"):
        VideoFlow.estimate(np.zeros((1, 8, 8, 3), np.uint8))
    with pytest.raises(FlowError, match="the flow is for 4 frames of 8×8, but the frames are 4 frames of 16×16"):
        VideoFlow.translation(4, 8, 8).check_frames(4, 16, 16)
    with pytest.raises(FlowError, match="raft_weights"):
        fl.optical_flow(np.zeros((2, 8, 8, 3), np.uint8), method="raft")
    with pytest.raises(FlowError, match="is not a file"):
        fl.optical_flow(np.zeros((2, 8, 8, 3), np.uint8), method="raft", raft_weights="/nonexistent/raft.pth")


def test_backward_flow_from_forward_is_exact_for_translations():
    fwd = np.zeros((3, 8, 8, 2), np.float32)
    fwd[..., 0] = -2.0
    vf = VideoFlow.from_forward(fwd)
    assert torch.allclose(vf.backward, torch.from_numpy(-fwd))
