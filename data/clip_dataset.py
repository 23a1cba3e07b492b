"""Datasets of text-captioned video clips for one-clip (or few-clip) fine-tuning.

A source is one of

* a single video file plus a prompt (if no prompt is given, it is looked up in a ``metadata.jsonl``
  beside the video, as for the bundled ``data/samples``);
* a folder with ``metadata.jsonl``: one JSON object per line with ``video`` (path relative to the
  folder), ``prompt`` and optionally ``edit_prompts`` (list of str) and ``flow`` (a ``.npy``
  ground-truth optical flow, see ``data/make_samples.py`` for the convention);
* a folder with ``prompts.txt`` and ``videos.txt``: one prompt / one video path per line, same count.

Clips are decoded once, when the dataset is built, and kept as float tensors ``(C, F, H, W)`` in
``[-1, 1]``.  The dataset length is ``clips x repeats`` so that a single clip can provide N training
steps per epoch; item ``i`` is clip ``i % clips``.
"""

from __future__ import annotations

import copy
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from data.video_io import VideoError, read_video, resize_center_crop, to_tensor
from modules.flow import compose_flows, resize_crop_flow  # the one flow module

try:  # lightning is a hard dependency of the project, but keep ClipDataset importable without it
    import lightning as L

    _DataModuleBase = L.LightningDataModule
except ImportError:  # pragma: no cover
    _DataModuleBase = object

__all__ = ["DATA_DIR", "SAMPLES_DIR", "Clip", "ClipDataset", "ClipDataModule", "load_clips", "resolve_path"]

DATA_DIR = Path(__file__).resolve().parent
SAMPLES_DIR = DATA_DIR / "samples"
METADATA = "metadata.jsonl"
PROMPTS_TXT, VIDEOS_TXT = "prompts.txt", "videos.txt"


@dataclass
class Clip:
    """One captioned clip of a dataset (paths are resolved)."""

    video: Path
    prompt: str
    edit_prompts: list[str] = field(default_factory=list)
    flow: Path | None = None
    origin: str = ""  # where the record came from, for error messages


# --------------------------------------------------------------------------------------------------
# finding files and reading manifests
# --------------------------------------------------------------------------------------------------


def resolve_path(video: str | Path) -> Path:
    """Resolve a video file or dataset folder.

    Tried in order: the path as given (relative to the current directory), inside the ``data/``
    package folder (so ``samples/pan_astronaut.mp4`` finds the bundled sample wherever you run
    from), and inside ``data/samples/`` (so a bare sample name like ``pan_astronaut.mp4`` works).
    """
    p = Path(video).expanduser()
    candidates = [p] if p.is_absolute() else [p, DATA_DIR / p, SAMPLES_DIR / p]
    for c in candidates:
        if c.exists():
            return c
    samples = sorted(x.name for x in SAMPLES_DIR.glob("*.mp4")) if SAMPLES_DIR.is_dir() else []
    tried = ", ".join(f"'{c}'" for c in candidates)
    raise VideoError(
        f"video not found: '{video}' (tried {tried}); give a path relative to the current directory, "
        f"an absolute path, or a bundled sample such as 'samples/{samples[0] if samples else 'pan_astronaut.mp4'}'"
        + (f" (available: {', '.join(samples)})" if samples else "")
    )


def _resolve_in(folder: Path, name: str) -> Path:
    p = Path(name).expanduser()
    return p if p.is_absolute() else folder / p


def _read_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: a byte-order mark is not part of the first entry
    except UnicodeDecodeError as err:
        raise ValueError(f"cannot read '{path}': not UTF-8 text ({err}); save it as UTF-8, one entry per line") from None
    except OSError as err:
        raise ValueError(f"cannot read '{path}': {err}; check that the file exists and is readable") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def _read_metadata(path: Path) -> list[Clip]:
    folder = path.parent
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()  # tolerate a byte-order mark
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read '{path}': {err}; it must be UTF-8 JSON lines") from None
    clips = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{where}: invalid JSON ({err.msg}); each line must be an object like "
                '{"video": "clip.mp4", "prompt": "a photo of a cat"}'
            ) from None
        if not isinstance(rec, dict):
            raise ValueError(f"{where}: expected a JSON object with fields 'video' and 'prompt', got {type(rec).__name__}")
        for key in ("video", "prompt"):
            if not isinstance(rec.get(key), str) or not rec[key].strip():
                raise ValueError(
                    f"{where}: missing or empty field '{key}' (a string); every line needs "
                    '"video" (path relative to the folder) and "prompt"'
                )
        edits = rec.get("edit_prompts") or []
        if isinstance(edits, str):
            edits = [edits]
        if not isinstance(edits, list) or not all(isinstance(e, str) for e in edits):
            raise ValueError(f"{where}: field 'edit_prompts' must be a list of strings, got {edits!r}")
        flow = rec.get("flow")
        if flow is not None and not isinstance(flow, str):
            raise ValueError(f"{where}: field 'flow' must be a path string, got {flow!r}")
        clips.append(
            Clip(
                video=_resolve_in(folder, rec["video"]),
                prompt=rec["prompt"],
                edit_prompts=list(edits),
                flow=_resolve_in(folder, flow) if flow else None,
                origin=where,
            )
        )
    if not clips:
        raise ValueError(f"'{path}' lists no clips; add lines like " '{"video": "clip.mp4", "prompt": "..."}')
    return clips


