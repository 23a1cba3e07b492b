"""Model families behind one contract: a `ModelSpec` per family, a registry, and `load_model`.

A spec hides everything family-specific, so methods and the sampling loop never branch on a family:

- `load(path, dtype)`: every part from a local diffusers-layout folder (nothing reaches a hub), all
  frozen; the scheduler is the class named in `scheduler/scheduler_config.json`, never re-typed;
- `encode_prompt(prompts)`: a `Conditioning` (one CLIP for `sd`/`unet3d`; SDXL's two encoders,
  pooled embedding and time ids; T5 for CogVideoX), cached per prompt when no gradient is needed;
- `encode` / `decode`: pixels `(B, 3, F, H, W)` in [-1, 1] <-> latents `(B, C, F', h, w)`
  (scaled by the VAE's scaling factor; the identity for pixel-space models);
- `spec(z, t, cond)`: the denoiser in that one canonical layout (permutes, rotary embeddings and
  added conditions inside), differentiable in `z`;
- `check_video_size`, `latent_shape`, `token_grid`, `checksum`, `download_hint`.

The family of a folder comes from `model_index.json`'s `_class_name` (the diffusers pipeline), else
from the denoiser's config (`unet/config.json` or `transformer/config.json`).
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import ClassVar

import diffusers
import torch
from diffusers import SchedulerMixin
from torch import nn
from transformers import AutoTokenizer

from modules.conditioning import Conditioning
from modules.models import tiny
from modules.models.loading import REPO_ROOT, ModelNotFoundError, tensor_checksum


class ModelFamilyError(ValueError):
    """A folder of one family loaded as another, or a folder whose family cannot be told."""


class VideoSizeError(ValueError):
    """A frame count or spatial size the family's VAE / patching cannot take."""


class ConditioningError(ValueError):
    """A denoiser call without the conditioning entries its family needs."""


FAMILIES: dict[str, type["ModelSpec"]] = {}


def register_family(cls: type["ModelSpec"]) -> type["ModelSpec"]:
    FAMILIES[cls.family] = cls
    return cls


# -- folder inspection -------------------------------------------------------------------------
def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ModelFamilyError(f"{path} is not valid JSON ({e}); re-download the model folder.") from e


def model_index(path: Path) -> dict:
    f = Path(path) / "model_index.json"
    return read_json(f) if f.is_file() else {}


def family_of_denoiser(path: Path) -> tuple[str, str] | None:
    """(family, reason) from the denoiser's config, or None when there is no readable config."""
    path = Path(path)
    unet_cfg = path / "unet" / "config.json"
    if unet_cfg.is_file():
        cfg = read_json(unet_cfg)
        name = cfg.get("_class_name", "UNet2DConditionModel")
        if name == "UNet3DConditionModel":
            return "unet3d", f"{unet_cfg} has _class_name {name}"
        if name == "UNet2DConditionModel":
            if cfg.get("addition_embed_type") == "text_time":
                return "sdxl", f"{unet_cfg} has addition_embed_type 'text_time' (SDXL's added conditions)"
            return "sd", f"{unet_cfg} has _class_name {name}"
        return None
    tr_cfg = path / "transformer" / "config.json"
    if tr_cfg.is_file():
        name = read_json(tr_cfg).get("_class_name")
        if name == "CogVideoXTransformer3DModel":
            return "cogvideox", f"{tr_cfg} has _class_name {name}"
    return None


def detect_family(path: Path) -> tuple[str, str] | None:
    """(family, where it was read) for a model folder; None if nothing identifies it.

    Raises ModelFamilyError when `model_index.json` names a pipeline no family handles."""
    path = Path(path)
    name = model_index(path).get("_class_name")
    if name:
        for fam, cls in FAMILIES.items():
            if name in cls.pipelines:
                return fam, f"{path / 'model_index.json'} has _class_name {name}"
        supported = "; ".join(f"{f}: {', '.join(c.pipelines)}" for f, c in FAMILIES.items())
        raise ModelFamilyError(
            f"{path / 'model_index.json'}: _class_name {name!r} is not a supported model family "
            f"(supported pipelines — {supported})."
        )
    return family_of_denoiser(path)


