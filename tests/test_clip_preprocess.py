"""CLIP preprocessing without transformers vs transformers' own ``CLIPImageProcessor``.

The edge runs ``models.embedders.clip_preprocess`` (numpy + OpenCV only); the model was
trained on pixels made by ``CLIPImageProcessor`` (Pillow bicubic resize of the shortest
side to 224, centre crop, /255, CLIP's mean/std). On real face photos of several sizes
the two must give the same tensor. transformers comes with the ``export`` extra, which
the test setup installs: no skip when it is missing.
"""

from __future__ import annotations

import cv2
import numpy as np
import PIL
import pytest
from PIL import Image
from transformers import CLIPImageProcessor

from facewire.models.embedders import CLIP_MEAN, CLIP_STD, clip_preprocess, pil_bicubic_resize
from facewire.models.files import list_photos
from tests.conftest import DATASET

PIL_MAJOR = int(PIL.__version__.split(".")[0])

# (height, width) of the crops: the pipeline's own 224 × 224, the ORL originals
# (92 × 112: small, non-square, upscaled), tiny, large, off-by-one and odd sizes,
# landscape, and a tall one.
SIZES = [
    (224, 224),
    (112, 92),
    (60, 50),
    (225, 224),
    (224, 400),
    (300, 250),
    (333, 501),
    (640, 520),
    (1000, 760),
    (1000, 300),  # tall and shrunk: the one case where Pillow's pass order matters
]


def photos(n: int = 6) -> list[np.ndarray]:
    """Real face photos spread over the sample's people (BGR, 92 × 112)."""
    files = list_photos(DATASET)
    faces = [f for f in files if f.parent.name.startswith("ORL") or "ORL" in f.name]
    picked = faces[:: max(1, len(faces) // n)][:n]
    out = [cv2.imread(str(f), cv2.IMREAD_COLOR) for f in picked]
    assert len(out) == n and all(o is not None for o in out)
    return out


def crops() -> list[tuple[str, np.ndarray]]:
    """Face crops of every size in SIZES: resized photos and cut-outs of them."""
    out = []
    for i, photo in enumerate(photos()):
        for h, w in SIZES:
            if (h, w) == photo.shape[:2]:
                crop = photo
            else:
                # cv2 makes the test crops; which resizer made them does not matter here
                interp = cv2.INTER_AREA if h < photo.shape[0] else cv2.INTER_LINEAR
                crop = cv2.resize(photo, (w, h), interpolation=interp)
            out.append((f"photo{i}-{h}x{w}", crop))
        # an off-centre cut-out of the face at the photo's own resolution
        out.append((f"photo{i}-cut", photo[10:90, 5:77].copy()))
    return out


def reference(processor: CLIPImageProcessor, bgr: np.ndarray) -> np.ndarray:
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    return processor(images=rgb, return_tensors="np")["pixel_values"][0]


def tall_shrink(h: int, w: int) -> bool:
    """Pillow < 13 resizes width first always; 13+ does height first in this case."""
    nh = int(224 * h / w) if w <= h else 224
    nw = 224 if w <= h else int(224 * w / h)
    return (h - nh) > 0 and (h - nh) > 2 * (w - nw)


@pytest.fixture(scope="module")
def processor() -> CLIPImageProcessor:
    proc = CLIPImageProcessor()  # its defaults are CLIP's (openai/clip-vit-base-patch32)
    assert np.allclose(proc.image_mean, CLIP_MEAN) and np.allclose(proc.image_std, CLIP_STD)
    assert proc.size == {"shortest_edge": 224} and proc.crop_size == {"height": 224, "width": 224}
    return proc


def test_pixel_tensors_match_clip_image_processor(processor):
    worst, tall = 0.0, 0.0
    all_crops = crops()
    for name, crop in all_crops:
        ours = clip_preprocess([crop])[0]
        theirs = reference(processor, crop)
        assert ours.shape == theirs.shape == (3, 224, 224), name
        assert ours.dtype == np.float32
        diff = float(np.abs(ours - theirs).max())
        if tall_shrink(*crop.shape[:2]):
            tall = max(tall, diff)
        else:
            # bit-identical: Pillow's resize arithmetic, transformers' float steps
            assert diff == 0.0, (name, diff)
            worst = max(worst, diff)
    print(
        f"\nclip_preprocess vs CLIPImageProcessor, {len(all_crops)} face crops: max abs diff "
        f"{worst:.3g} (tall shrink: {tall:.3g}, Pillow {PIL.__version__})"
    )
    # the tall-shrink case: identical with Pillow 13+, a grey level or two before
    assert tall == 0.0 if PIL_MAJOR >= 13 else tall <= 3 / 255 / CLIP_STD.min()


def test_the_comparison_would_catch_opencv_bicubic(processor):
    """OpenCV's INTER_CUBIC (a = -0.75, no antialiasing) is what clip_preprocess used
    first: off by up to ~1.6 in normalised units. The parity test must see that."""
    crop = cv2.resize(photos(1)[0], (520, 640), interpolation=cv2.INTER_LINEAR)
    h, w = crop.shape[:2]
    scale = 224 / min(h, w)
    resized = cv2.resize(crop, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_CUBIC)
    nh, nw = resized.shape[:2]
    top, left = (nh - 224) // 2, (nw - 224) // 2
    rgb = resized[top : top + 224, left : left + 224, ::-1].astype(np.float32) / 255.0
    naive = ((rgb - CLIP_MEAN) / CLIP_STD).transpose(2, 0, 1)
    assert np.abs(naive - reference(processor, crop)).max() > 0.1


@pytest.mark.parametrize("seed", range(4))
def test_resize_is_byte_identical_to_pillow(seed):
    rng = np.random.default_rng(seed)
    photo = photos(1)[0]
    for _ in range(25):
        h, w, out_h, out_w = (int(v) for v in rng.integers(8, 600, size=4))
        src = np.ascontiguousarray(cv2.resize(photo, (w, h))[:, :, ::-1])
        ours = pil_bicubic_resize(src, out_w, out_h)
        theirs = np.asarray(Image.fromarray(src).resize((out_w, out_h), Image.BICUBIC))
        if PIL_MAJOR < 13 and (h - out_h) > 0 and (h - out_h) > 2 * (w - out_w):
            continue  # older Pillow: other pass order here (see pil_bicubic_resize)
        assert np.array_equal(ours, theirs), (h, w, out_h, out_w)


def test_grey_and_batch_inputs(processor):
    grey = cv2.cvtColor(photos(1)[0], cv2.COLOR_BGR2GRAY)
    batch = clip_preprocess([grey, cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)])
    assert batch.shape == (2, 3, 224, 224)
    assert np.array_equal(batch[0], batch[1])
    assert np.array_equal(batch[1], reference(processor, cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)))
    assert clip_preprocess([]).shape == (0, 3, 224, 224)
