"""DataComp's own pool-safety models behind winnow's model interfaces.

=====================  ==========================================  ===================================
class                  model (as DataComp used it)                 production weights (``PRODUCTION_WEIGHTS``)
=====================  ==========================================  ===================================
DetoxifyToxicity       Detoxify ``multilingual`` (XLM-RoBERTa      detoxify release v0.4-alpha
                       base, 16 sigmoid heads)                     ``multilingual_debiased-0b549669.ckpt``,
                                                                   tokenizer and config of
                                                                   ``xlm-roberta-base`` from the HF hub
ClipL14NSFW            LAION's CLIP-based NSFW detector, an MLP    LAION-AI/CLIP-based-NSFW-Detector
                       on OpenAI CLIP ViT-L/14 image embeddings    ``clip_ViT-L-14_openai_binary_nsfw_head.pth``
ScrfdFaceDetector      SCRFD-10G with keypoints through            insightface ``antelopev2`` pack, member
                       insightface, 640 x 640 input                ``scrfd_10g_bnkps.onnx``
Isc21Descriptor        ISC21 descriptor-track winner (Yokoo),      lyakaap/ISC21-Descriptor-Track-1st
                       ``isc_ft_v107``: EfficientNetV2-M, GeM,     release v1.0.1 ``isc_ft_v107.pth.tar``
                       256-d, near-duplicate at cosine 0.604169
=====================  ==========================================  ===================================

Every loader takes a local file (what ``winnow models fetch`` writes, where the internet is
reachable, from the URLs in :data:`PRODUCTION_WEIGHTS`) or, given none, downloads the weights
itself the way its upstream package does (torch hub cache, insightface's ``~/.insightface``).
Neither works offline; the offline defaults are in ``toxicity``, ``nsfw`` and ``faces``. The
tests build checkpoints of the same architectures with random weights and load them here.

Checkpoints are read with ``torch.load(weights_only=True)``: a file cannot run code while it is
read. A missing file is a ``FileNotFoundError`` naming the path; a file that is not a checkpoint
of the expected architecture is a ``ValueError`` saying what is wrong.
"""

from __future__ import annotations

import logging
import time
import warnings
import zipfile
from pathlib import Path
from typing import NamedTuple

import numpy as np

from winnow.shared.models._checks import check_images, check_texts
from winnow.shared.models.base import ImageNeed
from winnow.shared.models.cpu_threads import onnx_session_options

log = logging.getLogger(__name__)


class WeightsFile(NamedTuple):
    url: str
    filename: str  # where ``winnow models fetch`` puts it, relative to its models directory
    sha256: str | None  # None: not published; the download is trusted by its URL alone


PRODUCTION_WEIGHTS: dict[str, WeightsFile] = {
    # torch hub's naming: the 8 hex digits in the name are the start of the file's sha256.
    "detoxify-multilingual": WeightsFile(
        "https://github.com/unitaryai/detoxify/releases/download/v0.4-alpha/multilingual_debiased-0b549669.ckpt",
        "multilingual_debiased-0b549669.ckpt", None),
    # Detoxify builds its model config and tokenizer from ``xlm-roberta-base``; with these two
    # files in one directory (``tokenizer_dir``) it needs no hub access.
    "xlm-roberta-base/config.json": WeightsFile(
        "https://huggingface.co/FacebookAI/xlm-roberta-base/resolve/main/config.json",
        "xlm-roberta-base/config.json", None),
    "xlm-roberta-base/tokenizer.json": WeightsFile(
        "https://huggingface.co/FacebookAI/xlm-roberta-base/resolve/main/tokenizer.json",
        "xlm-roberta-base/tokenizer.json", None),
    "clip-l14-nsfw": WeightsFile(
        "https://github.com/LAION-AI/CLIP-based-NSFW-Detector/raw/main/models/"
        "clip_ViT-L-14_openai_binary_nsfw_head.pth",
        "clip_ViT-L-14_openai_binary_nsfw_head.pth", None),
    # The URL insightface 2.x downloads packs from (0.7.x used .../releases/download/v0.7/).
    # ScrfdFaceDetector reads scrfd_10g_bnkps.onnx straight out of the zip.
    "scrfd-10g": WeightsFile(
        "https://github.com/deepinsight/insightface/releases/download/model-zoo/antelopev2.zip",
        "antelopev2.zip", None),
    "isc21-ft-v107": WeightsFile(
        "https://github.com/lyakaap/ISC21-Descriptor-Track-1st/releases/download/v1.0.1/isc_ft_v107.pth.tar",
        "isc_ft_v107.pth.tar", None),
    # DataComp's language identifier for the basic, text-based and image-based baselines
    # (baselines/utils.py downloads this URL); fastText publishes its md5, 01810bc59c6a3d2b79c79e6336612f65.
    "fasttext-lid176-bin": WeightsFile(
        "https://dl.fbaipublicfiles.com/fasttext/supervised-models/lid.176.bin", "lid.176.bin", None),
}

