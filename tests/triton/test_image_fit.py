"""Fitted images: the client's fit is torchvision's, and CLIP answers over Triton as in-process.

A CLIP image tower declares its encoder's ``image_fit``; the remote client then sends each image
resized and centre-cropped to the model's input size instead of the original. These tests check
that this changes no embedding: ``contract.fit_image`` is pixel for pixel the Resize and
CenterCrop that open_clip's preprocessing begins with, the served tiny CLIP gives bit-identical
embeddings for real images of many sizes and aspect ratios, and the original frames an older
client sends are still answered the same.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

from winnow.shared.triton import contract
from winnow.shared.triton.contract import ModelKind
from winnow.shared.triton.remote import RemoteClipEncoder
from winnow.ops.triton.repository import ModelSpec, clip_model_specs, write_model_repository
from winnow.ops.triton.server import TritonServer, TritonServerError
from tests.conftest import REPO_ROOT
from tests.infra.images import openclipart_images, skimage_photos

CLIP_FACTORY = "winnow.shared.models.clip:OpenClipEncoder"

# (height, width) crops beside the whole photos: squares at and around the fit, thin strips,
# a single pixel, and sides whose scaled length or crop corner needs torchvision's rounding
EDGE_SHAPES = [(1, 1), (64, 64), (63, 64), (64, 65), (65, 65), (1, 300), (300, 1), (7, 500), (500, 7),
               (97, 131), (131, 97), (200, 201), (333, 512), (512, 333), (45, 46)]


def _load_rgb(path) -> np.ndarray | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as image:
                return np.asarray(image.convert("RGB"))
    except Exception:  # noqa: BLE001 - a broken clip art is skipped
        return None


@pytest.fixture(scope="module")
def real_images() -> list[np.ndarray]:
    """Real photos and clip art at their own sizes (up to 1411 px), and crops of odd shapes."""
    photos = [image for image in map(_load_rgb, skimage_photos()) if image is not None]
    clipart = [image for image in map(_load_rgb, openclipart_images(limit=12)) if image is not None]
    widest = max(photos, key=lambda image: image.shape[0] * image.shape[1])
    crops = [np.ascontiguousarray(widest[:height, :width]) for height, width in EDGE_SHAPES]
    return [*photos, *clipart[:8], *crops]


def _torchvision_fit(image: np.ndarray, size: int) -> np.ndarray:
    transforms = pytest.importorskip("torchvision.transforms")
    steps = transforms.Compose([transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC),
                                transforms.CenterCrop(size)])
    return np.asarray(steps(Image.fromarray(image)))


@pytest.mark.parametrize("size", [64, 224])
def test_fit_image_is_torchvision_resize_and_center_crop(real_images, size):
    shapes = {image.shape for image in real_images}
    assert len(shapes) > 20 and any(h > w for h, w, _ in shapes) and any(h < w for h, w, _ in shapes)
    for image in real_images:
        fitted = contract.fit_image(image, size)
        assert fitted.shape == (size, size, 3) and fitted.dtype == np.uint8
        np.testing.assert_array_equal(fitted, _torchvision_fit(image, size), err_msg=f"image {image.shape}")
        # an image of the model's size goes through the fit, and torchvision's steps, unchanged
        np.testing.assert_array_equal(contract.fit_image(fitted, size), fitted)
        np.testing.assert_array_equal(_torchvision_fit(fitted, size), fitted)


def test_fit_image_refuses_non_rgb():
    with pytest.raises(ValueError, match="uint8"):
        contract.fit_image(np.zeros((4, 4), np.uint8), 8)


def test_open_clip_preprocessing_begins_with_the_fit(tiny_clip_checkpoint):
    transforms = pytest.importorskip("torchvision.transforms")
    from winnow.shared.models.clip import OpenClipEncoder, leading_fit

    assert OpenClipEncoder("winnow-tiny-ViT", tiny_clip_checkpoint).image_fit == 64
    bicubic = transforms.InterpolationMode.BICUBIC
    rest = [transforms.ToTensor()]
    assert leading_fit(transforms.Compose([transforms.Resize([224], bicubic), transforms.CenterCrop(224), *rest])) == 224
    for steps in (
        [transforms.Resize((224, 224), bicubic), transforms.CenterCrop(224)],  # open_clip's "squash"
        [transforms.Resize(224, transforms.InterpolationMode.BILINEAR), transforms.CenterCrop(224)],
        [transforms.Resize(224, bicubic, max_size=300), transforms.CenterCrop(224)],
        [transforms.Resize(256, bicubic), transforms.CenterCrop(224)],
        [transforms.CenterCrop(224), transforms.Resize(224, bicubic)],
        [transforms.Resize(224, bicubic)],
    ):
        assert leading_fit(transforms.Compose([*steps, *rest])) is None, steps
    assert leading_fit(lambda image: image) is None


@pytest.fixture(scope="module")
def fitted_clip(triton_repository, triton_client, tiny_clip_checkpoint):
    """The tiny CLIP in-process, and served as ``clip_fit`` with its image fit declared."""
    from winnow.shared.models.clip import OpenClipEncoder

    local = OpenClipEncoder("winnow-tiny-ViT", tiny_clip_checkpoint)
    specs = clip_model_specs("clip_fit", CLIP_FACTORY, dim=local.dim, image_fit=local.image_fit,
                             factory_kwargs={"arch": "winnow-tiny-ViT", "pretrained": tiny_clip_checkpoint})
    write_model_repository(triton_repository, specs)  # beside the session's models, loaded here only
    for spec in specs:
        triton_client.load_model(spec.name, timeout=240)
    return local


def test_clip_over_triton_equals_in_process_bit_for_bit(fitted_clip, triton_client, real_images, monkeypatch):
    remote = RemoteClipEncoder(triton_client, "clip_fit_image", "clip_fit_text")
    # one request, so the server runs the batch the encoder runs in-process
    assert len(real_images) <= triton_client.model_config("clip_fit_image")["max_batch_size"]
    sent = []
    encode = contract.encode_image
    monkeypatch.setattr(contract, "encode_image", lambda image: sent.append(image.shape) or encode(image))

    embeddings = remote.embed_images(real_images)

    assert sent == [(64, 64, 3)] * len(real_images)
    expected = fitted_clip.embed_images(real_images)
    assert embeddings.dtype == np.float32 and embeddings.shape == expected.shape == (len(real_images), 128)
    np.testing.assert_array_equal(embeddings, expected)


def test_fitted_clip_still_answers_original_frames(fitted_clip, triton_client, real_images):
    """What an older client sends, the original frames, gives the same embeddings as the fitted ones."""
    rows, lengths = contract.pack_rows([contract.encode_image(image) for image in real_images])
    answer = triton_client.infer("clip_fit_image", {contract.IMAGE: rows, contract.IMAGE_LENGTH: lengths},
                                 [contract.EMBEDDING])
    np.testing.assert_array_equal(answer[contract.EMBEDDING], fitted_clip.embed_images(real_images))


def test_a_model_that_does_not_fit_as_declared_refuses_to_load(triton_install, tmp_path):
    """Its own server: a model that fails to load leaves a server not ready."""
    misfits = [ModelSpec("misfit_clip", CLIP_FACTORY, ModelKind.CLIP_IMAGE, dim=128, image_fit=32,
                         factory_kwargs={"arch": "winnow-tiny-ViT"}),
               ModelSpec("misfit_toy", "tests.triton.toy_models:StatsClip", ModelKind.CLIP_IMAGE, dim=8, image_fit=64)]
    repository = write_model_repository(tmp_path / "repository", misfits)
    for spec, reason in zip(misfits, ["but the model fits images to 64", "but the model does not fit images"],
                            strict=True):
        server = TritonServer(repository, tmp_path / spec.name, install=triton_install, models=[spec.name],
                              python_path=[REPO_ROOT])
        with pytest.raises(TritonServerError, match=f"declares image fit {spec.image_fit}, {reason}"):
            server.start(timeout=240)
