"""The production loaders (``winnow.shared.models.production``) on checkpoints the tests make themselves.

The real weights need the internet, so each test builds a file of the same architecture and
format as the published one (random or hand-set weights, tiny where the architecture allows),
loads it through the loader, and checks the outputs against a reference computed here,
independently of the loader: a Detoxify checkpoint dict around a 2-layer XLM-RoBERTa with a
local tokenizer; LAION's NSFW head on a small CLIP with 768-d embeddings; an ONNX model with
SCRFD's input and nine outputs; the real EfficientNetV2-M ISC21 network in the training
script's checkpoint format.
"""

from __future__ import annotations

import argparse
import json
import warnings
import zipfile

import numpy as np
import pytest
import torch
from skimage import data as skimage_data

from winnow.shared.models.base import FaceDetector, ImageNSFW, NearDuplicateDescriptor, TextToxicity
from winnow.shared.models.production import (
    PRODUCTION_WEIGHTS,
    SCRFD_MEMBER,
    TOXICITY_CATEGORIES,
    ClipL14NSFW,
    DetoxifyToxicity,
    Isc21Descriptor,
    ScrfdFaceDetector,
)


@pytest.fixture(scope="module")
def photos() -> list[np.ndarray]:
    """Two real photos: the astronaut (512 x 512) and the cat (300 x 451)."""
    return [skimage_data.astronaut(), skimage_data.chelsea()]


def _corrupt(path):
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    return path


def test_weights_table_names_a_url_and_file_for_every_model():
    for name in ("detoxify-multilingual", "clip-l14-nsfw", "scrfd-10g", "isc21-ft-v107"):
        url, filename, sha256 = PRODUCTION_WEIGHTS[name]
        assert url.startswith("https://") and filename and (sha256 is None or len(sha256) == 64)


# ------------------------------------------------------------------------------ Detoxify

DETOXIFY_CLASSES = ["toxicity", "severe_toxicity", "obscene", "identity_attack", "insult", "threat",
                    "sexual_explicit", "male", "female", "homosexual_gay_or_lesbian", "christian", "jewish",
                    "muslim", "black", "white", "psychiatric_or_mental_illness"]


@pytest.fixture(scope="module")
def detoxify_files(tmp_path_factory):
    """A Detoxify multilingual checkpoint of a 2-layer, 32-wide XLM-RoBERTa, and its tokenizer dir."""
    from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification, XLMRobertaTokenizer

    root = tmp_path_factory.mktemp("detoxify")
    tokenizer_dir = root / "xlm-roberta-base"
    pieces = ["▁" + w for w in "a photo of the cat dog in park ein hund im toxic word".split()]
    pieces += list("abcdefghijklmnopqrstuvwxyz▁")
    vocab = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    vocab += [(piece, -float(i)) for i, piece in enumerate(pieces)] + [("<mask>", 0.0)]
    tokenizer = XLMRobertaTokenizer(vocab=vocab)
    tokenizer.save_pretrained(tokenizer_dir)
    # what `winnow models fetch` writes from xlm-roberta-base: config.json and tokenizer.json only,
    # so no model_max_length either (the loader caps the length itself)
    (tokenizer_dir / "tokenizer_config.json").unlink()
    config = XLMRobertaConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                              intermediate_size=64, max_position_embeddings=34, pad_token_id=1, bos_token_id=0,
                              eos_token_id=2)
    config.save_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    model = XLMRobertaForSequenceClassification(
        XLMRobertaConfig.from_pretrained(tokenizer_dir, num_labels=len(DETOXIFY_CLASSES))).eval()
    with torch.no_grad():  # distinct per-label levels: identity labels score highest
        model.classifier.out_proj.bias.copy_(torch.linspace(-3.0, 3.0, len(DETOXIFY_CLASSES)))
    checkpoint = {
        "config": {
            "arch": {"args": {"model_type": "xlm-roberta-base", "model_name": "XLMRobertaForSequenceClassification",
                              "tokenizer_name": "XLMRobertaTokenizer", "num_classes": len(DETOXIFY_CLASSES)}},
            "dataset": {"args": {"classes": DETOXIFY_CLASSES}},
        },
        "state_dict": model.state_dict(),
    }
    path = root / "multilingual_debiased-tiny.ckpt"
    torch.save(checkpoint, path)
    return path, tokenizer_dir, model, checkpoint