# Detoxify's labels that say a text is toxic; the rest of the multilingual model's 16 heads
# (male, female, christian, ...) say which identity a text mentions, not that it is toxic.
TOXICITY_CATEGORIES = ("toxicity", "severe_toxicity", "obscene", "identity_attack", "insult", "threat",
                       "sexual_explicit")
SCRFD_MEMBER = "scrfd_10g_bnkps.onnx"
ISC21_THRESHOLD = 0.604169  # DataComp's cosine similarity for "near-duplicate of an evaluation image"


def _existing_file(path: str | Path, what: str) -> Path:
    resolved = Path(path).expanduser()
    if not resolved.is_file():
        raise FileNotFoundError(f"{what} {resolved} does not exist (`winnow models fetch` downloads it)")
    return resolved


def _read_checkpoint(source: str | Path | None, weights: str, what: str, safe_globals: tuple = ()) -> dict:
    """A torch checkpoint from a local file, or downloaded from ``PRODUCTION_WEIGHTS[weights]``."""
    import torch

    with torch.serialization.safe_globals(list(safe_globals)):
        if source is None:
            url, filename, _ = PRODUCTION_WEIGHTS[weights]
            log.info("downloading %s from %s", what, url)
            where = url
            loaded = torch.hub.load_state_dict_from_url(url, map_location="cpu", weights_only=True,
                                                        file_name=Path(filename).name)
        else:
            where = _existing_file(source, what)
            try:
                loaded = torch.load(where, map_location="cpu", weights_only=True)
            except Exception as exc:  # UnpicklingError, RuntimeError, EOFError, ... depending on the damage
                raise ValueError(f"{what} {where} is not a readable PyTorch checkpoint: "
                                 f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(loaded, dict):
        raise ValueError(f"{what} {where} holds a {type(loaded).__name__}, expected a dict checkpoint")
    return loaded


def _strict_load(module, state_dict: dict, what: str) -> None:
    """``load_state_dict(strict=True)`` with the mismatch as a ValueError."""
    try:
        module.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{what} does not fit the architecture: {exc}") from exc


# --------------------------------------------------------------------------------------------
# Caption toxicity: Detoxify
# --------------------------------------------------------------------------------------------


class DetoxifyToxicity:
    """Caption toxicity from Detoxify; :meth:`score` is the maximum over ``categories``.

    DataComp ran Detoxify's ``multilingual`` model. Its 16 sigmoid heads are the Jigsaw
    unintended-bias labels; by default the score is the maximum of the seven that rate toxicity
    (:data:`TOXICITY_CATEGORIES`), so a caption is as toxic as its worst category and a caption
    that merely names an identity is not flagged. ``categories=("toxicity",)`` gives the single
    head Detoxify's multilingual challenge was evaluated on.

    The model is built with detoxify's own code (``detoxify.detoxify.get_model_and_tokenizer``:
    the ``transformers`` class named in the checkpoint, its weights, and the tokenizer of the
    checkpoint's base model). Detoxify reads the base model's config and tokenizer from the HF
    hub (``xlm-roberta-base``); ``tokenizer_dir``, a directory with that ``config.json`` and
    ``tokenizer.json``, replaces the hub so nothing is downloaded.

    Texts longer than the model's 512 positions are truncated, as Detoxify does.
    """

    def __init__(self, variant: str = "multilingual", checkpoint: str | Path | None = None, device: str = "cpu",
                 tokenizer_dir: str | Path | None = None, categories: tuple[str, ...] = TOXICITY_CATEGORIES,
                 batch_size: int = 32) -> None:
        import torch
        from detoxify.detoxify import MODEL_URLS, get_model_and_tokenizer

        if variant not in MODEL_URLS:
            raise ValueError(f"unknown Detoxify variant {variant!r}; detoxify has {sorted(MODEL_URLS)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if tokenizer_dir is not None and not Path(tokenizer_dir).is_dir():
            raise FileNotFoundError(f"tokenizer directory {tokenizer_dir} does not exist "
                                    f"(`winnow models fetch` downloads xlm-roberta-base's config and tokenizer)")
        self.name = f"detoxify-{variant}"
        self.batch_size = batch_size
        self._torch = torch
        start = time.perf_counter()
        if checkpoint is None:
            log.info("downloading Detoxify %s from %s", variant, MODEL_URLS[variant])
            loaded = torch.hub.load_state_dict_from_url(MODEL_URLS[variant], map_location="cpu", weights_only=True)
        else:
            loaded = _read_checkpoint(checkpoint, "detoxify-multilingual", "Detoxify checkpoint")
        where = checkpoint or MODEL_URLS[variant]
        arch_args, self.class_names = _detoxify_layout(loaded, where)
        if not categories or any(c not in self.class_names for c in categories):
            raise ValueError(f"categories {list(categories)} must be among the model's {self.class_names}")
        self.categories = tuple(categories)
        if tokenizer_dir is not None:
            # detoxify reads the base config and the tokenizer from ``model_type``; a local
            # directory there keeps both off the hub.
            arch_args["model_type"] = str(tokenizer_dir)
        try:
            model, tokenizer = get_model_and_tokenizer(**arch_args, state_dict=loaded["state_dict"])
        except (OSError, ValueError, RuntimeError, AttributeError) as exc:
            raise ValueError(f"cannot build Detoxify's {arch_args['model_name']} from {where}: {exc}") from exc
        missing = sorted(set(model.state_dict()) - set(loaded["state_dict"]))
        if missing:
            raise ValueError(f"Detoxify checkpoint {where} lacks {len(missing)} weights of "
                             f"{arch_args['model_name']}, e.g. {missing[:3]}")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        # A tokenizer saved without model_max_length reports a huge one; RoBERTa models have
        # max_position_embeddings - 2 usable positions (the first two are the padding offset).
        positions = getattr(model.config, "max_position_embeddings", 514) - 2
        self.max_length = min(int(tokenizer.model_max_length), positions)
        self.load_seconds = time.perf_counter() - start
        log.info("loaded %s (%d labels) in %.2f s", self.name, len(self.class_names), self.load_seconds)

    def predict(self, texts: list[str]) -> dict[str, np.ndarray]:
        """Every label's probability, like ``Detoxify.predict``: label -> float32 array (N,)."""
        check_texts(texts, self.name)
        probabilities = np.zeros((len(texts), len(self.class_names)), dtype=np.float32)
        with self._torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = texts[start:start + self.batch_size]
                inputs = self.tokenizer(batch, return_tensors="pt", truncation=True, padding=True,
                                        max_length=self.max_length).to(self.device)
                logits = self.model(**inputs)[0]
                probabilities[start:start + len(batch)] = self._torch.sigmoid(logits).float().cpu().numpy()
        return {label: probabilities[:, i] for i, label in enumerate(self.class_names)}

    def score(self, texts: list[str]) -> np.ndarray:
        per_label = self.predict(texts)
        if not texts:
            return np.zeros(0, dtype=np.float32)
        return np.max(np.stack([per_label[c] for c in self.categories], axis=1), axis=1).astype(np.float32)


def _detoxify_layout(loaded: dict, where) -> tuple[dict, list[str]]:
    """The model arguments and label names of a Detoxify checkpoint, read as detoxify reads them."""
    try:
        config = loaded["config"]
        args = config["arch"]["args"]
        arch_args = {key: args[key] for key in ("model_type", "model_name", "tokenizer_name", "num_classes")}
        classes = list(config["dataset"]["args"]["classes"])
        state_dict = loaded["state_dict"]
    except (KeyError, TypeError) as exc:
        raise ValueError(f"{where} is not a Detoxify checkpoint: it needs config.arch.args "
                         f"(model_type, model_name, tokenizer_name, num_classes), config.dataset.args.classes "
                         f"and state_dict; missing {exc}") from exc
    if not isinstance(state_dict, dict) or not state_dict:
        raise ValueError(f"{where} is not a Detoxify checkpoint: its state_dict is empty")
    if len(classes) != int(arch_args["num_classes"]):
        raise ValueError(f"{where}: {len(classes)} class names for {arch_args['num_classes']} outputs")
    # detoxify standardises the original Jigsaw names the same way
    renamed = {"toxic": "toxicity", "identity_hate": "identity_attack", "severe_toxic": "severe_toxicity"}
    return arch_args, [renamed.get(c, c) for c in classes]


# --------------------------------------------------------------------------------------------
# Image NSFW: LAION's classifier on CLIP ViT-L/14 image embeddings
# --------------------------------------------------------------------------------------------


class ClipL14NSFW:
    """P(nsfw) from LAION's CLIP-based NSFW detector on CLIP ViT-L/14 image embeddings.

    The head (:class:`winnow.shared.models.production_nets.ClipNSFWHead`) takes L2-normalised OpenAI
    ViT-L/14 image embeddings, which ``encoder`` computes: by default
    ``OpenClipEncoder("ViT-L-14", "openai")``, the model DataComp's ``l14`` scores come from.
    Where those embeddings exist already (the embed stage's ``l14_img``),
    :meth:`score_embeddings` skips the encoder.
    """

    name = "clip-l14-nsfw"

    def __init__(self, weights_path: str | Path | None = None, encoder=None, device: str = "cpu") -> None:
        import torch

        from winnow.shared.models.production_nets import CLIP_L14_DIM, ClipNSFWHead

        start = time.perf_counter()
        state = _read_checkpoint(weights_path, "clip-l14-nsfw", "CLIP NSFW head")
        head = ClipNSFWHead()
        _strict_load(head, state, f"CLIP NSFW head {weights_path or PRODUCTION_WEIGHTS['clip-l14-nsfw'].url}")
        self.device = torch.device(device)
        self._head = head.to(self.device).eval()
        self._torch = torch
        if encoder is None:
            from winnow.shared.models.clip import OpenClipEncoder

            encoder = OpenClipEncoder("ViT-L-14", "openai", device=device)
        if getattr(encoder, "dim", None) != CLIP_L14_DIM:
            raise ValueError(f"the NSFW head reads {CLIP_L14_DIM}-d CLIP ViT-L/14 image embeddings; "
                             f"encoder {getattr(encoder, 'name', encoder)!r} gives {getattr(encoder, 'dim', '?')}-d")
        self.encoder = encoder
        self.image_need = getattr(encoder, "image_need", None)  # it sees what its CLIP sees
        self.load_seconds = time.perf_counter() - start
        log.info("loaded %s on %s in %.2f s", self.name, getattr(encoder, "name", "encoder"), self.load_seconds)

    def score_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        """P(nsfw) per row of L2-normalised ViT-L/14 image embeddings, shape (N, 768)."""
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or embeddings.shape[1] != self.encoder.dim:
            raise ValueError(f"{self.name}: embeddings must be (N, {self.encoder.dim}), got {embeddings.shape}")
        with self._torch.inference_mode():
            out = self._head(self._torch.from_numpy(embeddings).to(self.device))
        return out[:, 0].float().cpu().numpy()

    def score(self, images: list[np.ndarray]) -> np.ndarray:
        check_images(images, self.name)
        if not images:
            return np.zeros(0, dtype=np.float32)
        return self.score_embeddings(self.encoder.embed_images(images))


# --------------------------------------------------------------------------------------------
# Faces: SCRFD-10G through insightface
# --------------------------------------------------------------------------------------------


class ScrfdFaceDetector:
    """Faces from SCRFD-10G (``scrfd_10g_bnkps.onnx``) run by insightface's ``SCRFD``.

    ``model_path`` is the ONNX file or the ``antelopev2.zip`` pack holding it; with none,
    insightface downloads the pack into ``~/.insightface/models``. Detection is insightface's:
    the image is scaled to fit 640 x 640 (aspect kept, zero padding), the three strides'
    anchors above ``threshold`` are decoded and NMS at IoU 0.4 keeps the best. Boxes are returned
    normalised by the image's width and height and clipped to [0, 1], best first; keypoints are
    dropped.
    """

    name = "scrfd-10g"
    input_size = (640, 640)
    image_need = ImageNeed(longer=640)  # fitted into 640 x 640

    def __init__(self, model_path: str | Path | None = None, threshold: float = 0.5, device: str = "cpu",
                 nms_threshold: float = 0.4) -> None:
        import onnxruntime as ort
        from insightface.model_zoo.scrfd import SCRFD

        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be in [0, 1], got {threshold}")
        start = time.perf_counter()
        if model_path is None:
            model_path = _insightface_pack_member("antelopev2", SCRFD_MEMBER)
        path = _existing_file(model_path, "SCRFD model")
        if zipfile.is_zipfile(path):
            source, model_file = _zip_member(path, SCRFD_MEMBER), None
        else:
            source, model_file = str(path), str(path)
        providers = ["CPUExecutionProvider"] if device == "cpu" else ["CUDAExecutionProvider", "CPUExecutionProvider"]
        try:
            session = ort.InferenceSession(source, sess_options=onnx_session_options(ort), providers=providers)
        except Exception as exc:  # onnxruntime raises its own InvalidProtobuf, Fail, ... for a bad file
            raise ValueError(f"SCRFD model {path} is not a loadable ONNX model: {exc}") from exc
        _check_scrfd_signature(session, path)
        self._model = SCRFD(model_file=model_file, session=session)
        self._model.prepare(-1 if device == "cpu" else 0, input_size=self.input_size, det_thresh=threshold,
                            nms_thresh=nms_threshold)
        self.threshold = threshold
        self.load_seconds = time.perf_counter() - start
        log.info("loaded %s from %s in %.2f s", self.name, path, self.load_seconds)

    def detect(self, images: list[np.ndarray]) -> list[np.ndarray]:
        check_images(images, self.name)
        out = []
        for image in images:
            height, width = image.shape[:2]
            bgr = np.ascontiguousarray(image[:, :, ::-1])  # insightface takes OpenCV's BGR order
            detections, _ = self._model.detect(bgr, input_size=self.input_size)
            boxes = np.asarray(detections, dtype=np.float32).reshape(-1, 5).copy()
            boxes[:, [0, 2]] /= width
            boxes[:, [1, 3]] /= height
            boxes[:, :4] = np.clip(boxes[:, :4], 0.0, 1.0)
            # anchors cover the zero padding that fits the image into 640 x 640 too; a box that
            # lies wholly there has nothing left after clipping
            out.append(boxes[(boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])])
        return out


def _check_scrfd_signature(session, path) -> None:
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        raise ValueError(f"SCRFD model {path} must have one NCHW image input, has "
                         f"{[(i.name, i.shape) for i in inputs]}")
    if len(outputs) not in (6, 9, 10, 15):
        raise ValueError(f"SCRFD model {path} has {len(outputs)} outputs; SCRFD has 9 (scores, boxes and "
                         f"keypoints for strides 8, 16, 32), or 6, 10 or 15 for its other variants")


def _zip_member(archive: Path, member: str) -> bytes:
    with zipfile.ZipFile(archive) as pack:
        names = [n for n in pack.namelist() if n.rsplit("/", 1)[-1] == member]
        if not names:
            raise ValueError(f"{archive} has no {member}; it holds {pack.namelist()[:10]}")
        return pack.read(names[0])


def _insightface_pack_member(pack: str, member: str) -> Path:
    """Download an insightface model pack as insightface does and find one file in it."""
    from insightface.utils.storage import ensure_available

    root = Path(ensure_available("models", pack))
    found = sorted(root.rglob(member))  # some packs unzip into a nested folder of the same name
    if not found:
        raise FileNotFoundError(f"insightface pack {pack} in {root} has no {member}")
    return found[0]


# --------------------------------------------------------------------------------------------
# Near-duplicates: the ISC21 descriptor
# --------------------------------------------------------------------------------------------


class Isc21Descriptor:
    """256-d copy-detection descriptors from Yokoo's ISC21 ``isc_ft_v107``.

    The network is the ``isc_feature_extractor`` package's: timm's ``tf_efficientnetv2_m_in21ft1k``
    (``features_only``), GeM pooling with p = 1, a bias-free fc to 256, BatchNorm1d, L2
    normalisation (:class:`winnow.shared.models.production_nets.IscNet`). Preprocessing is the
    package's: bilinear resize to ``input_size`` x ``input_size`` (512, stored in the checkpoint's
    ``args``), aspect ratio not kept, then the backbone's mean and std (0.5, 0.5, 0.5). The
    checkpoint is the training script's (``arch``, ``args``, ``state_dict`` with DataParallel's
    ``module.`` prefix; ``optimizer`` and ``epoch`` are ignored). Two images are near-duplicates
    at cosine similarity >= 0.604169, DataComp's threshold.
    """

    name = "isc21-ft-v107"
    threshold = ISC21_THRESHOLD
    default_arch = "tf_efficientnetv2_m_in21ft1k"

    def __init__(self, checkpoint: str | Path | None = None, device: str = "cpu", batch_size: int = 8) -> None:
        import argparse

        import timm
        import torch

        from winnow.shared.models.production_nets import IscNet

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        start = time.perf_counter()
        where = checkpoint or PRODUCTION_WEIGHTS["isc21-ft-v107"].url
        # The training script pickles its argparse.Namespace beside the weights.
        loaded = _read_checkpoint(checkpoint, "isc21-ft-v107", "ISC21 checkpoint", safe_globals=(argparse.Namespace,))
        state = loaded.get("state_dict")
        if not isinstance(state, dict) or "fc.weight" not in {k.removeprefix("module.") for k in state}:
            raise ValueError(f"{where} is not an ISC21 checkpoint: it needs a state_dict with backbone.*, "
                             f"fc.weight and bn.* (found keys {sorted(loaded)[:8]})")
        state = {key.removeprefix("module."): value for key, value in state.items()}
        arch = loaded.get("arch") or self.default_arch
        self.input_size = int(getattr(loaded.get("args"), "input_size", 512))
        self.image_need = ImageNeed(shorter=self.input_size)  # squashed to input_size x input_size
        try:
            with warnings.catch_warnings():  # the checkpoint's 2021 name; timm maps it to today's
                warnings.filterwarnings("ignore", message="Mapping deprecated model name")
                backbone = timm.create_model(arch, features_only=True, pretrained=False)
        except Exception as exc:  # timm raises RuntimeError for an unknown name
            raise ValueError(f"{where} names backbone {arch!r}, which timm cannot build: {exc}") from exc
        net = IscNet(backbone, fc_dim=int(state["fc.weight"].shape[0]))
        _strict_load(net, state, f"ISC21 checkpoint {where}")
        self.dim = int(state["fc.weight"].shape[0])
        config = getattr(backbone, "pretrained_cfg", None) or backbone.default_cfg
        self._mean = np.asarray(config["mean"], dtype=np.float32)
        self._std = np.asarray(config["std"], dtype=np.float32)
        self.device = torch.device(device)
        self._net = net.to(self.device).eval()
        self._torch = torch
        self.batch_size = batch_size
        self.load_seconds = time.perf_counter() - start
        log.info("loaded %s (%s, %d px) in %.2f s", self.name, arch, self.input_size, self.load_seconds)

    def _input(self, image: np.ndarray) -> np.ndarray:
        from PIL import Image

        side = self.input_size
        resized = Image.fromarray(image).resize((side, side), resample=Image.Resampling.BILINEAR)
        pixels = np.asarray(resized, dtype=np.float32) / 255.0
        return ((pixels - self._mean) / self._std).transpose(2, 0, 1)

    def describe(self, images: list[np.ndarray]) -> np.ndarray:
        check_images(images, self.name)
        out = np.zeros((len(images), self.dim), dtype=np.float32)
        with self._torch.inference_mode():
            for start in range(0, len(images), self.batch_size):
                chunk = images[start:start + self.batch_size]
                batch = self._torch.from_numpy(np.stack([self._input(image) for image in chunk]))
                out[start:start + len(chunk)] = self._net(batch.to(self.device)).float().cpu().numpy()
        return out
