"""Checkpoints never run code when read (export script and Lightning's resume), the export script loads
strictly and keeps a run's export, and exports are written as one unit with their training step."""
import contextlib
import importlib.util
import json
import os
import warnings
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader

from modules.callbacks.checkpoint_io import AtomicCheckpointIO, UnsafeCheckpointError, load_checkpoint_file
from modules.callbacks.export import ExportAdapter
from modules.editing import EditConfig
from modules.save import SAVEModule

ROOT = Path(__file__).resolve().parents[1]


class ClipRepeat(torch.utils.data.Dataset):
    def __init__(self, pixels, n):
        self.pixels, self.n = pixels[0], n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"pixel_values": self.pixels.clone(), "prompt": "a photo of an astronaut", "index": 0}


def export_script():
    spec = importlib.util.spec_from_file_location("export_script", ROOT / "scripts" / "export.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class CreatesFile:
    """Unpickling this opens (creates) `path`: what a malicious checkpoint would do, without a shell."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def trainer(root, steps, epochs=1, **kw):
    return L.Trainer(accelerator="cpu", max_steps=steps, max_epochs=epochs, logger=False, enable_progress_bar=False,
                     enable_model_summary=False, default_root_dir=str(root), limit_val_batches=0,
                     num_sanity_val_steps=0, plugins=[AtomicCheckpointIO()], **kw)


@pytest.fixture(scope="module")
def run(tmp_path_factory, sample_clip):
    """A 2-step SAVE run built in Python (hyper-parameters hold an EditConfig dataclass): checkpoints/last.ckpt
    (step 2) and the end-of-training export/."""
    root = tmp_path_factory.mktemp("run")
    torch.manual_seed(0)
    module = SAVEModule(lr_delta=5e-2, edit=EditConfig(num_inference_steps=2))
    ck = ModelCheckpoint(dirpath=root / "checkpoints", save_last=True, every_n_train_steps=1)
    trainer(root, 2, callbacks=[ck, ExportAdapter()]).fit(module, DataLoader(ClipRepeat(sample_clip, 2), batch_size=1))
    return root


def crafted(tmp_path, run):
    """The run's real checkpoint with one hyper-parameter whose pickle creates a file when loaded."""
    marker = tmp_path / "pwned"
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)  # our own file
    ckpt["hyper_parameters"]["edit"] = CreatesFile(marker)
    path = tmp_path / "evil.ckpt"
    torch.save(ckpt, path)
    with contextlib.suppress(Exception):  # the file really is malicious: an unrestricted load runs it
        torch.load(path, weights_only=False).get("hyper_parameters", {}).get("edit").close()
    assert marker.exists()
    marker.unlink()
    return path, marker


def test_export_script_refuses_a_checkpoint_that_would_run_code(tmp_path, run, capsys):
    path, marker = crafted(tmp_path, run)
    with pytest.raises(SystemExit) as e:
        export_script().main([str(path), "--out", str(tmp_path / "export")])
    assert not marker.exists(), "unpickling the checkpoint ran code"
    msg = str(e.value.code)
    assert "refusing to load" in msg and str(path) in msg and "could run code" in msg
    assert "it names io.open" in msg  # what the pickle asked for
    assert not (tmp_path / "export").exists()


def test_resume_refuses_a_checkpoint_that_would_run_code(tmp_path, run, sample_clip, monkeypatch):
    """Lightning's resume reads through AtomicCheckpointIO.load_checkpoint: weights_only is passed explicitly,
    so even TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD (which flips torch.load's default) cannot make it unpickle code."""
    path, marker = crafted(tmp_path, run)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(UnsafeCheckpointError, match="refusing to load .*evil.ckpt.*could run code"):
        trainer(tmp_path / "b", 3).fit(SAVEModule(), DataLoader(ClipRepeat(sample_clip, 3), batch_size=1),
                                       ckpt_path=path)
    assert not marker.exists(), "unpickling the checkpoint ran code"


def test_project_checkpoints_load_weights_only_and_resume(tmp_path, run, sample_clip):
    """A checkpoint of a module built in Python holds an EditConfig: allowed by name (and nothing else)."""
    ckpt = load_checkpoint_file(run / "checkpoints" / "last.ckpt")
    assert isinstance(ckpt["hyper_parameters"]["edit"], EditConfig) and ckpt["global_step"] == 2
    steps = []

    class Steps(L.Callback):
        def on_train_batch_end(self, trainer, *a):
            steps.append(trainer.global_step)

    trainer(tmp_path / "b", 3, epochs=3, callbacks=[Steps()]).fit(
        SAVEModule(lr_delta=5e-2, edit=EditConfig(num_inference_steps=2)),
        DataLoader(ClipRepeat(sample_clip, 3), batch_size=1), ckpt_path=run / "checkpoints" / "last.ckpt")
    assert steps == [3]
    with pytest.raises(UnsafeCheckpointError, match="not a Lightning checkpoint"):
        torch.save([torch.zeros(2)], tmp_path / "list.ckpt")
        load_checkpoint_file(tmp_path / "list.ckpt")