def test_detoxify_scores_with_the_checkpoint_weights(detoxify_files):
    from transformers import XLMRobertaTokenizer

    path, tokenizer_dir, reference, _ = detoxify_files
    toxicity = DetoxifyToxicity(checkpoint=path, tokenizer_dir=tokenizer_dir)
    assert isinstance(toxicity, TextToxicity) and toxicity.name == "detoxify-multilingual"
    assert toxicity.class_names == DETOXIFY_CLASSES
    assert toxicity.max_length == 32  # max_position_embeddings - 2, as the tokenizer gave none

    texts = ["a photo of the cat", "", "ein hund im park", "toxic word " * 200]  # the last must be truncated
    per_label = toxicity.predict(texts)
    scores = toxicity.score(texts)
    assert scores.shape == (4,) and scores.dtype == np.float32
    assert np.all((scores >= 0) & (scores <= 1))
    seven = np.max([per_label[c] for c in TOXICITY_CATEGORIES], axis=0)
    every = np.max([per_label[c] for c in DETOXIFY_CLASSES], axis=0)
    np.testing.assert_allclose(scores, seven)
    assert np.all(every > scores)  # identity-mention heads are left out of the score

    tokenizer = XLMRobertaTokenizer.from_pretrained(tokenizer_dir)
    with torch.no_grad():
        inputs = tokenizer(texts, return_tensors="pt", truncation=True, padding=True, max_length=32)
        expected = torch.sigmoid(reference(**inputs).logits).numpy()
    np.testing.assert_allclose(np.stack([per_label[c] for c in DETOXIFY_CLASSES], axis=1), expected, atol=1e-5)
    assert toxicity.score([]).shape == (0,)

    head_only = DetoxifyToxicity(checkpoint=path, tokenizer_dir=tokenizer_dir, categories=("toxicity",))
    np.testing.assert_allclose(head_only.score(texts), per_label["toxicity"], atol=1e-6)


def test_detoxify_refuses_bad_files(detoxify_files, tmp_path):
    path, tokenizer_dir, _, checkpoint = detoxify_files
    with pytest.raises(FileNotFoundError, match="nowhere.ckpt"):
        DetoxifyToxicity(checkpoint=tmp_path / "nowhere.ckpt", tokenizer_dir=tokenizer_dir)
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        DetoxifyToxicity(checkpoint=_corrupt(tmp_path / "corrupt.ckpt"), tokenizer_dir=tokenizer_dir)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        DetoxifyToxicity(checkpoint=truncated, tokenizer_dir=tokenizer_dir)

    weights_only = tmp_path / "weights_only.ckpt"
    torch.save(checkpoint["state_dict"], weights_only)
    with pytest.raises(ValueError, match="not a Detoxify checkpoint"):
        DetoxifyToxicity(checkpoint=weights_only, tokenizer_dir=tokenizer_dir)
    headless = tmp_path / "headless.ckpt"
    torch.save({**checkpoint, "state_dict": {k: v for k, v in checkpoint["state_dict"].items()
                                             if not k.startswith("classifier.")}}, headless)
    with pytest.raises(ValueError, match="lacks 4 weights"):
        DetoxifyToxicity(checkpoint=headless, tokenizer_dir=tokenizer_dir)
    with pytest.raises(ValueError, match="categories"):
        DetoxifyToxicity(checkpoint=path, tokenizer_dir=tokenizer_dir, categories=("rudeness",))
    with pytest.raises(FileNotFoundError, match="tokenizer directory"):
        DetoxifyToxicity(checkpoint=path, tokenizer_dir=tmp_path / "no-tokenizer")


