"""The synthetic world behind the miniature datasets and the ``mini-clip`` backbone.

Every class name of the 15 datasets is a *concept*: an object of one of six shapes, painted in a
main colour with a pattern (stripes, checks, dots, an outline) in an accent colour:

    "golden retriever"  ->  a yellow diamond with blue vertical stripes   (for example)

The concept of a name is fixed (a hash of the normalised name, collisions resolved over the sorted
list of all class names), so the same name looks the same in every dataset. Each image of a concept
varies in nuisance factors: object position and size, stripe period and phase, brightness, the
background colour and its gradient, and pixel noise. Images are ``SIZE`` x ``SIZE`` RGB.

Downstream, each dataset adds a *style* of its own (``STYLES``: a colour cast, blur, grain, a
texture, clutter, ...), the shift that few-shot adaptation has to learn. ``clip/pretrain_mini.py``
pretrains on unstyled images drawn with other random streams than the miniature datasets.
"""
import colorsys
import hashlib
import io
from functools import lru_cache

import numpy as np
from PIL import Image

SIZE = 32  # rendered image side in pixels; the transforms upsample it to the model's 224
_SUPERSAMPLE = 2  # shapes are drawn at 2x and averaged down, for anti-aliased edges

# (name, RGB in [0, 1]); names are used in descriptive captions ("a red disk with blue dots").
PALETTE = (
    ("red", (0.90, 0.10, 0.10)),
    ("orange", (1.00, 0.55, 0.05)),
    ("yellow", (0.95, 0.90, 0.10)),
    ("green", (0.10, 0.70, 0.15)),
    ("cyan", (0.10, 0.85, 0.90)),
    ("blue", (0.10, 0.25, 0.95)),
    ("purple", (0.55, 0.15, 0.80)),
    ("pink", (1.00, 0.45, 0.75)),
    ("white", (0.97, 0.97, 0.97)),
    ("black", (0.05, 0.05, 0.05)),
)
SHAPES = ("disk", "square", "triangle", "diamond", "ring", "cross")
# Patterns are invariant to a horizontal flip (the trainers' augmentation): "diagonal" stripes run
# either way at random.
PATTERNS = ("horizontal stripes", "vertical stripes", "diagonal stripes", "checks", "dots", "outline")


def normalise(classname):
    """The key of a class name: what the tokenizer sees (lower case, ``_`` as space, single spaces)."""
    return " ".join(classname.replace("_", " ").lower().split())


class Concept(tuple):
    """``(colour, accent, pattern, shape)`` indices into ``PALETTE``, ``PALETTE``, ``PATTERNS``, ``SHAPES``."""

    __slots__ = ()

    def __new__(cls, colour, accent, pattern, shape):
        return super().__new__(cls, (colour, accent, pattern, shape))

    colour = property(lambda self: self[0])
    accent = property(lambda self: self[1])
    pattern = property(lambda self: self[2])
    shape = property(lambda self: self[3])

    def describe(self):
        """``"a red disk with blue dots"``."""
        return (f"a {PALETTE[self.colour][0]} {SHAPES[self.shape]} with "
                f"{PALETTE[self.accent][0]} {PATTERNS[self.pattern]}")


def all_concepts():
    """Every concept, in a fixed order (colour, accent != colour, pattern, shape)."""
    n = len(PALETTE)
    return [Concept(c, a, p, s) for c in range(n) for a in range(n) if a != c
            for p in range(len(PATTERNS)) for s in range(len(SHAPES))]


def _hash_index(key, n):
    return int(hashlib.sha256(key.encode()).hexdigest()[:12], 16) % n


@lru_cache(maxsize=None)
def _assignment():
    """normalised name -> Concept for every class name of the 15 datasets (distinct concepts)."""
    from .mini import all_class_names

    concepts = all_concepts()
    taken, table = set(), {}
    for key in sorted({normalise(n) for names in all_class_names().values() for n in names}):
        i = _hash_index(key, len(concepts))
        while i in taken:  # linear probing: the first free concept after the hashed one
            i = (i + 1) % len(concepts)
        taken.add(i)
        table[key] = concepts[i]
    return table


def concept_of(classname):
    """The concept of a class name (names outside the 15 datasets get their hashed concept)."""
    key = normalise(classname)
    concept = _assignment().get(key)
    if concept is None:
        concepts = all_concepts()
        concept = concepts[_hash_index(key, len(concepts))]
    return concept


# ---------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------