def cli_style(ckpt_path, tmp_path):
    """The same checkpoint as LightningCLI writes it: hyper-parameters as parsed config values."""
    ckpt = torch.load(ckpt_path, weights_only=False)
    hp = dict(ckpt["hyper_parameters"])
    hp["edit"] = dict(vars(hp["edit"]))
    ckpt["hyper_parameters"] = {"_class_path": "modules.save.SAVEModule", **hp,
                                "_instantiator": "lightning.pytorch.cli.instantiate_module"}
    run = tmp_path / "cli-run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save(ckpt, run / "checkpoints" / "last.ckpt")
    return run


@pytest.mark.parametrize("style", ["python", "cli"])
def test_export_script_loads_strictly_and_keeps_the_runs_export(tmp_path, run, style, capfd):
    src = run if style == "python" else cli_style(run / "checkpoints" / "last.ckpt", tmp_path)
    ckpt_path = src / "checkpoints" / "last.ckpt"
    script = export_script()
    if style == "python":
        before = {p.name: p.read_bytes() for p in (run / "export").iterdir()}
        with pytest.raises(SystemExit) as e:  # no --out: the run's own export is kept
            script.main([str(ckpt_path)])
        assert "already holds an export" in str(e.value.code) and "--overwrite" in str(e.value.code)
        assert {p.name: p.read_bytes() for p in (run / "export").iterdir()} == before
    out = tmp_path / f"export-{style}"
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        script.main([str(ckpt_path), "--out", str(out)])
    printed = capfd.readouterr()
    assert not [w for w in caught if "missing" in str(w.message).lower() or "keys" in str(w.message).lower()]
    assert "missing" not in (printed.out + printed.err).lower() and len(printed.err) < 2000
    meta = json.loads((out / "export.json").read_text())
    assert meta["step"] == 2 and meta["adapter"] == "spectral"
    if style == "python":  # same tensors as the export training wrote at step 2
        from safetensors.torch import load_file

        a, b = load_file(out / "spectral_shifts.safetensors"), load_file(run / "export" / "spectral_shifts.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        assert json.loads((run / "export" / "export.json").read_text())["step"] == 2
    else:  # --overwrite replaces the run's export
        (src / "export").mkdir()
        (src / "export" / "export.json").write_text("{}")
        script.main([str(ckpt_path), "--overwrite"])
        assert json.loads((src / "export" / "export.json").read_text())["step"] == 2


def test_export_is_written_as_one_unit(tmp_path, monkeypatch):
    """A crash while writing a new export leaves the previous one complete and untouched."""
    import modules.adapters.export as export

    module = SAVEModule()  # temporal: full, so two safetensors files
    out = module.export(tmp_path / "export", step=5)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert {"spectral_shifts.safetensors", "temporal_attention.safetensors", "export.json"} <= set(before)
    with torch.no_grad():
        for p in module.parameters():
            if p.requires_grad:
                p.add_(0.5)
    real, calls = export.save_file, []

    def crash_on_second(tensors, path, metadata=None):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(tensors, path, metadata=metadata)

    monkeypatch.setattr(export, "save_file", crash_on_second)
    with pytest.raises(OSError, match="disk full"):
        module.export(out, step=9)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert json.loads((out / "export.json").read_text())["step"] == 5
    assert [p.name for p in tmp_path.iterdir()] == ["export"]  # no temporary left behind
    monkeypatch.setattr(export, "save_file", real)
    module.export(out, step=9)  # on Linux: swapped in with renameat2(RENAME_EXCHANGE)
    assert json.loads((out / "export.json").read_text())["step"] == 9
    assert [p.name for p in tmp_path.iterdir()] == ["export"]
    import modules.io_utils as io_utils

    monkeypatch.setattr(io_utils, "_exchange", lambda a, b: False)  # elsewhere: old aside, new in, old removed
    module.export(out, step=11)
    assert json.loads((out / "export.json").read_text())["step"] == 11
    assert [p.name for p in tmp_path.iterdir()] == ["export"]
    # a folder that is not an export is never replaced
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "todo.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not an export"):
        module.export(tmp_path / "notes")
    assert (tmp_path / "notes" / "todo.txt").read_text() == "keep me"


def test_atomic_write_leaves_the_old_file_on_failure(tmp_path):
    from modules.io_utils import atomic_write

    target = tmp_path / "a.bin"
    atomic_write(target, lambda p: p.write_bytes(b"old"))

    def fail(p):
        p.write_bytes(b"half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        atomic_write(target, fail)
    assert target.read_bytes() == b"old" and os.listdir(tmp_path) == ["a.bin"]
    assert (target.stat().st_mode & 0o777) == 0o666 & ~_umask()


def _umask():
    m = os.umask(0)
    os.umask(m)
    return m
