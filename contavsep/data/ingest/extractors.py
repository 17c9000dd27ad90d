"""Visual feature extractors of the ingestion: an open-vocabulary detector, an image encoder for
object crops, and a video encoder for motion.

- :class:`OpenVocabularyDetector`: OWLv2 (``Owlv2ForObjectDetection``), queried with a text such
  as "a photo of a violin"; it stands in for the paper's Detic. Per frame it returns the box of the
  highest-scoring patch for the query.
- :class:`ImageEncoder`: CLIP ViT-B/32 (``CLIPVisionModelWithProjection``): 512-d ``image_embeds``
  of the crop of that box (or of the whole frame when the detector found nothing).
- :class:`MotionEncoder`: VideoMAE base (``VideoMAEModel``) on 16 frames; tubelets of 2 frames give
  8 temporal positions; the last hidden state is max-pooled over space: 8 x 768 per clip.

Two ways to build them, with the same classes and the same forward code:

- :func:`load_pretrained_extractors`: the published checkpoints via ``from_pretrained`` (model ids
  and revisions configurable; offline from the local Hugging Face cache when ``local_files_only``
  is set or ``HF_HUB_OFFLINE=1``). Model ids may also be local folders, e.g. written by
  :meth:`FeatureExtractors.save_pretrained`.
- :func:`build_random_tiny_extractors`: the same model classes from tiny configs with seeded random
  weights, for tests and machines without the weights. Output sizes stay those of the schema:
  CLIP ``projection_dim=512``; VideoMAE ``hidden_size=768`` with one layer on a 32 x 32 input (4
  spatial patches), which is cheap enough to keep 768 honest rather than projecting a smaller width.
  OWLv2's text side uses a byte-level tokenizer (UTF-8 bytes + BOS/EOS), a complete tokenizer that
  needs no vocabulary download; its EOS has the largest id, as CLIP's does, because OWL pools the
  text at the argmax token id.

Image preprocessing runs in torch on the extractor's device (batched, GPU when available) and
follows each checkpoint's processor config (mean, std, sizes): OWLv2 pads bottom/right to a square
and resizes it to the model size; CLIP and VideoMAE resize the shortest edge and centre-crop. The
centre crop is taken in source pixels first and then resized (the same region as resize-then-crop,
without first materialising a huge image for a thin box).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from contavsep.errors import ContavsepError

if TYPE_CHECKING:  # the three roles are Hugging Face models (their config and save_pretrained)
    from transformers import PreTrainedModel

OBJECT_DIM = 512  # CLIP ViT-B/32 image_embeds
MOTION_TOKENS = 8  # 16 frames / tubelet 2
MOTION_DIM = 768  # VideoMAE base hidden size
MOTION_FRAMES = 16  # frames per clip the motion encoder reads

DEFAULT_DETECTOR = "google/owlv2-base-patch16-ensemble"
DEFAULT_IMAGE_ENCODER = "openai/clip-vit-base-patch32"
DEFAULT_MOTION_ENCODER = "MCG-NJU/videomae-base"

# Processor defaults of the three model families (used by random-tiny; pretrained ones read the
# checkpoint's preprocessor_config.json).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

EXTRACTOR_KINDS = ("pretrained", "random-tiny")


class ExtractorLoadError(ContavsepError):
    """Extractor weights or configs cannot be loaded; the message says how to get them."""


@dataclass(frozen=True)
class ExtractorSpec:
    """What produced a feature, as recorded in the dataset manifest."""

    role: str  # detector | image | motion
    name: str  # hub model id, local folder, or "random-tiny/<family>"
    revision: str  # requested revision ("main" by default) or "seed=<n>" for random-tiny
    commit: str | None  # resolved hub commit hash when known
    pretrained: bool
    model_class: str
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "revision": self.revision,
            "commit": self.commit,
            "pretrained": self.pretrained,
            "model_class": self.model_class,
            **self.details,
        }


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` -> the first CUDA device when available, else CPU; an unavailable device is an error."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ExtractorLoadError(f"'{device}' is not a device; use auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda" and (not torch.cuda.is_available() or (dev.index or 0) >= torch.cuda.device_count()):
        raise ExtractorLoadError(
            f"device '{device}' is not available here ({torch.cuda.device_count()} CUDA device(s)); use auto or cpu"
        )
    return dev


# ------------------------------------------------------------------------------------------------
# preprocessing (torch, batched, on the extractor's device)


def _to_chw_float(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float (B, 3, H, W), still in [0, 255] (scaled once, in _normalise)."""
    return frames.permute(0, 3, 1, 2).float()