def _has_weights(folder: Path) -> bool:
    return any(folder.glob("*.safetensors")) or any(folder.glob("*.bin")) or any(folder.glob("*.index.json"))


def part_problem(path: Path, part: str) -> str | None:
    """What is missing of one part folder (None when it looks complete)."""
    d = path / part
    if not d.is_dir():
        return f"{part}/"
    if part.startswith("tokenizer"):
        names = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "spiece.model")
        return None if any((d / n).is_file() for n in names) else f"{part}/tokenizer.json (or tokenizer_config.json)"
    if part == "scheduler":
        return None if (d / "scheduler_config.json").is_file() else f"{part}/scheduler_config.json"
    missing = []
    if not (d / "config.json").is_file():
        missing.append(f"{part}/config.json")
    if not _has_weights(d):
        missing.append(f"{part}/ weights (*.safetensors)")
    return ", ".join(missing) or None


def load_scheduler(folder: Path) -> SchedulerMixin:
    """The scheduler class named in `scheduler_config.json`, with its whole config."""
    cfg_file = Path(folder) / "scheduler_config.json"
    cfg = read_json(cfg_file)
    name = cfg.get("_class_name")
    cls = getattr(diffusers, name, None) if isinstance(name, str) else None
    if not (isinstance(cls, type) and issubclass(cls, SchedulerMixin)):
        raise ModelFamilyError(
            f"{cfg_file}: _class_name {name!r} is not a diffusers scheduler class; set it to the scheduler "
            "the model was trained with (e.g. DDIMScheduler, EulerDiscreteScheduler, CogVideoXDDIMScheduler)."
        )
    return cls.from_pretrained(folder)


def load_tokenizer(folder: Path):
    """`AutoTokenizer` from a part folder; a SentencePiece-only folder (T5's `spiece.model`, no
    `tokenizer.json`) without the `sentencepiece` package is a clear error (transformers' own
    error talks about tiktoken)."""
    folder = Path(folder)
    if ((folder / "spiece.model").is_file() and not (folder / "tokenizer.json").is_file()
            and importlib.util.find_spec("sentencepiece") is None):
        raise ImportError(
            f"{folder} holds a SentencePiece tokenizer (spiece.model, no tokenizer.json); reading it needs the "
            "`sentencepiece` package: pip install sentencepiece (or save a tokenizer.json next to it)."
        )
    return AutoTokenizer.from_pretrained(folder)