# ------------------------------------------------------------------------------ CLIP L/14 NSFW


@pytest.fixture(scope="module")
def nsfw_head_file(tmp_path_factory):
    """LAION's L/14 head layout (NSFWModel_L14's state dict) with random weights."""
    g = torch.Generator().manual_seed(0)
    state = {"norm.mean": 0.01 * torch.randn(768, generator=g), "norm.variance": 0.5 + torch.rand(768, generator=g)}
    for i, (fan_in, fan_out) in enumerate([(768, 64), (64, 512), (512, 256), (256, 1)], start=1):
        state[f"linear_{i}.weight"] = torch.randn(fan_out, fan_in, generator=g) / fan_in ** 0.5
        state[f"linear_{i}.bias"] = 0.1 * torch.randn(fan_out, generator=g)
    path = tmp_path_factory.mktemp("nsfw") / "clip_ViT-L-14_openai_binary_nsfw_head.pth"
    torch.save(state, path)
    return path, {k: v.numpy().astype(np.float64) for k, v in state.items()}


@pytest.fixture(scope="module")
def l14_standin(tmp_path_factory):
    """A small open_clip model whose embeddings are 768-d, as ViT-L/14's are."""
    import open_clip

    from winnow.shared.models.clip import OpenClipEncoder

    config_dir = tmp_path_factory.mktemp("clip_configs")
    (config_dir / "winnow-test-768d-ViT.json").write_text(json.dumps({
        "embed_dim": 768,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8, "head_width": 32},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
    }))
    open_clip.add_model_config(config_dir)
    torch.manual_seed(0)
    return OpenClipEncoder("winnow-test-768d-ViT")


def _laion_head(x: np.ndarray, w: dict) -> np.ndarray:
    """NSFWModel_L14.forward in numpy."""
    relu = lambda v: np.maximum(v, 0.0)  # noqa: E731
    x = (x - w["norm.mean"]) / (np.sqrt(w["norm.variance"]) + 1e-10)
    for i in (1, 2, 3):
        x = relu(x @ w[f"linear_{i}.weight"].T + w[f"linear_{i}.bias"])
    return 1.0 / (1.0 + np.exp(-(x @ w["linear_4.weight"].T + w["linear_4.bias"])[:, 0]))


def test_clip_nsfw_scores_images_through_the_encoder(nsfw_head_file, l14_standin, photos):
    path, weights = nsfw_head_file
    nsfw = ClipL14NSFW(path, encoder=l14_standin)
    assert isinstance(nsfw, ImageNSFW)
    scores = nsfw.score(photos)
    assert scores.shape == (2,) and scores.dtype == np.float32
    assert np.all((scores >= 0) & (scores <= 1))
    np.testing.assert_array_equal(scores, nsfw.score(photos))
    expected = _laion_head(l14_standin.embed_images(photos).astype(np.float64), weights)
    np.testing.assert_allclose(scores, expected, rtol=1e-4, atol=1e-6)
    assert nsfw.score([]).shape == (0,)
    with pytest.raises(ValueError, match="768"):
        nsfw.score_embeddings(np.zeros((2, 512), np.float32))