def _read_txt_pair(folder: Path) -> list[Clip]:
    ppath, vpath = folder / PROMPTS_TXT, folder / VIDEOS_TXT
    prompts, videos = _read_lines(ppath), _read_lines(vpath)
    if len(prompts) != len(videos):
        raise ValueError(
            f"'{ppath}' has {len(prompts)} prompts but '{vpath}' has {len(videos)} videos; "
            f"they must have one entry per line and the same number of lines"
        )
    if not prompts:
        raise ValueError(f"'{ppath}' and '{vpath}' are empty; add one prompt / one video path per line")
    return [
        Clip(video=_resolve_in(folder, v), prompt=p, origin=f"{vpath}:{i + 1}")
        for i, (p, v) in enumerate(zip(prompts, videos))
    ]


def _read_folder(folder: Path) -> list[Clip]:
    if (folder / METADATA).is_file():
        return _read_metadata(folder / METADATA)
    has_p, has_v = (folder / PROMPTS_TXT).exists(), (folder / VIDEOS_TXT).exists()
    if has_p or has_v:
        return _read_txt_pair(folder)
    raise ValueError(
        f"folder '{folder}' has no '{METADATA}' and no '{PROMPTS_TXT}' + '{VIDEOS_TXT}'; add a "
        f"metadata.jsonl (one {{\"video\": ..., \"prompt\": ...}} per line) or pass a single video file"
    )


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def load_clips(source: str | Path, prompt: str | None = None) -> list[Clip]:
    """Parse a source (video file or folder, see module docstring) into ``Clip`` records.

    Validates the manifests and that every video file exists; does not decode anything.
    """
    path = resolve_path(source)
    if path.is_dir():
        if prompt is not None:
            raise ValueError(
                f"prompt={prompt!r} was given with the folder '{path}', whose prompts come from its "
                f"manifest ({METADATA} or {PROMPTS_TXT}); unset it (on the command line: "
                f"--data.init_args.prompt null) or pass a single video file to set the prompt"
            )
        clips = _read_folder(path)
    else:
        clips = None
        meta = path.parent / METADATA
        if meta.is_file():  # a video listed in a metadata.jsonl beside it (e.g. the bundled samples)
            try:
                found = [c for c in _read_metadata(meta) if _same_file(c.video, path)]
            except ValueError as err:
                if prompt is None or not str(prompt).strip():
                    raise
                # the prompt is given, so the manifest is optional (it only adds flow / edit prompts)
                warnings.warn(f"ignoring '{meta}' beside '{path}': {err} (the given prompt is used; fix the "
                              f"file to use its flow and edit prompts)", UserWarning, stacklevel=2)
                found = []
            if found:
                clips = [found[0]]
                if prompt is not None:
                    clips[0].prompt = prompt
        if clips is None:
            if prompt is None or not str(prompt).strip():
                raise ValueError(
                    f"no prompt for video '{path}': pass `prompt` (data.prompt in a YAML config) or "
                    f"list the video in a {METADATA} beside it"
                )
            clips = [Clip(video=path, prompt=str(prompt), origin="argument")]
    for c in clips:
        if not c.video.is_file():
            raise VideoError(
                f"video file not found: '{c.video}' (listed at {c.origin}); fix the path "
                f"(relative paths are resolved against the manifest's folder)"
            )
    return clips


# --------------------------------------------------------------------------------------------------
# dataset
# --------------------------------------------------------------------------------------------------