@lru_cache(maxsize=None)
def _grid(size):
    """Pixel-centre coordinates at the supersampled resolution: ``(gx, gy)`` in [-1, 1], ``(px, py)`` in pixels."""
    n = size * _SUPERSAMPLE
    pix = (np.arange(n, dtype=np.float32) + 0.5) / _SUPERSAMPLE
    unit = pix / size * 2 - 1
    gx, gy = np.meshgrid(unit, unit, indexing="xy")
    px, py = np.meshgrid(pix, pix, indexing="xy")
    return gx, gy, px, py


def _shape_mask(name, u, v):
    """Boolean mask of a unit-size shape in object coordinates ``u`` (right), ``v`` (down)."""
    if name == "disk":
        return u * u + v * v <= 1.0
    if name == "square":
        return np.maximum(np.abs(u), np.abs(v)) <= 0.85
    if name == "triangle":  # apex up, base at the bottom
        return (v <= 0.8) & (v >= -1.0) & (np.abs(u) <= (v + 1.0) * 0.6)
    if name == "diamond":
        return np.abs(u) + np.abs(v) <= 1.1
    if name == "ring":
        r2 = u * u + v * v
        return (r2 <= 1.0) & (r2 >= 0.25)
    if name == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 0.33) & (av <= 1.0)) | ((av <= 0.33) & (au <= 1.0))
    raise ValueError(name)


def _pattern_mask(name, x, y, n):
    """Boolean accent mask of pattern ``name``; ``x``, ``y``: pixel coordinates shifted by the phase,
    ``n``: the per-image nuisance arrays, shaped to broadcast."""
    half = n["period"] / 2.0
    if name == "horizontal stripes":
        return np.floor(y / half) % 2 == 0
    if name == "vertical stripes":
        return np.floor(x / half) % 2 == 0
    if name == "diagonal stripes":
        return np.floor((x + n["direction"] * y) / (half * 1.4)) % 2 == 0
    if name == "checks":
        return (np.floor(x / half) + np.floor(y / half)) % 2 == 0
    if name == "dots":
        dx, dy = x % n["period"] - half, y % n["period"] - half
        return dx * dx + dy * dy <= (0.33 * n["period"]) ** 2
    raise ValueError(name)


def _box_down(a, factor):
    """Average ``factor`` x ``factor`` blocks of an ``(N, H, W)`` array."""
    n, h, w = a.shape
    return a.reshape(n, h // factor, factor, w // factor, factor).mean(axis=(2, 4))


def sample_nuisance(rng, n):
    """Random nuisance factors of ``n`` images (a dict of arrays with leading dimension ``n``)."""
    period = rng.uniform(3.0, 5.0, n)
    bg_hsv = np.stack([rng.uniform(0, 1, n), rng.uniform(0.0, 0.35, n), rng.uniform(0.25, 0.65, n)], 1)
    return {
        "centre": rng.uniform(-0.25, 0.25, (n, 2)),  # object position (image half-widths)
        "radius": rng.uniform(0.45, 0.72, n),  # object size
        "period": period,  # pattern period in pixels
        "phase": rng.uniform(0.0, 1.0, (n, 2)) * period[:, None],
        "direction": rng.choice(np.array([-1.0, 1.0]), n),  # of diagonal stripes
        "gain": rng.uniform(0.85, 1.1, n),  # brightness of the object
        "tint": rng.normal(0, 0.03, (n, 2, 3)),  # small colour jitter of colour and accent
        "background": np.array([colorsys.hsv_to_rgb(*hsv) for hsv in bg_hsv]).reshape(n, 3),
        "slope": rng.normal(0, 0.12, (n, 2)),  # background gradient
        "noise": rng.uniform(0.0, 0.04, n),  # pixel noise level
        "noise_seed": rng.integers(0, 2 ** 31, n),
    }


def render_batch(concepts, nuisance, size=SIZE):
    """Images of ``concepts`` with the given nuisance factors: float32 ``(N, size, size, 3)`` in [0, 1]."""
    gx, gy, px, py = _grid(size)
    n = len(concepts)
    nu = {k: np.asarray(v) for k, v in nuisance.items()}
    col = lambda a: a.reshape(n, 1, 1).astype(np.float32)  # noqa: E731  (per-image scalar -> broadcast)
    radius = col(nu["radius"])
    u = (gx[None] - col(nu["centre"][:, 0])) / radius
    v = (gy[None] - col(nu["centre"][:, 1])) / radius
    x, y = px[None] + col(nu["phase"][:, 0]), py[None] + col(nu["phase"][:, 1])
    shapes = np.array([c.shape for c in concepts])
    patterns = np.array([c.pattern for c in concepts])
    obj = np.zeros(u.shape, dtype=bool)
    acc = np.zeros(u.shape, dtype=bool)
    for s, name in enumerate(SHAPES):
        idx = np.flatnonzero(shapes == s)
        if len(idx):
            obj[idx] = _shape_mask(name, u[idx], v[idx])
            rim = idx[patterns[idx] == PATTERNS.index("outline")]
            if len(rim):  # the outline: outside a shrunken copy of the shape
                acc[rim] = ~_shape_mask(name, u[rim] * 1.45, v[rim] * 1.45)
    per_image = {k: col(nu[k]) for k in ("period", "direction")}
    for p, name in enumerate(PATTERNS):
        idx = np.flatnonzero(patterns == p)
        if len(idx) and name != "outline":
            sub = {k: a[idx] for k, a in per_image.items()}
            acc[idx] = _pattern_mask(name, x[idx], y[idx], sub)
    acc &= obj
    obj_f = _box_down(obj.astype(np.float32), _SUPERSAMPLE)[..., None]
    acc_f = _box_down(acc.astype(np.float32), _SUPERSAMPLE)[..., None]

    rgb = np.array([c for _, c in PALETTE], dtype=np.float32)
    gain = nu["gain"].reshape(n, 1)
    colour = np.clip(rgb[[c.colour for c in concepts]] * gain + nu["tint"][:, 0], 0, 1)
    accent = np.clip(rgb[[c.accent for c in concepts]] * gain + nu["tint"][:, 1], 0, 1)
    step = 2.0 / size
    coords = np.arange(size, dtype=np.float32) * step + step / 2 - 1
    ramp = coords[None, None, :] * col(nu["slope"][:, 0]) + coords[None, :, None] * col(nu["slope"][:, 1])
    bg = nu["background"].reshape(n, 1, 1, 3) + ramp[..., None]
    img = (bg * (1 - obj_f) + colour.reshape(n, 1, 1, 3) * (obj_f - acc_f)
           + accent.reshape(n, 1, 1, 3) * acc_f)
    for i in range(n):  # per-image noise streams: an image does not depend on its batch
        noise = np.random.default_rng(int(nu["noise_seed"][i])).standard_normal((size, size, 3), dtype=np.float32)
        img[i] += noise * np.float32(nu["noise"][i])
    return np.clip(img, 0, 1).astype(np.float32)


def render(concept, rng, size=SIZE):
    """One image of ``concept`` with random nuisance factors: float32 ``(size, size, 3)`` in [0, 1]."""
    return render_batch([concept], sample_nuisance(rng, 1), size)[0]


def to_uint8(img):
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)