def test_clip_nsfw_refuses_bad_files_and_encoders(nsfw_head_file, l14_standin, tmp_path):
    from winnow.shared.models.clip import OpenClipEncoder

    path, _ = nsfw_head_file
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        ClipL14NSFW(tmp_path / "missing.pth", encoder=l14_standin)
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        ClipL14NSFW(_corrupt(tmp_path / "corrupt.pth"), encoder=l14_standin)
    b32_layout = tmp_path / "b32_head.pth"  # LAION's ViT-B/32 head: 512 -> 32 -> 32 -> 1
    torch.save({"norm.mean": torch.zeros(512), "norm.variance": torch.ones(512),
                "linear_1.weight": torch.zeros(32, 512), "linear_1.bias": torch.zeros(32),
                "linear_2.weight": torch.zeros(32, 32), "linear_2.bias": torch.zeros(32),
                "linear_3.weight": torch.zeros(1, 32), "linear_3.bias": torch.zeros(1)}, b32_layout)
    with pytest.raises(ValueError, match="does not fit"):
        ClipL14NSFW(b32_layout, encoder=l14_standin)
    with pytest.raises(ValueError, match="768-d"):
        ClipL14NSFW(path, encoder=OpenClipEncoder("winnow-tiny-ViT"))  # 128-d


# ------------------------------------------------------------------------------ SCRFD

_SCRFD_STRIDES = (8, 16, 32)


def _scrfd_like_onnx(path, score_logits=(-10.0, -10.0, 10.0), distance=1.0) -> None:
    """An ONNX model with SCRFD-10G-bnkps' interface: input ``input.1`` (1, 3, H, W); outputs
    scores (K_s, 1) for strides 8, 16, 32, then box distances (K_s, 4), then keypoints (K_s, 10),
    K_s = (H/s) * (W/s) * 2 anchors. The heads are 1x1 convolutions with zero weights, so every
    anchor of stride s scores sigmoid(score_logits[s]) and gets a box ``distance * s`` pixels
    out from its centre on each side."""
    from torch import nn

    class TinyScrfd(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, stride=8, padding=1)
            self.down = nn.ModuleList([nn.Identity(), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                                       nn.Conv2d(8, 8, 3, stride=2, padding=1)])
            self.cls = nn.ModuleList([nn.Conv2d(8, 2, 1) for _ in _SCRFD_STRIDES])
            self.box = nn.ModuleList([nn.Conv2d(8, 2 * 4, 1) for _ in _SCRFD_STRIDES])
            self.kps = nn.ModuleList([nn.Conv2d(8, 2 * 10, 1) for _ in _SCRFD_STRIDES])

        def forward(self, x):
            feature, features = self.stem(x), []
            for down in self.down:
                feature = down(feature)
                features.append(feature)

            def anchors(t, width):  # (1, A*C, h, w) -> (h*w*A, C), anchors fastest, as SCRFD's export
                return t.permute(0, 2, 3, 1).reshape(-1, width)

            scores = [anchors(torch.sigmoid(head(f)), 1) for head, f in zip(self.cls, features)]
            boxes = [anchors(head(f), 4) for head, f in zip(self.box, features)]
            points = [anchors(head(f), 10) for head, f in zip(self.kps, features)]
            return (*scores, *boxes, *points)

    model = TinyScrfd().eval()
    with torch.no_grad():
        for i, logit in enumerate(score_logits):
            for head, bias in ((model.cls[i], logit), (model.box[i], distance), (model.kps[i], 0.0)):
                head.weight.zero_()
                head.bias.fill_(bias)
    names = [f"{kind}_{s}" for kind in ("score", "bbox", "kps") for s in _SCRFD_STRIDES]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(model, (torch.zeros(1, 3, 64, 64),), str(path), input_names=["input.1"],
                          output_names=names, dynamic_axes={"input.1": {2: "height", 3: "width"}},
                          opset_version=17, dynamo=False)


@pytest.fixture(scope="module")
def scrfd_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("scrfd") / SCRFD_MEMBER
    _scrfd_like_onnx(path)
    return path


def _expected_stride32_boxes() -> np.ndarray:
    """For a square image: one 64 x 64 px box (in the 640 input) per stride-32 anchor, normalised."""
    centres = np.arange(20) * 32.0
    cx, cy = np.meshgrid(centres, centres)
    boxes = np.stack([cx - 32, cy - 32, cx + 32, cy + 32], axis=-1).reshape(-1, 4) / 640.0
    return np.clip(boxes, 0.0, 1.0)