class ClipDataset(Dataset):
    """Captioned video clips decoded once and cached as ``(C, F, H, W)`` tensors in [-1, 1].

    Args:
        source: a video file, or a folder with ``metadata.jsonl`` or ``prompts.txt`` + ``videos.txt``
            (see the module docstring).  Bundled samples resolve too (``samples/pan_astronaut.mp4``).
        prompt: the caption of a single video (optional if a ``metadata.jsonl`` beside it lists it).
        num_frames: frames per clip (``None``: all frames from ``start``).
        stride: take every ``stride``-th frame.
        start: index of the first frame.
        height, width: output size (resize so the short side fits, then centre crop); ``None`` keeps
            the native size.
        repeats: the dataset length is ``clips * repeats`` (steps per epoch of one-clip fine-tuning).

    Items are dicts ``{"pixel_values": (C, F, H, W) float32, "prompt": str, "video": str,
    "index": int}`` where ``index`` is the clip index (``item % clips``).
    """

    def __init__(
        self,
        source: str | Path,
        prompt: str | None = None,
        num_frames: int | None = None,
        stride: int = 1,
        start: int = 0,
        height: int | None = None,
        width: int | None = None,
        repeats: int = 1,
    ) -> None:
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        if (height is None) != (width is None):
            raise ValueError(f"give both height and width or neither, got height={height}, width={width}")
        if height is not None and (height < 1 or width < 1):
            raise ValueError(f"height and width must be >= 1, got {height}x{width}")
        self.source = str(source)
        self.num_frames, self.stride, self.start = num_frames, stride, start
        self.height, self.width = height, width
        self.repeats = int(repeats)
        self.clips: list[Clip] = load_clips(source, prompt)
        self._pixels: list[torch.Tensor] = []
        for clip in self.clips:
            frames = read_video(clip.video, num_frames=num_frames, stride=stride, start=start)
            if height is not None:
                frames = resize_center_crop(frames, height, width)
            self._pixels.append(to_tensor(frames))
        self._flows: dict[int, np.ndarray | None] = {}

    # -- convenience -------------------------------------------------------------------------------
    @property
    def prompts(self) -> list[str]:
        return [c.prompt for c in self.clips]

    @property
    def edit_prompts(self) -> list[str]:
        """Edit prompts of all clips (metadata ``edit_prompts``), de-duplicated, in order."""
        return list(dict.fromkeys(e for c in self.clips for e in c.edit_prompts))

    @property
    def num_clips(self) -> int:
        return len(self.clips)

    def with_repeats(self, repeats: int) -> "ClipDataset":
        """A view of this dataset with another ``repeats`` that shares the decoded tensors."""
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        view = copy.copy(self)
        view.repeats = int(repeats)
        return view

    def frames(self, index: int = 0) -> torch.Tensor:
        """The cached ``(C, F, H, W)`` tensor of clip ``index`` (not a copy: do not modify it)."""
        return self._pixels[index]

    def flow(self, index: int = 0) -> np.ndarray | None:
        """Ground-truth flow of clip ``index`` matching the loaded frames, or ``None`` if it has none.

        float32 ``(F - 1, H, W, 2)`` in pixels of the loaded size (``prev(y, x) ≈ next(y + dy, x + dx)``):
        the file's flow with the same frame selection (flows composed when ``stride > 1``) and the
        same resize/crop (vectors scaled).
        """
        if index not in self._flows:
            clip = self.clips[index]
            if clip.flow is None:
                self._flows[index] = None
            else:
                try:
                    raw = np.load(clip.flow).astype(np.float32)
                except (OSError, ValueError) as err:
                    raise ValueError(f"cannot load flow '{clip.flow}' (listed at {clip.origin}): {err}") from None
                n = self._pixels[index].shape[1]
                need = self.start + (n - 1) * self.stride
                if raw.ndim != 4 or raw.shape[-1] != 2 or raw.shape[0] < need:
                    raise ValueError(
                        f"flow '{clip.flow}' has shape {raw.shape}; expected (F-1, H, W, 2) with "
                        f"F-1 >= {need} for start={self.start}, stride={self.stride}, {n} frames"
                    )
                flows = [
                    compose_flows(raw[self.start + k * self.stride : self.start + (k + 1) * self.stride])
                    for k in range(n - 1)
                ]
                flows = np.stack(flows) if flows else np.zeros((0,) + raw.shape[1:], np.float32)
                if self.height is not None:
                    flows = resize_crop_flow(flows, self.height, self.width)
                self._flows[index] = flows
        return self._flows[index]

    # -- Dataset API -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.clips) * self.repeats

    def __getitem__(self, item: int) -> dict:
        if not -len(self) <= item < len(self):
            raise IndexError(f"index {item} out of range for a dataset of length {len(self)}")
        index = item % len(self.clips)
        clip = self.clips[index]
        return {"pixel_values": self._pixels[index], "prompt": clip.prompt, "video": str(clip.video), "index": index}

    def __repr__(self) -> str:
        shape = tuple(self._pixels[0].shape) if self._pixels else None
        return (
            f"ClipDataset(source={self.source!r}, clips={len(self.clips)}, repeats={self.repeats}, "
            f"pixel_values={shape})"
        )


