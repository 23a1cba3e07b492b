"""The training base: noise streams keyed on the training iteration (not global_step, which two
optimisers advance twice), exact resume under manual optimisation, gradient clipping as a module
setting there too, and extra_loss seeing the prediction."""
import lightning as L
import torch
from torch.utils.data import DataLoader

from modules.models.spec import load_model
from modules.training import TrainingModule


class Clips(torch.utils.data.Dataset):
    def __init__(self, n):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(0)
        return {"pixel_values": torch.rand(3, 2, 32, 32, generator=g) * 2 - 1, "prompt": "a photo of a cat"}


class TwoOptimisers(TrainingModule):
    """Manual optimisation with two optimisers per iteration (MotionDirector's shape)."""

    def __init__(self, grad_clip=1.0, lr=1e-2):
        super().__init__(seed=3, grad_clip=grad_clip)
        self.automatic_optimization = False
        self.spec = load_model("tiny-sd")
        self.unet = self.spec.network
        self.unet.conv_in.requires_grad_(True)
        self.unet.conv_out.requires_grad_(True)
        self.lr = lr
        self.noise_log, self.extra_seen = [], []

    def configure_optimizers(self):
        return (torch.optim.SGD(self.unet.conv_in.parameters(), lr=self.lr),
                torch.optim.SGD(self.unet.conv_out.parameters(), lr=self.lr))

    def extra_loss(self, batch, aux):
        self.extra_seen.append(aux)
        return {"x0_energy": 1e-3 * aux.pred.x0.float().pow(2).mean()}

    def training_step(self, batch, batch_idx):
        opt_a, opt_b = self.optimizers()
        z0 = self.spec.encode(batch["pixel_values"])
        cond = self.spec.encode_prompt(list(batch["prompt"]))
        loss, aux = self.diffusion_loss(z0, cond)
        self.noise_log.append(aux.noise.clone())
        loss = loss + sum(self.extra_loss(batch, aux).values())
        self.clip_and_step(opt_a, loss)
        loss_b, _ = self.diffusion_loss(z0, cond)
        self.clip_and_step(opt_b, loss_b)


def fit(module, root, steps, ckpt=None, callbacks=()):
    trainer = L.Trainer(default_root_dir=root, max_steps=steps, accelerator="cpu", logger=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=list(callbacks),
                        enable_checkpointing=bool(callbacks))
    trainer.fit(module, DataLoader(Clips(100), batch_size=1), ckpt_path=ckpt)
    return trainer


def test_noise_is_keyed_on_iterations_and_resumes_exactly_with_two_optimisers(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    full = TwoOptimisers()
    trainer = fit(full, tmp_path / "a", 8)  # global_step counts optimizer steps: 2 per iteration
    assert trainer.global_step == 8 and full.train_iteration == 4 and len(full.noise_log) == 4
    assert not torch.equal(full.noise_log[0], full.noise_log[1])

    first = TwoOptimisers()
    ck = ModelCheckpoint(dirpath=tmp_path / "ck", every_n_train_steps=4, save_top_k=-1)
    fit(first, tmp_path / "b", 4, callbacks=[ck])
    path = sorted((tmp_path / "ck").glob("*.ckpt"))[-1]
    resumed = TwoOptimisers()
    torch.manual_seed(999)  # the global RNG must not matter
    fit(resumed, tmp_path / "c", 8, ckpt=str(path))
    assert resumed.train_iteration == 4
    assert all(torch.equal(a, b) for a, b in zip(resumed.noise_log, full.noise_log[2:]))
    w_full, w_res = full.unet.conv_out.weight, resumed.unet.conv_out.weight
    assert torch.allclose(w_full, w_res, rtol=1e-4, atol=1e-5)  # same updates (to float rounding)


def test_named_streams_are_independent_and_repeatable():
    m = TwoOptimisers()
    a = torch.randn(4, generator=m.generator("noise"))
    assert torch.equal(a, torch.randn(4, generator=m.generator("noise")))
    assert not torch.equal(a, torch.randn(4, generator=m.generator("spatial_frame")))
    m.train_iteration += 1
    assert not torch.equal(a, torch.randn(4, generator=m.generator("noise")))


def test_grad_clip_is_a_module_setting_under_manual_optimisation(tmp_path):
    clipped, free = TwoOptimisers(grad_clip=1e-4, lr=1.0), TwoOptimisers(grad_clip=None, lr=1.0)
    w0 = clipped.unet.conv_in.weight.detach().clone()
    fit(clipped, tmp_path / "a", 2)
    fit(free, tmp_path / "b", 2)
    step_clipped = (clipped.unet.conv_in.weight - w0).norm()
    step_free = (free.unet.conv_in.weight - w0).norm()
    assert step_clipped <= 1.0 * (1e-4 * 1.001) + 1e-7  # SGD lr 1: the update is the clipped gradient
    assert step_free > 10 * step_clipped


def test_extra_loss_sees_the_prediction_with_its_graph(tmp_path):
    m = TwoOptimisers()
    fit(m, tmp_path, 2)
    aux = m.extra_seen[0]
    assert aux.pred.x0.shape == aux.z0.shape == aux.zt.shape and aux.t.shape == (1,)
    # ε-prediction: the target is the noise, and x̂0 / ε̂ of the prediction tie back to z_t
    assert torch.equal(aux.target, aux.noise)
    a = m.spec.scheduler.alphas_cumprod[aux.t].double().view(-1, 1, 1, 1, 1)
    recon = a.sqrt() * aux.pred.x0.double() + (1 - a).sqrt() * aux.pred.eps.double()
    assert torch.allclose(recon, aux.zt.double(), atol=1e-4)
    assert aux.output.grad_fn is not None  # gradients reach the network through the prediction