def _normalise(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(x / 255 - mean) / std as one multiply-subtract, on the already resized (small) images."""
    std_t = torch.tensor(std, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    mean_t = torch.tensor(mean, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
    return images.mul(1.0 / (255.0 * std_t)).sub_(mean_t / std_t)


def pad_square_resize(frames: torch.Tensor, size: int, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """OWLv2 input: zero-pad bottom/right to a square, resize (bilinear, antialiased), normalise.

    Shape:
        - frames: uint8 :math:`(B, H, W, 3)`; output: float :math:`(B, 3, size, size)`.
    """
    images = _to_chw_float(frames)
    height, width = images.shape[-2:]
    side = max(height, width)
    images = F.pad(images, (0, side - width, 0, side - height), value=0.0)
    images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return _normalise(images, mean, std)


def centre_crop_resize(
    frames: torch.Tensor, shortest_edge: int, crop: int, mode: str, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """CLIP / VideoMAE input: the region that "resize shortest edge to ``shortest_edge``, centre
    crop ``crop``" keeps, resized to ``crop`` x ``crop``, clamped to the pixel range, normalised.

    Shape:
        - frames: uint8 :math:`(B, H, W, 3)` (one size for the batch); output: float :math:`(B, 3, crop, crop)`.
    """
    height, width = frames.shape[1:3]
    keep = max(1, min(height, width, round(min(height, width) * crop / shortest_edge)))
    top, left = (height - keep) // 2, (width - keep) // 2
    # Cut in uint8 first: only the kept square is converted to float.
    images = _to_chw_float(frames[:, top : top + keep, left : left + keep])
    images = F.interpolate(images, size=(crop, crop), mode=mode, align_corners=False, antialias=True)
    return _normalise(images.clamp_(0.0, 255.0), mean, std)


# ------------------------------------------------------------------------------------------------
# the three extractors


@dataclass(frozen=True)
class ImageNorm:
    """Input geometry and normalisation of one model (from its processor config)."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    size: int  # model input side (square)
    shortest_edge: int  # resize target of the shortest edge before the centre crop (CLIP/VideoMAE)


TextTokenizer = Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]]