# --------------------------------------------------------------------------------------------------
# Lightning data module
# --------------------------------------------------------------------------------------------------


class ClipDataModule(_DataModuleBase):
    """Lightning data module for one-clip (or few-clip) text-driven video fine-tuning.

    Args:
        video: a video file, or a folder with ``metadata.jsonl`` or ``prompts.txt`` + ``videos.txt``.
            Relative paths are tried against the current directory, then inside the ``data/``
            package folder, so the bundled samples work as ``samples/pan_astronaut.mp4``.
        prompt: caption of a single video; optional when a ``metadata.jsonl`` beside it lists it.
        num_frames: frames per clip.
        stride: take every ``stride``-th frame.
        start: index of the first frame.
        height: frame height after resize + centre crop.
        width: frame width after resize + centre crop.
        steps_per_epoch: training batches per epoch; the clips are repeated
            ``ceil(steps_per_epoch * batch_size / clips)`` times.
        batch_size: clips per batch.
        num_workers: DataLoader worker processes (0 = load in the main process; the clips are
            cached tensors, so workers rarely help).
        edit_prompts: prompts used to edit the clip at validation/prediction; defaults to the
            ``edit_prompts`` of the metadata.

    Attributes:
        clips: the parsed ``Clip`` records; ``prompt``: the first clip's prompt; ``edit_prompts``:
        list of edit prompts; ``dataset``: the decoded ``ClipDataset`` (built on first use).
    """

    def __init__(
        self,
        video: str,
        prompt: str | None = None,
        num_frames: int = 8,
        stride: int = 1,
        start: int = 0,
        height: int = 32,
        width: int = 32,
        steps_per_epoch: int = 100,
        batch_size: int = 1,
        num_workers: int = 0,
        edit_prompts: list[str] | None = None,
    ) -> None:
        super().__init__()
        for name, value, low in [
            ("num_frames", num_frames, 1),
            ("stride", stride, 1),
            ("start", start, 0),
            ("height", height, 1),
            ("width", width, 1),
            ("steps_per_epoch", steps_per_epoch, 1),
            ("batch_size", batch_size, 1),
            ("num_workers", num_workers, 0),
        ]:
            if not isinstance(value, int) or value < low:
                raise ValueError(f"ClipDataModule: `{name}` must be an integer >= {low}, got {value!r} (data.{name})")
        if hasattr(self, "save_hyperparameters"):
            self.save_hyperparameters()
        self.video, self.num_frames, self.stride, self.start = video, num_frames, stride, start
        self.height, self.width = height, width
        self.steps_per_epoch, self.batch_size, self.num_workers = steps_per_epoch, batch_size, num_workers
        self._prompt_arg = prompt
        self.clips: list[Clip] = load_clips(video, prompt)  # validate early (cheap, no decoding)
        self.prompt: str = self.clips[0].prompt
        if edit_prompts:
            self.edit_prompts: list[str] = list(edit_prompts)
        else:
            self.edit_prompts = list(dict.fromkeys(e for c in self.clips for e in c.edit_prompts))
        self._dataset: ClipDataset | None = None

    @property
    def dataset(self) -> ClipDataset:
        """The decoded clips (repeats=1), built once and shared by all dataloaders."""
        if self._dataset is None:
            self._dataset = ClipDataset(
                self.video,
                prompt=self._prompt_arg,
                num_frames=self.num_frames,
                stride=self.stride,
                start=self.start,
                height=self.height,
                width=self.width,
                repeats=1,
            )
        return self._dataset

    @property
    def repeats(self) -> int:
        return max(1, math.ceil(self.steps_per_epoch * self.batch_size / len(self.clips)))

    def setup(self, stage: str | None = None) -> None:
        self.check_frame_size()  # before decoding or any training
        self.dataset  # noqa: B018  (decode once)

    def check_frame_size(self, module=None) -> None:
        """Refuse a clip size the model cannot encode, denoise and decode back to the same size (the
        model family's rule, with the nearest valid sizes). The model is `module` or the trainer's
        LightningModule; its `parts` are the loaded `ModelSpec`."""
        from modules.models.spec import ModelSpec

        if module is None:
            trainer = getattr(self, "trainer", None)
            module = trainer.lightning_module if trainer is not None else None
        spec = getattr(module, "parts", None)
        if isinstance(spec, ModelSpec):
            spec.check_video_size(self.num_frames, self.height, self.width,
                                  where=f"data.init_args.height/width ({self.height}×{self.width}) for model "
                                        f"'{spec.model_id}'")

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.dataset.with_repeats(self.repeats), shuffle=len(self.clips) > 1)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.dataset, shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.dataset, shuffle=False)