def _rows(boxes: np.ndarray) -> np.ndarray:
    return boxes[np.lexsort(boxes.T[::-1])]


def test_scrfd_decodes_and_normalises_boxes(scrfd_file, photos):
    detector = ScrfdFaceDetector(scrfd_file)
    assert isinstance(detector, FaceDetector) and detector.name == "scrfd-10g"
    astronaut, cat = detector.detect(photos)
    for boxes in (astronaut, cat):
        assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 5
        assert np.all((boxes[:, :4] >= 0) & (boxes[:, :4] <= 1))
        assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
        np.testing.assert_allclose(boxes[:, 4], 1 / (1 + np.exp(-10.0)), rtol=1e-6)
    # 512 x 512 fills the 640 input exactly: the 400 stride-32 anchors (two per cell; NMS keeps one)
    assert astronaut.shape == (400, 5)
    np.testing.assert_allclose(_rows(astronaut[:, :4]), _rows(_expected_stride32_boxes()), atol=1e-5)
    # 300 x 451 becomes 425 x 640 plus padding: boxes wholly in the padding are dropped
    assert 0 < len(cat) < 400

    strict = ScrfdFaceDetector(scrfd_file, threshold=0.99999)
    assert [b.shape for b in strict.detect(photos)] == [(0, 5), (0, 5)]
    assert detector.detect([]) == []


def test_scrfd_reads_the_model_out_of_its_pack(scrfd_file, photos, tmp_path):
    pack = tmp_path / "antelopev2.zip"
    with zipfile.ZipFile(pack, "w") as archive:
        archive.write(scrfd_file, f"antelopev2/{SCRFD_MEMBER}")
        archive.writestr("antelopev2/glintr100.onnx", b"not this one")
    from_pack = ScrfdFaceDetector(pack).detect(photos[:1])[0]
    np.testing.assert_array_equal(from_pack, ScrfdFaceDetector(scrfd_file).detect(photos[:1])[0])


def test_scrfd_refuses_bad_files(tmp_path):
    from torch import nn

    with pytest.raises(FileNotFoundError, match="absent.onnx"):
        ScrfdFaceDetector(tmp_path / "absent.onnx")
    with pytest.raises(ValueError, match="not a loadable ONNX model"):
        ScrfdFaceDetector(_corrupt(tmp_path / "corrupt.onnx"))
    empty_pack = tmp_path / "buffalo.zip"
    with zipfile.ZipFile(empty_pack, "w") as archive:
        archive.writestr("buffalo/w600k_r50.onnx", b"")
    with pytest.raises(ValueError, match=SCRFD_MEMBER):
        ScrfdFaceDetector(empty_pack)
    classifier = tmp_path / "classifier.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()),
                          (torch.zeros(1, 3, 32, 32),), str(classifier), input_names=["input.1"], dynamo=False)
    with pytest.raises(ValueError, match="1 outputs"):
        ScrfdFaceDetector(classifier)
    with pytest.raises(ValueError, match="threshold"):
        ScrfdFaceDetector(classifier, threshold=1.5)


# ------------------------------------------------------------------------------ ISC21


def _isc_preprocess():
    """The isc_feature_extractor package's preprocessing, in torchvision as it writes it."""
    from torchvision import transforms

    return transforms.Compose([transforms.Resize((512, 512)), transforms.ToTensor(),
                               transforms.Normalize(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))])