class OpenVocabularyDetector:
    """OWLv2 top box per frame for a text query per frame."""

    def __init__(
        self,
        model: PreTrainedModel,
        tokenize: TextTokenizer,
        norm: ImageNorm,
        spec: ExtractorSpec,
        device: torch.device,
        batch_size: int = 16,
    ):
        self.model = model.to(device).eval()  # type: ignore[arg-type]  # transformers types `to` as an unbound wrapper
        self.tokenize = tokenize
        self.norm = norm
        self.spec = spec
        self.device = device
        self.batch_size = batch_size

    @torch.inference_mode()
    def top_boxes(self, clips: Sequence[np.ndarray], queries: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Best box and score per frame; frames of several clips share forward passes.

        Args:
            clips: per clip, its frames as uint8 :math:`(N_i, H_i, W_i, 3)`.
            queries: per clip, the text query (e.g. "a photo of a violin").

        Returns:
            per clip, ``(boxes, scores)``: float32 :math:`(N_i, 4)` pixel ``x0, y0, x1, y1`` clipped to the
            frame, and float32 :math:`(N_i,)` sigmoid scores of the query for that box.
        """
        index = [(c, f) for c, frames in enumerate(clips) for f in range(len(frames))]
        boxes = [np.zeros((len(frames), 4), np.float32) for frames in clips]
        scores = [np.zeros(len(frames), np.float32) for frames in clips]
        for start in range(0, len(index), self.batch_size):
            chunk = index[start : start + self.batch_size]
            pixel_values, texts, sides = [], [], []
            # Frames of one clip share a size, so each clip's run is preprocessed as one batch.
            for c in sorted({c for c, _ in chunk}):
                picks = [f for cc, f in chunk if cc == c]
                frames = torch.from_numpy(clips[c][picks]).to(self.device)
                pixel_values.append(pad_square_resize(frames, self.norm.size, self.norm.mean, self.norm.std))
                texts.extend([queries[c]] * len(picks))
                sides.extend([max(frames.shape[1], frames.shape[2])] * len(picks))
            input_ids, attention_mask = self.tokenize(texts)
            out = self.model(
                input_ids=input_ids.to(self.device),
                attention_mask=attention_mask.to(self.device),
                pixel_values=torch.cat(pixel_values),
            )
            # One query per image: logits (B, patches, 1); pred_boxes (B, patches, 4) cx, cy, w, h
            # relative to the padded square, hence the scale by its side.
            patch_scores = out.logits[..., 0].float().sigmoid()
            best = patch_scores.argmax(dim=1)
            rows = torch.arange(len(chunk), device=best.device)
            cxcywh = out.pred_boxes[rows, best].float()
            xyxy = torch.cat([cxcywh[:, :2] - cxcywh[:, 2:] / 2, cxcywh[:, :2] + cxcywh[:, 2:] / 2], dim=1)
            pixels = (xyxy * torch.tensor(sides, device=xyxy.device, dtype=xyxy.dtype).unsqueeze(1)).cpu().numpy()
            best_scores = patch_scores[rows, best].cpu().numpy()
            for row, (c, f) in enumerate(chunk):
                height, width = clips[c].shape[1:3]
                boxes[c][f] = np.clip(pixels[row], 0, [width, height, width, height])
                scores[c][f] = best_scores[row]
        return list(zip(boxes, scores))


def crop_boxes(
    frames: np.ndarray, boxes: np.ndarray, scores: np.ndarray, threshold: float, min_side: int = 2
) -> tuple[list[np.ndarray], np.ndarray]:
    """Crops of the detected boxes; the whole frame where the score is below ``threshold`` or the
    box is degenerate (thinner than ``min_side`` pixels after clipping to the frame).

    Shape:
        - frames: uint8 :math:`(N, H, W, 3)`; boxes: :math:`(N, 4)` pixel x0, y0, x1, y1; scores: :math:`(N,)`.
        - output: N crops uint8 :math:`(h_i, w_i, 3)` and bool :math:`(N,)` ``found`` (True where a box was used).
    """
    crops: list[np.ndarray] = []
    found = np.zeros(len(frames), dtype=bool)
    for i, (frame, box, score) in enumerate(zip(frames, boxes, scores)):
        x0, y0 = int(math.floor(box[0])), int(math.floor(box[1]))
        x1, y1 = int(math.ceil(box[2])), int(math.ceil(box[3]))
        if score >= threshold and x1 - x0 >= min_side and y1 - y0 >= min_side:
            crops.append(frame[y0:y1, x0:x1])
            found[i] = True
        else:
            crops.append(frame)
    return crops, found


class ImageEncoder:
    """CLIP image embeddings (``image_embeds``) of crops of any size."""

    def __init__(
        self, model: PreTrainedModel, norm: ImageNorm, spec: ExtractorSpec, device: torch.device, batch_size: int = 64
    ):
        self.model = model.to(device).eval()  # type: ignore[arg-type]  # transformers types `to` as an unbound wrapper
        self.norm = norm
        self.spec = spec
        self.device = device
        self.batch_size = batch_size

    @torch.inference_mode()
    def encode(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """Shape: crops: uint8 :math:`(h_i, w_i, 3)` each; output: float32 :math:`(len(crops), 512)`."""
        out = np.zeros((len(crops), OBJECT_DIM), np.float32)
        for start in range(0, len(crops), self.batch_size):
            batch = [
                centre_crop_resize(
                    torch.from_numpy(np.ascontiguousarray(c)).to(self.device).unsqueeze(0),
                    self.norm.shortest_edge,
                    self.norm.size,
                    "bicubic",
                    self.norm.mean,
                    self.norm.std,
                )
                for c in crops[start : start + self.batch_size]
            ]
            embeds = self.model(pixel_values=torch.cat(batch)).image_embeds
            out[start : start + len(batch)] = embeds.float().cpu().numpy()
        return out


class MotionEncoder:
    """VideoMAE last hidden state, spatially max-pooled per temporal position."""

    def __init__(
        self, model: PreTrainedModel, norm: ImageNorm, spec: ExtractorSpec, device: torch.device, batch_size: int = 4
    ):
        self.model = model.to(device).eval()  # type: ignore[arg-type]  # transformers types `to` as an unbound wrapper
        self.norm = norm
        self.spec = spec
        self.device = device
        self.batch_size = batch_size
        config = model.config
        self.num_frames = config.num_frames
        self.temporal = config.num_frames // config.tubelet_size
        self.spatial = (config.image_size // config.patch_size) ** 2

    @torch.inference_mode()
    def encode(self, clips: Sequence[np.ndarray]) -> np.ndarray:
        """Shape: clips: uint8 :math:`(T, H, W, 3)` each with ``T = num_frames`` (16);
        output: float32 :math:`(len(clips), 8, 768)`."""
        out = np.zeros((len(clips), self.temporal, MOTION_DIM), np.float32)
        for start in range(0, len(clips), self.batch_size):
            batch = []
            for frames in clips[start : start + self.batch_size]:
                if len(frames) != self.num_frames:
                    raise ValueError(f"the motion encoder reads {self.num_frames} frames per clip, got {len(frames)}")
                images = centre_crop_resize(
                    torch.from_numpy(frames).to(self.device),
                    self.norm.shortest_edge,
                    self.norm.size,
                    "bilinear",
                    self.norm.mean,
                    self.norm.std,
                )
                batch.append(images)  # (T, 3, S, S)
            hidden = self.model(pixel_values=torch.stack(batch)).last_hidden_state  # (B, T' * h * w, D)
            # Tokens are ordered time-major (Conv3d patch embedding, flattened over T', h, w).
            pooled = hidden.float().view(len(batch), self.temporal, self.spatial, -1).amax(dim=2)
            out[start : start + len(batch)] = pooled.cpu().numpy()
        return out


@dataclass(frozen=True)
class FeatureExtractors:
    """The three extractors of one ingestion run and where they came from."""

    detector: OpenVocabularyDetector
    image_encoder: ImageEncoder
    motion_encoder: MotionEncoder
    kind: str  # pretrained | random-tiny

    @property
    def device(self) -> torch.device:
        return self.detector.device

    def describe(self) -> dict[str, Any]:
        """The manifest's ``extractors`` entry: kind, then name/revision/pretrained per role."""
        return {
            "kind": self.kind,
            "detector": self.detector.spec.as_dict(),
            "image": self.image_encoder.spec.as_dict(),
            "motion": self.motion_encoder.spec.as_dict(),
        }

    def save_pretrained(self, directory: str | Path) -> dict[str, Path]:
        """Write the three models (weights, config, processor config, tokenizer) to
        ``directory/{detector,image,motion}`` so that :func:`load_pretrained_extractors` can load
        them from there (e.g. to carry downloaded weights to an offline machine)."""
        directory = Path(directory)
        paths = {role: directory / role for role in ("detector", "image", "motion")}
        self.detector.model.save_pretrained(paths["detector"])
        self.detector.tokenize.tokenizer.save_pretrained(paths["detector"])  # type: ignore[attr-defined]
        self.image_encoder.model.save_pretrained(paths["image"])
        self.motion_encoder.model.save_pretrained(paths["motion"])
        processors: dict[str, tuple[str, ImageNorm, dict[str, Any]]] = {
            "detector": (
                "Owlv2ImageProcessor",
                self.detector.norm,
                {"size": {"height": self.detector.norm.size, "width": self.detector.norm.size}, "do_pad": True},
            ),
            "image": (
                "CLIPImageProcessor",
                self.image_encoder.norm,
                {
                    "size": {"shortest_edge": self.image_encoder.norm.shortest_edge},
                    "crop_size": {"height": self.image_encoder.norm.size, "width": self.image_encoder.norm.size},
                },
            ),
            "motion": (
                "VideoMAEImageProcessor",
                self.motion_encoder.norm,
                {
                    "size": {"shortest_edge": self.motion_encoder.norm.shortest_edge},
                    "crop_size": {"height": self.motion_encoder.norm.size, "width": self.motion_encoder.norm.size},
                },
            ),
        }
        for role, (cls_name, norm, sizes) in processors.items():
            config = {
                "image_processor_type": cls_name,
                "image_mean": list(norm.mean),
                "image_std": list(norm.std),
                **sizes,
            }
            (paths[role] / "preprocessor_config.json").write_text(json.dumps(config, indent=2))
        return paths


# ------------------------------------------------------------------------------------------------
# text tokenizers


class HFQueryTokenizer:
    """Pads/truncates queries to the OWL text model's positions (OWLv2 uses ``max_length`` 16)."""

    def __init__(self, tokenizer: Any, max_length: int):
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self.tokenizer(
            texts, padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return enc["input_ids"], enc["attention_mask"]


def byte_level_tokenizer(model_max_length: int) -> Any:
    """A byte-level tokenizer (``tokenizers`` BPE without merges over the 256 byte symbols):
    id 0 = pad, 1..256 = bytes, 257 = BOS, 258 = EOS (largest id: OWL pools at the argmax id)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0}
    for i, symbol in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet())):
        vocab[symbol] = i + 1
    vocab["<bos>"], vocab["<eos>"] = 257, 258
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", 257), ("<eos>", 258)]
    )
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<bos>", eos_token="<eos>", model_max_length=model_max_length
    )


# ------------------------------------------------------------------------------------------------
# random-tiny


def _weights_digest(model: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def build_random_tiny_extractors(
    device: str | torch.device = "auto", seed: int = 0, batch_frames: int = 16, batch_clips: int = 4
) -> FeatureExtractors:
    """The real OWLv2 / CLIP / VideoMAE classes from tiny configs with seeded random weights.

    Output sizes match the schema (512-d object features, 8 x 768 motion features); inputs are
    64 px (OWLv2) and 32 px (CLIP, VideoMAE). Deterministic for a ``seed``; the global torch RNG is
    left untouched.
    """
    from transformers import (
        CLIPVisionConfig,
        CLIPVisionModelWithProjection,
        Owlv2Config,
        Owlv2ForObjectDetection,
        VideoMAEConfig,
        VideoMAEModel,
    )

    dev = resolve_device(device)
    text_positions = 48  # "a photo of a acoustic guitar" is 28 bytes + BOS/EOS
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        owl = Owlv2ForObjectDetection(
            Owlv2Config(
                text_config={
                    "vocab_size": 259,
                    "hidden_size": 32,
                    "intermediate_size": 64,
                    "num_hidden_layers": 1,
                    "num_attention_heads": 2,
                    "max_position_embeddings": text_positions,
                    "pad_token_id": 0,
                    "bos_token_id": 257,
                    "eos_token_id": 258,
                },
                vision_config={
                    "hidden_size": 32,
                    "intermediate_size": 64,
                    "num_hidden_layers": 1,
                    "num_attention_heads": 2,
                    "image_size": 64,
                    "patch_size": 16,
                },
                projection_dim=32,
            )
        )
        clip = CLIPVisionModelWithProjection(
            CLIPVisionConfig(
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=1,
                num_attention_heads=2,
                image_size=32,
                patch_size=16,
                projection_dim=OBJECT_DIM,
            )
        )
        videomae = VideoMAEModel(
            VideoMAEConfig(
                hidden_size=MOTION_DIM,
                intermediate_size=MOTION_DIM,
                num_hidden_layers=1,
                num_attention_heads=12,
                image_size=32,
                patch_size=16,
                num_frames=MOTION_FRAMES,
                tubelet_size=2,
            )
        )

    def spec(role: str, family: str, model: torch.nn.Module, **details: Any) -> ExtractorSpec:
        return ExtractorSpec(
            role=role,
            name=f"random-tiny/{family}",
            revision=f"seed={seed}",
            commit=None,
            pretrained=False,
            model_class=type(model).__name__,
            details={"weights_sha256_16": _weights_digest(model), **details},
        )

    tokenizer = HFQueryTokenizer(byte_level_tokenizer(text_positions), text_positions)
    return FeatureExtractors(
        detector=OpenVocabularyDetector(
            owl,
            tokenizer,
            ImageNorm(CLIP_MEAN, CLIP_STD, 64, 64),
            spec("detector", "owlv2", owl, input_size=64, tokenizer="byte-level"),
            dev,
            batch_frames,
        ),
        image_encoder=ImageEncoder(
            clip,
            ImageNorm(CLIP_MEAN, CLIP_STD, 32, 32),
            spec("image", "clip-vision", clip, input_size=32, output_dim=OBJECT_DIM),
            dev,
            max(batch_frames, 16),
        ),
        motion_encoder=MotionEncoder(
            videomae,
            ImageNorm(IMAGENET_MEAN, IMAGENET_STD, 32, 32),
            spec(
                "motion",
                "videomae",
                videomae,
                input_size=32,
                frames=MOTION_FRAMES,
                tokens=MOTION_TOKENS,
                dim=MOTION_DIM,
                pooling="spatial max of last_hidden_state",
            ),
            dev,
            batch_clips,
        ),
        kind="random-tiny",
    )


# ------------------------------------------------------------------------------------------------
# pretrained


@dataclass(frozen=True)
class PretrainedModelIds:
    """Hub ids (or local folders) and revisions of the three checkpoints."""

    detector: str = DEFAULT_DETECTOR
    image: str = DEFAULT_IMAGE_ENCODER
    motion: str = DEFAULT_MOTION_ENCODER
    revision: str | None = None  # one revision for all three (None: each repo's default branch)


def offline_requested(flag: bool = False) -> bool:
    """True when the caller asked for offline loading or ``HF_HUB_OFFLINE`` is set truthy."""
    return flag or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def hub_endpoint() -> str:
    """The Hugging Face Hub the loaders talk to (``HF_ENDPOINT``, else huggingface.co)."""
    return os.environ.get("HF_ENDPOINT", "").strip() or "https://huggingface.co"


def hub_reachable(timeout_s: float = 5.0) -> bool:
    """Whether the Hub answers at all (any HTTP status counts), within ``timeout_s``: without it
    huggingface_hub retries every file for about 90 s before saying it is offline."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(urllib.request.Request(hub_endpoint(), method="HEAD"), timeout=timeout_s).close()
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError, ValueError):
        return False
    return True


def _missing_weights(
    role: str, model_id: str, local_files_only: bool, exc: BaseException, hub_down: bool = False
) -> ExtractorLoadError:
    where = (
        "in the local Hugging Face cache"
        if local_files_only
        else "locally, and the Hugging Face Hub could not be reached"
    )
    if hub_down:
        where = f"in the local Hugging Face cache, and the Hugging Face Hub ({hub_endpoint()}) cannot be reached"
    cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface"
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return ExtractorLoadError(
        f"pretrained {role} weights '{model_id}' are not available {where} ({reason}); "
        f"pre-download them on a machine with internet (`hf download {model_id}`), copy the cache ({cache}) here "
        f"and set HF_HUB_OFFLINE=1, or pass --extractors random-tiny for a test run"
    )


def _resolve(
    model_id: str, revision: str | None, local_files_only: bool, cache_dir: str | None
) -> tuple[Any, str | None]:
    """Pin the revision once so that config, weights and processor come from one commit."""
    from transformers.utils.hub import resolve_revision

    resolved = resolve_revision(model_id, revision, local_files_only=local_files_only, cache_dir=cache_dir)
    commit = getattr(resolved, "resolved", None)
    if (
        commit is None
        and isinstance(resolved, str)
        and len(resolved) == 40
        and all(c in "0123456789abcdef" for c in resolved)
    ):
        commit = resolved
    return resolved, commit


def _processor_dict(model_id: str, revision: Any, local_files_only: bool, cache_dir: str | None) -> dict[str, Any]:
    from transformers.image_processing_utils import ImageProcessingMixin

    config, _ = ImageProcessingMixin.get_image_processor_dict(
        model_id, revision=revision, local_files_only=local_files_only, cache_dir=cache_dir
    )
    return config


def _norm_from(processor: dict[str, Any], input_size: int, mean: tuple, std: tuple) -> ImageNorm:
    size = processor.get("size") or {}
    shortest = size.get("shortest_edge", input_size) if isinstance(size, dict) else int(size)
    return ImageNorm(
        mean=tuple(float(v) for v in processor.get("image_mean", mean)),  # type: ignore[arg-type]
        std=tuple(float(v) for v in processor.get("image_std", std)),  # type: ignore[arg-type]
        size=input_size,
        shortest_edge=int(shortest),
    )


def load_pretrained_extractors(
    ids: PretrainedModelIds = PretrainedModelIds(),
    *,
    device: str | torch.device = "auto",
    local_files_only: bool = False,
    cache_dir: str | None = None,
    batch_frames: int = 16,
    batch_clips: int = 4,
) -> FeatureExtractors:
    """Load OWLv2, CLIP ViT-B/32 and VideoMAE base with ``from_pretrained``.

    ``local_files_only`` (or ``HF_HUB_OFFLINE=1``) reads only the local cache. Missing weights
    raise :class:`ExtractorLoadError` saying how to pre-download them; checkpoints whose output
    sizes differ from the schema (512-d objects, 8 x 768 motion) are refused.
    """
    from transformers import (
        AutoTokenizer,
        CLIPVisionModelWithProjection,
        Owlv2ForObjectDetection,
        VideoMAEModel,
    )

    dev = resolve_device(device)
    offline = offline_requested(local_files_only)
    loaded: dict[str, Any] = {}
    plan: list[tuple[str, str, Any]] = [
        ("detector", ids.detector, Owlv2ForObjectDetection),
        ("image", ids.image, CLIPVisionModelWithProjection),
        ("motion", ids.motion, VideoMAEModel),
    ]
    # Offline without HF_HUB_OFFLINE: read the local cache only, so that missing weights fail in
    # seconds with the pre-download line instead of after minutes of Hub retries.
    hub_down = not offline and not all(os.path.isdir(m) for _, m, _ in plan) and not hub_reachable()
    offline = offline or hub_down
    for role, model_id, cls in plan:
        try:
            revision, commit = _resolve(model_id, ids.revision, offline, cache_dir)
            model = cls.from_pretrained(model_id, revision=revision, local_files_only=offline, cache_dir=cache_dir)
            processor = _processor_dict(model_id, revision, offline, cache_dir)
            tokenizer = None
            if role == "detector":
                tokenizer = AutoTokenizer.from_pretrained(
                    model_id, revision=revision, local_files_only=offline, cache_dir=cache_dir
                )
        except OSError as exc:  # huggingface_hub's "not found locally / cannot connect" errors are OSErrors
            raise _missing_weights(role, model_id, offline, exc, hub_down) from exc
        except ValueError as exc:  # e.g. a folder or repo holding another model type
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ExtractorLoadError(f"cannot load the {role} '{model_id}' as {cls.__name__}: {reason}") from exc
        local = os.path.isdir(model_id)
        spec = ExtractorSpec(
            role=role,
            name=model_id,
            revision=ids.revision or ("local folder" if local else "main"),
            commit=commit,
            pretrained=True,
            model_class=cls.__name__,
            # A local folder has no commit to point at; its weights digest identifies it.
            details={"weights_sha256_16": _weights_digest(model)} if local else {},
        )
        loaded[role] = (model, processor, tokenizer, spec)

    owl, owl_proc, owl_tok, owl_spec = loaded["detector"]
    clip, clip_proc, _, clip_spec = loaded["image"]
    videomae, vm_proc, _, vm_spec = loaded["motion"]
    if clip.config.projection_dim != OBJECT_DIM:
        raise ExtractorLoadError(
            f"image encoder '{ids.image}' gives {clip.config.projection_dim}-d embeddings; the dataset schema needs {OBJECT_DIM}"
        )
    temporal = videomae.config.num_frames // videomae.config.tubelet_size
    if videomae.config.hidden_size != MOTION_DIM or temporal != MOTION_TOKENS:
        raise ExtractorLoadError(
            f"motion encoder '{ids.motion}' gives {temporal} x {videomae.config.hidden_size} features; "
            f"the dataset schema needs {MOTION_TOKENS} x {MOTION_DIM}"
        )
    owl_size = owl.config.vision_config.image_size
    text_positions = owl.config.text_config.max_position_embeddings
    clip_size = clip.config.image_size
    vm_size = videomae.config.image_size
    return FeatureExtractors(
        detector=OpenVocabularyDetector(
            owl,
            HFQueryTokenizer(owl_tok, text_positions),
            _norm_from(owl_proc, owl_size, CLIP_MEAN, CLIP_STD),
            replace(
                owl_spec, details={**owl_spec.details, "input_size": owl_size, "tokenizer": type(owl_tok).__name__}
            ),
            dev,
            batch_frames,
        ),
        image_encoder=ImageEncoder(
            clip,
            _norm_from(clip_proc, clip_size, CLIP_MEAN, CLIP_STD),
            replace(clip_spec, details={**clip_spec.details, "input_size": clip_size, "output_dim": OBJECT_DIM}),
            dev,
            max(batch_frames, 16),
        ),
        motion_encoder=MotionEncoder(
            videomae,
            _norm_from(vm_proc, vm_size, IMAGENET_MEAN, IMAGENET_STD),
            replace(
                vm_spec,
                details={
                    **vm_spec.details,
                    "input_size": vm_size,
                    "frames": videomae.config.num_frames,
                    "tokens": MOTION_TOKENS,
                    "dim": MOTION_DIM,
                    "pooling": "spatial max of last_hidden_state",
                },
            ),
            dev,
            batch_clips,
        ),
        kind="pretrained",
    )


def build_extractors(
    kind: str,
    *,
    ids: PretrainedModelIds = PretrainedModelIds(),
    device: str | torch.device = "auto",
    local_files_only: bool = False,
    seed: int = 0,
    batch_frames: int = 16,
    batch_clips: int = 4,
) -> FeatureExtractors:
    """``pretrained`` -> :func:`load_pretrained_extractors`; ``random-tiny`` -> :func:`build_random_tiny_extractors`."""
    if kind == "pretrained":
        return load_pretrained_extractors(
            ids, device=device, local_files_only=local_files_only, batch_frames=batch_frames, batch_clips=batch_clips
        )
    if kind == "random-tiny":
        return build_random_tiny_extractors(
            device=device, seed=seed, batch_frames=batch_frames, batch_clips=batch_clips
        )
    raise ExtractorLoadError(f"unknown extractors '{kind}'; choose one of: {', '.join(EXTRACTOR_KINDS)}")