def jpeg_bytes(img, quality=90):
    """JPEG bytes of a float image (4:4:4 chroma: the accent patterns are a few pixels wide)."""
    buf = io.BytesIO()
    Image.fromarray(to_uint8(img), "RGB").save(buf, "JPEG", quality=quality, subsampling=0)
    return buf.getvalue()


def rng_for(*parts):
    """A numpy Generator seeded by a hash of ``parts`` (stable across runs and platforms)."""
    return np.random.default_rng(int(hashlib.sha256("/".join(map(str, parts)).encode()).hexdigest()[:16], 16))


# ---------------------------------------------------------------------------
# Dataset styles: the downstream shift
# ---------------------------------------------------------------------------

class Style:
    """How one dataset's camera sees the world; every factor defaults to "no change".

    Colour: ``gains`` (per-channel multipliers), ``hue`` (rotation in degrees), ``saturation``,
    ``contrast`` (around mid-grey), ``brightness``, ``haze`` (``(rgb, amount)``: blend towards a
    colour), ``grayscale``. Space: ``blur`` (Gaussian sigma, pixels), ``motion`` (horizontal blur
    length, pixels). Overlays: ``texture`` (amplitude of a woven pattern), ``clutter`` (number of
    small distractor blobs), ``vignette``. Last: ``grain`` (noise sigma), ``posterize`` (levels).
    """

    FIELDS = dict(gains=(1.0, 1.0, 1.0), hue=0.0, saturation=1.0, contrast=1.0, brightness=1.0, haze=None,
                  grayscale=False, blur=0.0, motion=0, texture=0.0, clutter=0, vignette=0.0, grain=0.0,
                  posterize=0)

    def __init__(self, description, **factors):
        unknown = set(factors) - set(self.FIELDS)
        if unknown:
            raise TypeError(f"unknown style factors: {sorted(unknown)}")
        self.description = description
        for key, default in self.FIELDS.items():
            setattr(self, key, factors.get(key, default))

    def colour_matrix(self):
        """The linear colour factors as one 3x3 matrix acting on RGB row vectors (``img @ M``)."""
        lum = np.array([0.299, 0.587, 0.114])
        m = np.diag(np.asarray(self.gains, dtype=np.float64))
        if self.hue:  # rotation about the grey axis
            a = np.deg2rad(self.hue)
            k = np.ones(3) / np.sqrt(3)
            cross = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
            rot = np.cos(a) * np.eye(3) + np.sin(a) * cross + (1 - np.cos(a)) * np.outer(k, k)
            m = m @ rot.T
        sat = 0.0 if self.grayscale else self.saturation
        m = m @ (sat * np.eye(3) + (1 - sat) * np.outer(lum, np.ones(3)))
        return m.astype(np.float32)

    def apply(self, imgs, rngs):
        """Styled copies of float images ``(N, H, W, 3)``; ``rngs``: one Generator per image."""
        n, h, w, _ = imgs.shape
        out = imgs @ self.colour_matrix()
        out = (out - 0.5) * self.contrast + 0.5
        out = out * self.brightness
        if self.haze is not None:
            rgb, amount = self.haze
            out = out * (1 - amount) + np.asarray(rgb, dtype=np.float32) * amount
        if self.blur:
            out = _blur(out, _gaussian_kernel(self.blur), axes=(1, 2))
        if self.motion:
            out = _blur(out, np.full(self.motion, 1.0 / self.motion, dtype=np.float32), axes=(2,))
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        for i, rng in enumerate(rngs):
            if self.texture:  # a woven pattern with a random phase, multiplied into the image
                phase = rng.uniform(0, 2 * np.pi, 2)
                weave = np.sin(xx * 1.9 + phase[0]) * np.sin(yy * 1.9 + phase[1])
                out[i] *= (1 + self.texture * weave)[..., None]
            for _ in range(self.clutter):  # a small blob of a random colour
                cy, cx = rng.uniform(0, h), rng.uniform(0, w)
                r = rng.uniform(1.5, 3.5)
                blob = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
                out[i][blob] = rng.uniform(0, 1, 3)
            if self.grain:
                out[i] += rng.standard_normal((h, w, 3), dtype=np.float32) * self.grain
        if self.vignette:
            r2 = ((yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2) / ((h / 2) ** 2)
            out = out * (1 - self.vignette * np.clip(r2 - 0.3, 0, None))[..., None]
        out = np.clip(out, 0, 1)
        if self.posterize:
            out = np.round(out * (self.posterize - 1)) / (self.posterize - 1)
        return out.astype(np.float32)


def _gaussian_kernel(sigma):
    radius = max(1, int(np.ceil(2.5 * sigma)))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


def _blur(imgs, kernel, axes):
    """Separable convolution of ``(N, H, W, C)`` images along ``axes`` (edges reflected)."""
    r = len(kernel) // 2
    for axis in axes:
        pad = [(0, 0)] * imgs.ndim
        pad[axis] = (r, len(kernel) - 1 - r)
        padded = np.pad(imgs, pad, mode="reflect")
        length = imgs.shape[axis]
        imgs = sum(k * np.take(padded, np.arange(j, j + length), axis=axis) for j, k in enumerate(kernel))
    return imgs


STYLES = {
    "ImageNet": Style("photos: light grain", grain=0.02),
    "Caltech101": Style("washed out: low contrast, strong warm cast", contrast=0.55, gains=(1.25, 1.0, 0.65)),
    "OxfordPets": Style("indoors: brown cast, soft focus", gains=(1.05, 0.9, 0.7), blur=0.8, grain=0.02),
    "StanfordCars": Style("showroom: hard contrast, vignette", contrast=1.35, vignette=0.6),
    "OxfordFlowers": Style("vivid: saturated, green tint", saturation=1.4, gains=(0.9, 1.1, 0.9)),
    "Food101": Style("close-ups: warm light, blurred", gains=(1.15, 1.0, 0.75), blur=1.0),
    "FGVCAircraft": Style("sky: blue haze", haze=((0.55, 0.7, 0.9), 0.35), blur=0.5),
    "SUN397": Style("dim scenes: dark, grainy", brightness=0.65, grain=0.05),
    "DescribableTextures": Style("textured: a woven overlay", texture=0.5),
    "EuroSAT": Style("from orbit: hue shift, blur, grain", hue=30.0, blur=0.8, grain=0.03),
    "UCF101": Style("video frames: motion blur, grain", motion=3, grain=0.04),
    "ImageNetV2": Style("photos: light grain (new instances)", grain=0.02),
    "ImageNetSketch": Style("sketches: faded colour, hard contrast", saturation=0.3, contrast=1.4),
    "ImageNetA": Style("adversarial: clutter, grain", clutter=4, grain=0.04),
    "ImageNetR": Style("renditions: posterised, hue shift", posterize=3, hue=-15.0),
}