@pytest.fixture(scope="module")
def isc_checkpoint(tmp_path_factory, photos):
    """isc_ft_v107's checkpoint layout (the training script's save_checkpoint dict, DataParallel
    ``module.`` keys) around a randomly initialised EfficientNetV2-M with GeM, fc 512 -> 256, BN."""
    import timm
    from PIL import Image
    from torch import nn

    torch.manual_seed(0)
    with warnings.catch_warnings():  # timm maps the checkpoint's 2021 name to today's, with a warning
        warnings.simplefilter("ignore")
        backbone = timm.create_model("tf_efficientnetv2_m_in21ft1k", features_only=True, pretrained=False)
    # With BatchNorm's initial statistics a random EfficientNet's activations on photos grow to
    # ~1e5 and rounding differences (batch size, kernel choice) are amplified chaotically;
    # statistics taken from the test photos (data-dependent init) keep the network well
    # conditioned, so the loader and the reference agree to float rounding.
    for module in backbone.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None
    with torch.no_grad():  # at half size: four times cheaper, and conditions the network as well
        batch = torch.stack([_isc_preprocess()(Image.fromarray(photo)) for photo in photos])
        backbone.train()(torch.nn.functional.interpolate(batch, size=256, mode="bilinear"))
    backbone.eval()
    fc = nn.Linear(backbone.feature_info.info[-1]["num_chs"], 256, bias=False)
    bn = nn.BatchNorm1d(256).eval()
    with torch.no_grad():
        bn.running_mean.normal_(0, 0.1)
        bn.running_var.uniform_(0.5, 1.5)
    state = {f"module.backbone.{k}": v for k, v in backbone.state_dict().items()}
    state.update({f"module.fc.{k}": v for k, v in fc.state_dict().items()})
    state.update({f"module.bn.{k}": v for k, v in bn.state_dict().items()})
    args = argparse.Namespace(arch="tf_efficientnetv2_m_in21ft1k", input_size=512, gem_p=1.0, gem_eval_p=1.0)
    path = tmp_path_factory.mktemp("isc") / "isc_ft_v107.pth.tar"
    torch.save({"epoch": 10, "arch": args.arch, "state_dict": state, "args": args}, path)
    return path, (backbone, fc, bn)


def test_isc21_describes_like_the_reference_recipe(isc_checkpoint, photos):
    from PIL import Image

    path, (backbone, fc, bn) = isc_checkpoint
    descriptor = Isc21Descriptor(path)
    assert isinstance(descriptor, NearDuplicateDescriptor)
    assert (descriptor.dim, descriptor.threshold, descriptor.input_size) == (256, 0.604169, 512)
    vectors = descriptor.describe(photos)
    assert vectors.shape == (2, 256) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)

    # the package's forward pass written out: backbone, gem(x, p=1), fc, bn, L2 normalisation
    with torch.no_grad():
        x = _isc_preprocess()(Image.fromarray(photos[1])).unsqueeze(0)
        pooled = backbone(x)[-1].clamp(min=1e-6).mean(dim=(2, 3))
        expected = torch.nn.functional.normalize(bn(fc(pooled))).numpy()
    np.testing.assert_allclose(vectors[1:], expected, atol=1e-5)
    assert descriptor.describe([]).shape == (0, 256)


def test_isc21_refuses_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="gone.pth.tar"):
        Isc21Descriptor(tmp_path / "gone.pth.tar")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        Isc21Descriptor(_corrupt(tmp_path / "corrupt.pth.tar"))
    no_weights = tmp_path / "no_weights.pth.tar"
    torch.save({"epoch": 1, "arch": "tf_efficientnetv2_m_in21ft1k"}, no_weights)
    with pytest.raises(ValueError, match="not an ISC21 checkpoint"):
        Isc21Descriptor(no_weights)
    head_only = tmp_path / "head_only.pth.tar"
    torch.save({"state_dict": {"module.fc.weight": torch.zeros(256, 512)}}, head_only)
    with pytest.raises(ValueError, match="does not fit"):
        Isc21Descriptor(head_only)
    unknown_arch = tmp_path / "unknown_arch.pth.tar"
    torch.save({"arch": "no_such_net", "state_dict": {"fc.weight": torch.zeros(256, 512)}}, unknown_arch)
    with pytest.raises(ValueError, match="no_such_net"):
        Isc21Descriptor(unknown_arch)