def nearest_multiples(x: int, m: int) -> list[int]:
    lo = (x // m) * m
    return [v for v in (lo, lo + m) if v >= m]


def _frozen(*modules: nn.Module | None) -> None:
    for m in modules:
        if m is not None:
            m.requires_grad_(False).eval()


def _device_of(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def _dtype_of(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


# -- the contract ------------------------------------------------------------------------------
class ModelSpec:
    """One model family: parts, prompt encoding, codec, denoiser. Subclasses set the class
    variables and implement `_load`, `_encode_prompt`, `_denoise`."""

    family: ClassVar[str]
    pipelines: ClassVar[tuple[str, ...]]  # model_index.json `_class_name`s of this family
    parts: ClassVar[tuple[str, ...]]  # required part folders
    cond_keys: ClassVar[tuple[str, ...]] = ("encoder_hidden_states",)  # required conditioning entries
    optional_cond_keys: ClassVar[tuple[str, ...]] = ("concat_latents",)
    download_hint: ClassVar[str]
    frame_chunk: ClassVar[int] = 8  # frames per VAE call for per-frame VAEs

    def __init__(self, *, path: str | Path, model_id: str, dtype: torch.dtype, scheduler, vae: nn.Module | None,
                 model: nn.Module | None, text_encoders: list[nn.Module], tokenizers: list):
        self.path = str(path)
        self.model_id = model_id
        self.dtype = dtype
        self.scheduler = scheduler
        self.vae = vae
        self._model = model
        self.text_encoders = list(text_encoders)
        self.tokenizers = list(tokenizers)
        self._prompt_cache: dict[tuple, Conditioning] = {}
        self._prompt_cache_state = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(family={self.family!r}, model_id={self.model_id!r}, path={self.path!r})"

    # -- loading -------------------------------------------------------------------------------
    @classmethod
    def detect(cls, path: Path) -> bool:
        try:
            found = detect_family(Path(path))
        except ModelFamilyError:
            return False
        return found is not None and found[0] == cls.family

    @classmethod
    def required_parts(cls, path: Path) -> tuple[str, ...]:
        return cls.parts

    @classmethod
    def check_folder(cls, path: Path) -> None:
        """Refuse a folder of another family, or one with parts missing (naming them and the fix)."""
        path = Path(path)
        found = detect_family(path)
        if found is not None and found[0] != cls.family:
            raise ModelFamilyError(
                f"{path} is a '{found[0]}' model ({found[1]}), not '{cls.family}': load it with "
                f"load_model(..., family='{found[0]}') or without family=, or point to a {cls.family} folder. "
                + cls.download_hint.format(path=path)
            )
        den = family_of_denoiser(path)
        if den is not None and den[0] != cls.family:
            raise ModelFamilyError(
                f"{path}: model_index.json says '{cls.family}' but {den[1]}, a '{den[0]}' denoiser; "
                "fix _class_name in model_index.json or the part folders."
            )
        missing = [p for p in (part_problem(path, part) for part in cls.required_parts(path)) if p]
        if missing:
            raise ModelNotFoundError(
                f"Model folder {path} ({cls.family}) lacks {', '.join(missing)}. " + cls.download_hint.format(path=path)
            )

    @classmethod
    def load(cls, path: Path, dtype: torch.dtype = torch.float32) -> "ModelSpec":
        path = Path(path)
        cls.check_folder(path)
        spec = cls._load(path, dtype)
        _frozen(*spec._parts().values(), *spec.text_encoders)
        return spec

    @classmethod
    def _load(cls, path: Path, dtype: torch.dtype) -> "ModelSpec":
        raise NotImplementedError

    @staticmethod
    def model_id_of(path: Path) -> str:
        return model_index(path).get("_name_or_path") or str(path)

    # -- parts ---------------------------------------------------------------------------------
    @property
    def model(self) -> nn.Module:
        return self._model

    @property
    def network(self) -> nn.Module:
        """The diffusers denoiser itself (`unet` / `transformer`), unwrapped."""
        return self._model

    def _parts(self) -> dict[str, nn.Module]:
        parts = {"model": self.network, "vae": self.vae}
        return {k: v for k, v in parts.items() if v is not None}

    def modules(self) -> dict[str, nn.Module]:
        """Every part, by name (`model`, `vae`, `text_encoder`, `text_encoder_2`): for `.to(device)`
        and for registering in a LightningModule."""
        out = {"model": self.model}
        if self.vae is not None:
            out["vae"] = self.vae
        for i, te in enumerate(self.text_encoders):
            out["text_encoder" if i == 0 else f"text_encoder_{i + 1}"] = te
        return out

    def to(self, device=None, dtype: torch.dtype | None = None) -> "ModelSpec":
        """Move (and with `dtype`, cast) every part; cached prompt embeddings follow on next use."""
        for m in self.modules().values():
            m.to(device=device, dtype=dtype)
        if dtype is not None:
            self.dtype = dtype
        return self

    @property
    def prediction_type(self) -> str:
        return self.scheduler.config.prediction_type

    @property
    def pixel_space(self) -> bool:
        return self.vae is None

    @property
    def vae_scale_factor(self) -> int:
        """Spatial downsampling of the VAE (1 for pixel space)."""
        return 1 if self.vae is None else 2 ** (len(self.vae.config.block_out_channels) - 1)

    # -- prompts -------------------------------------------------------------------------------
    def _encoder_state(self):
        """Changes whenever a text encoder moves or its weights change (in-place updates bump
        `_version`; replaced layers change the parameter set): stale cache entries are dropped."""
        key = []
        for te in self.text_encoders:
            for p in te.parameters():
                key.append((id(p), p._version, p.device, p.dtype))
        return tuple(key)

    def clear_prompt_cache(self) -> None:
        self._prompt_cache.clear()

    def encode_prompt(self, prompts: list[str] | str, grad: bool = False,
                      size: tuple[int, int] | None = None) -> Conditioning:
        """Conditioning for `prompts` (batch = len(prompts)). Without `grad`, each prompt is encoded
        once and cached (a single-prompt request returns the cached object itself). `size`: the
        video's (H, W) in pixels, for families whose conditioning depends on it (SDXL's time ids;
        default: the model's native resolution); other families ignore it."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts:
            raise ValueError("encode_prompt needs at least one prompt")
        if grad:
            with torch.enable_grad():
                return Conditioning(self._encode_prompt(prompts, size))
        state = self._encoder_state()
        if state != self._prompt_cache_state:
            self._prompt_cache.clear()
            self._prompt_cache_state = state
        missing = list(dict.fromkeys(p for p in prompts if (p, size) not in self._prompt_cache))
        if missing:
            with torch.no_grad():
                cond = Conditioning(self._encode_prompt(missing, size)).detach()
            for i, p in enumerate(missing):
                self._prompt_cache[(p, size)] = cond.select(i)
        if len(prompts) == 1:
            return self._prompt_cache[(prompts[0], size)]
        return Conditioning.cat([self._prompt_cache[(p, size)] for p in prompts])

    def _encode_prompt(self, prompts: list[str], size: tuple[int, int] | None) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def unconditional(self, size: tuple[int, int] | None = None) -> Conditioning:
        """The batch-1 conditioning the family's diffusers pipeline uses for classifier-free
        guidance when no negative prompt is given: the empty prompt's (SDXL with
        `force_zeros_for_empty_prompt`: zero text embeddings, as its pipeline does)."""
        return self.encode_prompt([""], size=size)

    # -- codec (per-frame VAE; CogVideoX overrides) --------------------------------------------
    def _scale_latents(self, z: torch.Tensor) -> torch.Tensor:
        shift = self.vae.config.get("shift_factor", None)
        z = z - shift if shift is not None else z
        return z * self.vae.config.scaling_factor

    def _unscale_latents(self, z: torch.Tensor) -> torch.Tensor:
        z = z / self.vae.config.scaling_factor
        shift = self.vae.config.get("shift_factor", None)
        return z + shift if shift is not None else z

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """`(B, 3, F, H, W)` in [-1, 1] -> `(B, C, F', h, w)` (VAE posterior mean × scaling factor)."""
        b, c, f, h, w = pixels.shape
        self.check_video_size(f, h, w, where="encode(pixels)")
        if self.vae is None:
            return pixels
        x = pixels.transpose(1, 2).reshape(b * f, c, h, w).to(_device_of(self.vae), self.vae.dtype)
        z = torch.cat([self.vae.encode(x[i:i + self.frame_chunk]).latent_dist.mean
                       for i in range(0, b * f, self.frame_chunk)])
        z = self._scale_latents(z)
        return z.reshape(b, f, *z.shape[1:]).transpose(1, 2)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Inverse of `encode`, clamped to [-1, 1]."""
        if self.vae is None:
            return latents.clamp(-1, 1)
        b, c, f, h, w = latents.shape
        z = self._unscale_latents(latents.transpose(1, 2).reshape(b * f, c, h, w).to(self.vae.dtype))
        x = torch.cat([self.vae.decode(z[i:i + self.frame_chunk]).sample for i in range(0, b * f, self.frame_chunk)])
        return x.reshape(b, f, *x.shape[1:]).transpose(1, 2).clamp(-1, 1)

    @property
    def latent_channels(self) -> int:
        return 3 if self.vae is None else self.vae.config.latent_channels

    def latent_frames(self, num_frames: int) -> int:
        return num_frames

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(C, F', h, w) of the latents of a `num_frames`×`height`×`width` clip."""
        self.check_video_size(num_frames, height, width)
        s = self.vae_scale_factor
        return self.latent_channels, self.latent_frames(num_frames), height // s, width // s

    def spatial_multiple(self) -> tuple[int, str]:
        """(m, why): height and width must be multiples of m."""
        return self.vae_scale_factor, "the VAE's downsampling factor"

    def check_video_size(self, num_frames: int, height: int, width: int, where: str = "") -> None:
        """Raise VideoSizeError (naming `where`, the rule and the nearest valid sizes) for a clip
        this family cannot encode, denoise and decode back to the same size."""
        prefix = f"{where}: " if where else ""
        if num_frames < 1 or height < 1 or width < 1:
            raise VideoSizeError(f"{prefix}empty video ({num_frames} frames of {height}×{width}).")
        self._check_frames(num_frames, prefix)
        m, why = self.spatial_multiple()
        for name, v in (("height", height), ("width", width)):
            if v % m:
                near = " or ".join(map(str, nearest_multiples(v, m)))
                raise VideoSizeError(
                    f"{prefix}{name} {v} is not a multiple of {m} ({why}, model family '{self.family}'): "
                    f"resize or crop the clip to a {name} of {near}."
                )

    def _check_frames(self, num_frames: int, prefix: str) -> None:
        pass

    # -- the denoiser --------------------------------------------------------------------------
    def _timesteps(self, t, z: torch.Tensor) -> torch.Tensor:
        b = z.shape[0]
        t = torch.as_tensor(t, device=z.device)
        if t.ndim == 0:
            t = t.expand(b)
        if t.shape != (b,):
            raise ValueError(f"timestep must be a number, a 0-d tensor or a ({b},) tensor, got shape {tuple(t.shape)}")
        return t

    def _check_cond(self, cond: Conditioning, z: torch.Tensor) -> Conditioning:
        if isinstance(cond, dict):
            cond = Conditioning(dict(cond))
        if not isinstance(cond, Conditioning):
            raise ConditioningError(
                f"the {self.family} denoiser takes a Conditioning (from spec.encode_prompt), got {type(cond).__name__}"
            )
        missing = [k for k in self.cond_keys if k not in cond]
        if missing:
            raise ConditioningError(
                f"the '{self.family}' denoiser needs conditioning entries {list(self.cond_keys)}; missing "
                f"{missing} (got {sorted(cond.keys())}). Build it with spec.encode_prompt(prompts)"
                + (" — SDXL's added conditions `text_embeds` (pooled text embedding of text_encoder_2) and "
                   "`time_ids` (original size, crop, target size) come from there too." if self.family == "sdxl" else ".")
            )
        unknown = [k for k in cond.keys() if k not in self.cond_keys + self.optional_cond_keys]
        if unknown:
            raise ConditioningError(
                f"the '{self.family}' denoiser does not take conditioning entries {unknown} "
                f"(it takes {list(self.cond_keys + self.optional_cond_keys)}); was it encoded by another model's spec?"
            )
        return cond.expand_to(z.shape[0])

    def _model_input(self, z: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        x = z
        if "concat_latents" in cond:
            c = cond["concat_latents"]
            if c.shape[0] != z.shape[0] or c.shape[2:] != z.shape[2:]:
                raise ConditioningError(
                    f"concat_latents {tuple(c.shape)} must match the latents {tuple(z.shape)} in batch, frames, h, w"
                )
            x = torch.cat([z, c.to(z.dtype)], dim=1)
        expected = self.in_channels
        if x.shape[1] != expected:
            extra = cond["concat_latents"].shape[1] if "concat_latents" in cond else 0
            raise ConditioningError(
                f"the '{self.family}' denoiser ({self.path}) takes {expected} input channels, got "
                f"{z.shape[1]} (latents) + {extra} (concat_latents)"
            )
        return x.to(self.model_dtype)

    @property
    def in_channels(self) -> int:
        return self.network.config.in_channels

    @property
    def model_dtype(self) -> torch.dtype:
        return _dtype_of(self.network)

    def __call__(self, z: torch.Tensor, t, cond: Conditioning) -> torch.Tensor:
        """Model output (the scheduler's `prediction_type`) for latents `z` `(B, C, F', h, w)` at
        timestep(s) `t`, in the same layout and dtype as `z`. Differentiable (no no_grad inside)."""
        if z.ndim != 5:
            raise ValueError(f"latents must be (B, C, F, h, w), got shape {tuple(z.shape)}")
        cond = self._check_cond(cond, z)
        t = self._timesteps(t, z)
        x = self._model_input(z, cond)
        cond = cond.to(x.device, self.model_dtype)
        return self._denoise(x, t, cond).to(z.dtype)

    def _denoise(self, x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        raise NotImplementedError

    def token_grid(self, latent_shape) -> tuple[int, int, int]:
        """(F, h, w) token grid of the network's first attention resolution; for UNets the
        top-resolution grid. Accepts (C, F, h, w) or (B, C, F, h, w)."""
        f, h, w = tuple(latent_shape)[-3:]
        return f, h, w

    # -- identity ------------------------------------------------------------------------------
    def checksum(self) -> str:
        """Identifies the base weights: the attention query weights of the denoiser (sorted by
        name; the base weight under an injected LoRA), rounded to bf16 so the dtype does not matter.
        Equals `modules.adapters.export.base_checksum(unet)` for UNets."""
        mods = dict(self.network.named_modules())
        names = sorted(n for n in mods if n.endswith(("attn1.to_q", "attn2.to_q")))
        ws = []
        for n in names:
            m = mods[n]
            w = m.base_layer.weight if hasattr(m, "base_layer") else m.weight
            ws.append(w.detach().to(torch.bfloat16).float())
        return tensor_checksum(ws)


# -- presets and the loader ---------------------------------------------------------------------
PRESETS: dict[str, callable] = {  # preset name -> builder returning its folder (built once into the cache)
    "tiny-sd": tiny.build_tiny_sd,
    "tiny-world": tiny.world_path,
    "tiny-world-inpaint": tiny.world_inpaint_path,  # GP-noise fine-tuned conditional worlds (docs/gp.md)
    "tiny-world-sr": tiny.world_sr_path,
    "tiny-sdxl": tiny.build_tiny_sdxl,
    "tiny-unet3d": tiny.build_tiny_unet3d,
    "tiny-video-world": tiny.video_world_path,  # the trained text-to-video world (docs/video_world.md)
    "tiny-cogvideox": tiny.build_tiny_cogvideox,
}


def _all_hints(path) -> str:
    hints = "\n".join(f"  {f}: " + cls.download_hint.format(path=path) for f, cls in FAMILIES.items())
    return f"Download a diffusers-format model folder once on a machine with network:\n{hints}\nor use a tiny preset: {', '.join(PRESETS)}."


def resolve_model_path(name_or_path: str | Path, family: str | None = None) -> Path:
    """A preset name -> its folder (built once); a local folder -> its path (must exist)."""
    name = str(name_or_path)
    if name in PRESETS:
        return Path(PRESETS[name]())
    path = Path(name).expanduser()
    if not path.is_absolute() and not path.exists() and (REPO_ROOT / path).exists():
        path = REPO_ROOT / path
    if not path.is_dir():
        hint = FAMILIES[family].download_hint.format(path=name) if family in FAMILIES else _all_hints(name)
        raise ModelNotFoundError(f"Model folder '{name}' does not exist. {hint}")
    return path


def load_model(name_or_path: str | Path, dtype: torch.dtype = torch.float32, family: str | None = None) -> ModelSpec:
    """Load a preset (`tiny-sd`, `tiny-world`, `tiny-sdxl`, `tiny-unet3d`, `tiny-cogvideox`) or a
    local diffusers folder as its family's spec. `family=` asserts the family (a folder of another
    family is refused, naming both)."""
    if family is not None and family not in FAMILIES:
        raise ModelFamilyError(f"unknown model family {family!r}; choose one of {sorted(FAMILIES)}")
    path = resolve_model_path(name_or_path, family)
    found = detect_family(path)
    if found is None:  # no model_index.json and no readable denoiser config: an incomplete folder
        fam = family or ("cogvideox" if (path / "transformer").is_dir() else "sd")
    else:
        fam = found[0]
        if family is not None and family != fam:
            raise ModelFamilyError(
                f"{path} is a '{fam}' model ({found[1]}), but family='{family}' was asked for: drop family= "
                f"or pass family='{fam}', or point to a {family} folder. " + FAMILIES[family].download_hint.format(path=path)
            )
    spec = FAMILIES[fam].load(path, dtype)
    if not model_index(path).get("_name_or_path"):
        spec.model_id = str(name_or_path)
    return spec


# the families register themselves on import
from modules.models import families as _families  # noqa: E402,F401
