"""The synthetic world: concepts of class names, rendering, dataset styles, miniature images."""
import io
import os.path as osp

import numpy as np
import pytest
from PIL import Image

import datasets  # noqa: F401  (registers the readers)
from dassl.config import get_cfg_default
from dassl.data.datasets import build_dataset
from datasets import mini, world
from datasets.common import CONFIG_STEMS

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


def test_every_class_name_has_its_own_concept():
    names = {world.normalise(n) for names in mini.all_class_names().values() for n in names}
    concepts = [world.concept_of(n) for n in names]
    assert len(names) == 2114 and len(set(concepts)) == len(names)  # distinct across the 15 datasets
    # the same name looks the same everywhere, whatever its spelling
    assert world.concept_of("Apply_Eye_Makeup") == world.concept_of("apply eye  makeup")
    assert "ImageNet" in mini.all_class_names() and len(mini.all_class_names()["ImageNetA"]) == 200
    c = world.concept_of("golden retriever")
    assert c.describe() == (f"a {world.PALETTE[c.colour][0]} {world.SHAPES[c.shape]} with "
                            f"{world.PALETTE[c.accent][0]} {world.PATTERNS[c.pattern]}")
    assert c.colour != c.accent


@pytest.mark.parametrize("name", list(CONFIG_STEMS.values()))
def test_class_names_are_the_readers(mini_root, name):
    cfg = get_cfg_default()
    cfg.DATASET.SUBSAMPLE_CLASSES = "all"
    cfg.DATASET.SKIP_BAD_IMAGES = False
    stem = {v: k for k, v in CONFIG_STEMS.items()}[name]
    cfg.merge_from_file(osp.join(REPO, "configs", "datasets", f"{stem}.yaml"))
    cfg.DATASET.ROOT = mini_root
    assert build_dataset(cfg).classnames == list(mini.all_class_names()[name])


def test_render_shapes_patterns_and_colours():
    concept = world.Concept(colour=0, accent=5, pattern=world.PATTERNS.index("vertical stripes"),
                            shape=world.SHAPES.index("square"))
    nuisance = world.sample_nuisance(np.random.default_rng(0), 1)
    nuisance.update(centre=np.zeros((1, 2)), radius=np.array([0.7]), noise=np.zeros(1), gain=np.ones(1),
                    tint=np.zeros((1, 2, 3)), slope=np.zeros((1, 2)), background=np.full((1, 3), 0.5))
    img = world.render_batch([concept], nuisance)[0]
    assert img.shape == (world.SIZE, world.SIZE, 3) and img.dtype == np.float32
    assert np.allclose(img[0, 0], 0.5)  # background in the corner
    centre = img[world.SIZE // 2 - 3: world.SIZE // 2 + 3, world.SIZE // 2 - 3: world.SIZE // 2 + 3].reshape(-1, 3)
    red, blue = np.array(world.PALETTE[0][1]), np.array(world.PALETTE[5][1])
    # vertical stripes: red and blue columns inside the square, constant down each column
    assert (np.abs(centre - red).max(1) < 0.05).any() and (np.abs(centre - blue).max(1) < 0.05).any()
    column = img[world.SIZE // 2 - 6: world.SIZE // 2 + 6, world.SIZE // 2]
    assert np.abs(column - column[0]).max() < 1e-6


def test_an_image_does_not_depend_on_its_batch():
    concepts = [world.concept_of(n) for n in ("forest", "river", "abbey")]
    nuisance = world.sample_nuisance(np.random.default_rng(3), 3)
    together = world.render_batch(concepts, nuisance)
    alone = world.render_batch(concepts[1:2], {k: v[1:2] for k, v in nuisance.items()})
    np.testing.assert_array_equal(together[1], alone[0])


def test_styles_shift_images_and_fading_or_grayscale_removes_colour():
    rng = np.random.default_rng(0)
    imgs = world.render_batch([world.concept_of("river")] * 2, world.sample_nuisance(rng, 2))
    for name, style in world.STYLES.items():
        out = style.apply(imgs.copy(), [np.random.default_rng(1), np.random.default_rng(2)])
        assert out.shape == imgs.shape and out.min() >= 0 and out.max() <= 1
        assert np.abs(out - imgs).mean() > 0.005, name  # every dataset has a style of its own
    def colourfulness(x):
        return np.abs(x - x.mean(-1, keepdims=True)).mean()

    faded = world.STYLES["ImageNetSketch"].apply(imgs.copy(), [rng, rng])  # saturation 0.3
    assert colourfulness(faded) < 0.5 * colourfulness(imgs)
    grey = world.Style("grey", grayscale=True).apply(imgs.copy(), [rng, rng])
    assert np.abs(grey - grey.mean(-1, keepdims=True)).max() < 1e-5
    with pytest.raises(TypeError, match="unknown style factors"):
        world.Style("x", sharpness=2)


def test_miniature_images_show_their_class_in_the_dataset_style(mini_root):
    path = osp.join(mini_root, "eurosat", "2750", "Forest", "Forest_1.jpg")
    img = np.asarray(Image.open(path).convert("RGB"))
    assert img.shape == (world.SIZE, world.SIZE, 3)
    # the file is the concept of "Forest" in EuroSAT's style, drawn from the image's own stream
    classes = mini.meta_lines("eurosat_classes.txt")
    expected = mini.render_jpegs("EuroSAT", mini.all_class_names()["EuroSAT"], [(classes.index("Forest"), 0)])[0]
    assert open(path, "rb").read() == expected
    plain = np.asarray(Image.open(io.BytesIO(world.jpeg_bytes(world.render(
        world.concept_of("Forest"), mini.image_rng("EuroSAT", classes.index("Forest"), 0))))).convert("RGB"))
    assert np.abs(plain.astype(int) - img.astype(int)).mean() > 3  # the style changed it
