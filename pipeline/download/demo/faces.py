"""Synthetic talking faces for the demo corpus, warped from one real photograph.

The base is scikit-image's ``astronaut()`` (a public-domain NASA portrait). dlib's 68 landmarks
of that face drive every change:

- a speaker is a *thin-plate-spline* warp of the whole frame (face width, jaw, chin, eye
  distance and size, nose, mouth, lips, brows; sex-typed means) plus intensity changes (skin
  tone, lighting, heavier brows and stubble for some male speakers), rendered once;
- an emotion is a displacement of the landmarks (mouth corners up for HAP, down for SAD, brows
  lowered and drawn together for ANG ...) turned into a dense field over a small face region
  once per speaker x emotion;
- per frame only that region is resampled (one bilinear gather), with the expression field
  scaled by the frame's intensity, a mouth-opening field driven by the speech envelope and a
  yaw modelled as the face turning on a vertical cylinder (the nose, further from the axis,
  moves further).

Coordinates are (x, y) in pixels, y down. Positive yaw moves the face's features towards +x.
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, fields

import numpy as np
from PIL import Image
from scipy.interpolate import RBFInterpolator
from scipy.ndimage import gaussian_filter

from pipeline.dlib_models import (
    BROWS,
    JAW,
    LEFT_BROW,
    LEFT_EYE,
    LOWER_LIDS,
    LOWER_LIP,
    MOUTH,
    NOSE_BASE,
    RIGHT_BROW,
    RIGHT_EYE,
    UPPER_LIDS,
    UPPER_LIP,
    face_detector,
    load_model,
)

SOURCE_CROP = (103.0, 30.0)
"""Top-left corner (x, y) in the astronaut photo of the region a frame shows."""
SOURCE_SCALE = 2.0
"""Frame pixels per photo pixel: the face becomes ~180 px wide, as in CREMA-D's close-ups."""


@dataclass(frozen=True)
class FaceGeometry:
    """A speaker's face: shape offsets in [-1, 1] (0 = the photo) and appearance factors."""

    face_width: float
    """Width of the whole jaw contour (+1 = 8% wider)."""
    jaw_width: float
    """Extra width of the lower jaw (+1 = 12% wider at the jaw angle)."""
    chin_length: float
    """Chin drop (+1 = 0.14 interocular distances longer face)."""
    eye_distance: float
    """Spacing of the eyes (+1 = each eye 0.07 interocular distances outward)."""
    eye_size: float
    """Eye opening (+1 = 18% larger about each eye's centre)."""
    nose_width: float
    """Width of the nose base (+1 = 22% wider)."""
    nose_length: float
    """Nose length (+1 = nose base 0.1 interocular distances lower)."""
    mouth_width: float
    """Mouth width (+1 = 14% wider)."""
    lip_thickness: float
    """Lip thickness (+1 = each lip 0.05 interocular distances thicker)."""
    brow_height: float
    """Brow height above the eyes (+1 = 0.09 interocular distances higher)."""
    skin_tone: float
    """Multiplier of the face's brightness (1 = the photo)."""
    warmth: float
    """Colour temperature shift in [-1, 1] (red up, blue down for positive values)."""
    brow_weight: float
    """Darkening of the brows in [0, 1] (heavier brows)."""
    stubble: float
    """Darkening of the beard area in [0, 1] (0 = none)."""

    def shape_vector(self) -> np.ndarray:
        """Return the ten shape offsets as a float array (the face's geometric code)."""
        return np.array([getattr(self, f.name) for f in fields(self)[:10]], dtype=np.float64)


SHAPE_FIELDS = tuple(f.name for f in fields(FaceGeometry)[:10])

# Sex-typed means of the shape offsets: broader, longer jaw, lower and heavier brows, wider
# nose for male speakers; the photo's (female) proportions shifted the other way for female.
_MALE_SHAPE_MEAN = {
    "face_width": 0.35, "jaw_width": 0.55, "chin_length": 0.35, "eye_size": -0.3,
    "nose_width": 0.4, "nose_length": 0.25, "lip_thickness": -0.35, "brow_height": -0.45,
}


# A speaker's identity is three factors in [-1, 1], each driving a group of face offsets and,
# in demo_voices.voice_for_face, one audible voice cue, so that every visible identity
# difference between speakers of one sex can be heard (plus a little individual noise):
# breadth (face, jaw, nose width; brow weight) -> pitch; length (chin, nose, brow height)
# -> vocal-tract length; features (eye spacing and size, mouth width, lips) -> rate, variant.
IDENTITY_FACTORS = ("breadth", "length", "features")
_FACTOR_LOADINGS = {
    "face_width": (0.8, 0.0, 0.0), "jaw_width": (0.9, 0.0, 0.0), "nose_width": (0.6, 0.0, 0.0),
    "chin_length": (0.0, 0.9, 0.0), "nose_length": (0.0, 0.6, 0.0),
    "brow_height": (0.0, -0.6, 0.0), "eye_distance": (0.0, 0.0, 0.8),
    "eye_size": (0.0, 0.0, 0.6), "mouth_width": (0.0, 0.0, 0.8),
    "lip_thickness": (0.0, 0.0, 0.5),
}
_FACTOR_WEIGHT = 0.65
"""Scale of the factors' pull on the offsets: identity differences as large as the sex's."""
_INDIVIDUAL_NOISE = 0.04
"""Per-offset noise no voice cue carries: small, so that the voice sets the face."""


def sex_typed_mean(name: str, male: bool) -> float:
    """Return the mean offset of shape field ``name`` for the speaker's sex."""
    return (1.0 if male else -0.6) * _MALE_SHAPE_MEAN.get(name, 0.0)


def sample_factors(rng: np.random.Generator) -> tuple[float, float, float]:
    """Return a speaker's identity factors (breadth, length, features), each in [-1, 1]."""
    return tuple(float(v) for v in rng.uniform(-1.0, 1.0, size=len(IDENTITY_FACTORS)))


def sample_geometry(rng: np.random.Generator, male: bool, skin_tone: float,
                    factors: tuple[float, float, float]) -> FaceGeometry:
    """Return a sex-typed face geometry driven by ``factors`` (offsets clipped to [-1, 1])."""
    shape = {
        name: float(np.clip(sex_typed_mean(name, male)
                            + _FACTOR_WEIGHT * float(np.dot(_FACTOR_LOADINGS[name], factors))
                            + rng.normal(0, _INDIVIDUAL_NOISE), -1, 1))
        for name in SHAPE_FIELDS
    }
    breadth = factors[0]
    return FaceGeometry(
        **shape,
        skin_tone=skin_tone,
        warmth=float(rng.uniform(-0.6, 0.6)),
        brow_weight=float(0.5 + 0.15 * breadth if male else 0.08 + 0.06 * breadth),
        stubble=float(0.2 + 0.08 * breadth if male and breadth > 0 else 0.0),
    )


@dataclass(frozen=True)
class BaseFace:
    """The photo as float32 RGB and dlib's 68 landmarks of its face (photo pixels)."""

    image: np.ndarray
    landmarks: np.ndarray


@functools.cache
def base_face() -> BaseFace:
    """Return the astronaut photo and its landmarks (dlib runs once per process)."""
    from skimage import data

    image = data.astronaut()
    return BaseFace(image.astype(np.float32), detect_landmarks(image, upsample=1))


def detect_landmarks(image: np.ndarray, upsample: int = 0) -> np.ndarray:
    """Return the 68 landmarks (68, 2) of the largest face dlib finds in ``image``."""
    faces = face_detector()(image, upsample)
    if not faces:
        raise ValueError("dlib found no face in the image")
    box = max(faces, key=lambda r: r.width() * r.height())
    shape = load_model("landmarks_68")(image, box)
    return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)


def interocular(landmarks: np.ndarray) -> float:
    """Return the distance between the two eye centres."""
    return float(np.linalg.norm(landmarks[LEFT_EYE].mean(0) - landmarks[RIGHT_EYE].mean(0)))


def identity_landmarks(landmarks: np.ndarray, g: FaceGeometry) -> np.ndarray:
    """Return ``landmarks`` moved to the speaker's geometry (frame pixels in, frame pixels out)."""
    p = landmarks.copy()
    d = interocular(landmarks)
    cx = landmarks[27, 0]
    jaw_weight = np.sin(np.linspace(0, np.pi, 17))  # 0 at the temples, 1 at the chin
    p[JAW, 0] = cx + (p[JAW, 0] - cx) * (1 + 0.08 * g.face_width)
    angle_weight = np.exp(-(((np.arange(17) - 8) / 3.5) ** 2 - 1) ** 2)  # peaks at the angles
    p[JAW, 0] = cx + (p[JAW, 0] - cx) * (1 + 0.12 * g.jaw_width * angle_weight)
    p[JAW, 1] += 0.14 * d * g.chin_length * jaw_weight**2
    # side: the image x direction each eye moves outward in (the subject's right is image left)
    for eye, brow, side in ((RIGHT_EYE, RIGHT_BROW, -1.0), (LEFT_EYE, LEFT_BROW, 1.0)):
        centre = p[eye].mean(0)
        p[eye] = centre + (p[eye] - centre) * np.array([1.0, 1 + 0.18 * g.eye_size])
        p[eye, 0] += side * 0.07 * d * g.eye_distance
        p[brow, 0] += side * 0.04 * d * g.eye_distance
    p[BROWS, 1] -= 0.09 * d * g.brow_height
    base_centre = p[33]
    p[NOSE_BASE, 0] = base_centre[0] + (p[NOSE_BASE, 0] - base_centre[0]) * (
        1 + 0.22 * g.nose_width
    )
    p[NOSE_BASE, 1] += 0.10 * d * g.nose_length
    p[30, 1] += 0.06 * d * g.nose_length
    mouth_centre = p[MOUTH].mean(0)
    p[MOUTH, 0] = mouth_centre[0] + (p[MOUTH, 0] - mouth_centre[0]) * (1 + 0.14 * g.mouth_width)
    p[MOUTH, 1] += 0.05 * d * g.nose_length
    p[[49, 50, 51, 52, 53], 1] -= 0.05 * d * g.lip_thickness
    p[[55, 56, 57, 58, 59], 1] += 0.05 * d * g.lip_thickness
    return p + _relax_smile(landmarks)


def _relax_smile(landmarks: np.ndarray) -> np.ndarray:
    """Return displacements that turn the photo's broad smile into a resting mouth."""
    d = interocular(landmarks)
    u = _mouth_coordinate(landmarks)
    out = np.zeros_like(landmarks)
    out[MOUTH, 1] = 0.07 * d * u[MOUTH] ** 2
    out[MOUTH, 0] = -0.05 * d * u[MOUTH]
    out[LOWER_LIP, 1] -= 0.04 * d  # close the open smile a little
    return out


def _mouth_coordinate(landmarks: np.ndarray) -> np.ndarray:
    """Return each landmark's horizontal position across the mouth (-1 left corner, +1 right)."""
    centre = landmarks[MOUTH].mean(0)[0]
    half_width = (landmarks[54, 0] - landmarks[48, 0]) / 2
    return np.clip((landmarks[:, 0] - centre) / half_width, -1.2, 1.2)


def expression_displacement(landmarks: np.ndarray, emotion: str) -> np.ndarray:
    """Return (68, 2) landmark displacements of ``emotion`` at full intensity (frame pixels)."""
    d = interocular(landmarks)
    u = _mouth_coordinate(landmarks)
    out = np.zeros_like(landmarks)
    inner = np.array([20, 21, 22, 23])
    inward = np.array([1.0, 1.0, -1.0, -1.0])  # towards the face's midline
    if emotion == "HAP":  # zygomatic smile: corners up and out, cheeks push the lower lids
        out[MOUTH, 1] = -0.17 * d * u[MOUTH] ** 2
        out[MOUTH, 0] = 0.08 * d * u[MOUTH]
        out[LOWER_LIDS, 1] = -0.03 * d
    elif emotion == "SAD":  # corners down, inner brows raised, lids droop
        out[MOUTH, 1] = 0.15 * d * u[MOUTH] ** 2
        out[MOUTH, 0] = -0.03 * d * u[MOUTH]
        out[[56, 57, 58], 1] -= 0.03 * d
        out[inner, 1] = -0.10 * d
        out[[17, 18, 25, 26], 1] = 0.04 * d
        out[UPPER_LIDS, 1] = 0.025 * d
    elif emotion == "ANG":  # brows lowered and drawn together, lips pressed, nostrils flared
        out[BROWS, 1] = 0.05 * d
        out[inner, 1] = 0.10 * d
        out[inner, 0] = 0.08 * d * inward
        out[UPPER_LIDS, 1] = 0.03 * d
        out[UPPER_LIP, 1] = 0.03 * d
        out[LOWER_LIP, 1] = -0.03 * d
        out[MOUTH, 0] = -0.05 * d * u[MOUTH]
        out[[31, 35], 0] = np.array([-0.04, 0.04]) * d
    elif emotion == "FEA":  # brows raised (inner most), eyes wide, lips stretched sideways
        out[BROWS, 1] = -0.11 * d
        out[inner, 1] = -0.15 * d
        out[inner, 0] = 0.03 * d * inward
        out[UPPER_LIDS, 1] = -0.05 * d
        out[MOUTH, 0] = 0.10 * d * u[MOUTH]
        out[MOUTH, 1] = 0.05 * d * u[MOUTH] ** 2
    elif emotion == "DIS":  # upper lip raised, nose wrinkled, inner brows lowered
        out[UPPER_LIP, 1] = -0.08 * d
        out[NOSE_BASE, 1] = -0.04 * d
        out[inner, 1] = 0.07 * d
        out[MOUTH, 1] += 0.04 * d * u[MOUTH] ** 2
    elif emotion != "NEU":
        raise ValueError(f"unknown emotion {emotion!r}")
    return out


def mouth_open_displacement(landmarks: np.ndarray) -> np.ndarray:
    """Return (68, 2) displacements of a fully opened mouth (lower lip and chin drop)."""
    d = interocular(landmarks)
    out = np.zeros_like(landmarks)
    out[LOWER_LIP, 1] = 0.20 * d
    out[[6, 7, 8, 9, 10], 1] = 0.13 * d
    out[[4, 5, 11, 12], 1] = 0.06 * d
    return out


def dense_backward_field(
    targets: np.ndarray, displacement: np.ndarray, shape: tuple[int, int], origin=(0.0, 0.0),
    step: int = 4,
) -> np.ndarray:
    """Return a (2, H, W) field (dy, dx) that maps output pixels back to their source.

    A thin-plate spline through the moved points (``targets``, value ``-displacement``) and a
    ring of fixed points on the region's border; evaluated on a grid every ``step`` pixels and
    linearly upsampled (the field is smooth), so it costs milliseconds, not seconds.
    """
    h, w = shape
    ox, oy = origin
    ring = _border_ring(w, h) + np.array([ox, oy])
    centres = np.vstack([targets, ring])
    values = np.vstack([-displacement, np.zeros_like(ring)])
    spline = RBFInterpolator(centres, values, kernel="thin_plate_spline")
    gy, gx = np.arange(0, h + step, step), np.arange(0, w + step, step)
    grid = np.stack(np.meshgrid(gx + ox, gy + oy), -1).reshape(-1, 2)
    coarse = spline(grid).reshape(len(gy), len(gx), 2)
    yy, xx = np.arange(h) / step, np.arange(w) / step
    field = np.empty((2, h, w), np.float32)
    for axis, channel in ((0, 1), (1, 0)):  # (dy from y-values, dx from x-values)
        field[axis] = _upsample(coarse[..., channel], yy, xx)
    return field


def _border_ring(w: int, h: int, n: int = 12) -> np.ndarray:
    xs, ys = np.linspace(0, w - 1, n), np.linspace(0, h - 1, n)
    top = np.stack([xs, np.zeros(n)], 1)
    bottom = np.stack([xs, np.full(n, h - 1)], 1)
    left = np.stack([np.zeros(n), ys], 1)[1:-1]
    right = np.stack([np.full(n, w - 1), ys], 1)[1:-1]
    return np.vstack([top, bottom, left, right])


def _upsample(coarse: np.ndarray, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
    y0 = np.minimum(yy.astype(int), coarse.shape[0] - 2)
    x0 = np.minimum(xx.astype(int), coarse.shape[1] - 2)
    fy, fx = (yy - y0)[:, None], (xx - x0)[None, :]
    a, b = coarse[y0][:, x0], coarse[y0][:, x0 + 1]
    c, e = coarse[y0 + 1][:, x0], coarse[y0 + 1][:, x0 + 1]
    return ((a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + e * fx) * fy).astype(np.float32)


def bilinear_sample(image: np.ndarray, sy: np.ndarray, sx: np.ndarray) -> np.ndarray:
    """Return ``image`` (H, W, C) sampled at float coordinates (sy, sx), edges clamped."""
    h, w, c = image.shape
    x0f, y0f = np.floor(sx), np.floor(sy)
    fx, fy = (sx - x0f)[..., None], (sy - y0f)[..., None]
    x0 = np.clip(x0f.astype(np.int32), 0, w - 2)
    y0 = np.clip(y0f.astype(np.int32), 0, h - 2)
    flat = image.reshape(-1, c)
    i = y0 * w + x0
    a, b, cc, e = flat[i], flat[i + 1], flat[i + w], flat[i + w + 1]
    top = a + (b - a) * fx
    bottom = cc + (e - cc) * fx
    return top + (bottom - top) * fy


@dataclass(frozen=True)
class SpeakerFace:
    """One speaker rendered at rest: the frame, its dlib landmarks and the animated region."""

    frame: np.ndarray
    """(H, W, 3) uint8 frame of the speaker, neutral and frontal."""
    landmarks: np.ndarray
    """(68, 2) dlib landmarks measured on ``frame``."""
    region: tuple[int, int, int, int]
    """(top, bottom, left, right) of the region that frames re-render."""


def render_speaker(
    g: FaceGeometry, size: tuple[int, int], shift: tuple[float, float]
) -> SpeakerFace:
    """Return the speaker's neutral frontal frame of ``size`` (width, height)."""
    base = base_face()
    w, h = size
    ox, oy = SOURCE_CROP[0] + shift[0], SOURCE_CROP[1] + shift[1]
    photo_lms = (base.landmarks - np.array([ox, oy])) * SOURCE_SCALE
    moved = identity_landmarks(photo_lms, g)
    field = dense_backward_field(moved, moved - photo_lms, (h, w), step=8)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    sy = (yy + field[0]) / SOURCE_SCALE + oy
    sx = (xx + field[1]) / SOURCE_SCALE + ox
    frame = bilinear_sample(base.image, sy, sx)
    frame = _apply_appearance(frame, moved, g)
    frame_u8 = np.clip(frame + 0.5, 0, 255).astype(np.uint8)
    landmarks = detect_landmarks(frame_u8)
    return SpeakerFace(frame_u8, landmarks, _face_region(landmarks, w, h))


def _apply_appearance(frame: np.ndarray, lms: np.ndarray, g: FaceGeometry) -> np.ndarray:
    """Return ``frame`` with the speaker's skin tone, colour, brows and stubble."""
    h, w, _ = frame.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    d = interocular(lms)
    centre = lms[[27, 8]].mean(0)
    # Flat over the whole face (the profile falls off beyond the jaw): a tone is a uniform
    # gain inside the contour, which the faces stage's contrast stretch removes, as it
    # removes lighting; a tone that shaded the face unevenly would be an identity cue no
    # voice carries.
    half_w = (lms[16, 0] - lms[0, 0]) / 2 * 1.7
    half_h = (lms[8, 1] - lms[19, 1]) / 2 * 1.9
    face = np.exp(-(((xx - centre[0]) / half_w) ** 2 + ((yy - centre[1]) / half_h) ** 2) ** 2)
    tone = 1 + (g.skin_tone - 1) * face
    colour = np.array([1 + 0.07 * g.warmth, 1.0, 1 - 0.07 * g.warmth], np.float32)
    shade = np.ones((h, w), np.float32)
    brow_mask = _brow_mask(lms[BROWS], (h, w), radius=0.07 * d)
    shade *= 1 - 0.45 * g.brow_weight * brow_mask
    if g.stubble > 0:
        beard = _beard_mask(lms, (h, w))
        grain = np.random.default_rng(7).random((h, w)).astype(np.float32)
        shade *= 1 - g.stubble * beard * (0.4 + 0.6 * grain)
    out = frame * (tone * shade)[..., None] * colour
    if g.stubble > 0:  # stubble is brown-grey, not a grey veil: take a little more red out
        out[..., 0] *= 1 - 0.25 * g.stubble * beard
    return out


def _brow_mask(brows: np.ndarray, shape: tuple[int, int], radius: float) -> np.ndarray:
    """Return a soft mask along both brows' polylines (five landmarks each)."""
    mask = np.zeros(shape, np.float32)
    for brow in (brows[:5], brows[5:]):
        for a, b in itertools.pairwise(brow):
            for t in np.linspace(0, 1, 8):
                x, y = np.round(a + (b - a) * t).astype(int)
                if 0 <= y < shape[0] and 0 <= x < shape[1]:
                    mask[y, x] = 1.0
    blurred = gaussian_filter(mask, radius)
    return np.clip(blurred / max(blurred.max(), 1e-6) * 1.3, 0, 1)


def _beard_mask(lms: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Return a soft mask of the lower face below the nose, inside the jaw, lips excluded."""
    from skimage.draw import polygon

    mask = np.zeros(shape, np.float32)
    outline = np.vstack([lms[4:13], lms[[54, 35, 33, 31, 48]]])
    rr, cc = polygon(outline[:, 1], outline[:, 0], shape)
    mask[rr, cc] = 1.0
    rr, cc = polygon(lms[48:60, 1], lms[48:60, 0], shape)
    mask[rr, cc] = 0.0
    return gaussian_filter(mask, 0.08 * interocular(lms))


def _face_region(lms: np.ndarray, w: int, h: int) -> tuple[int, int, int, int]:
    x0, y0 = lms.min(0)
    x1, y1 = lms.max(0)
    fw, fh = x1 - x0, y1 - y0
    top = int(max(0, y0 - 0.4 * fh))
    bottom = int(min(h, y1 + 0.15 * fh))
    left = int(max(0, x0 - 0.2 * fw))
    right = int(min(w, x1 + 0.2 * fw))
    return top, bottom, left, right


class FaceAnimator:
    """Renders frames of one speaker with one expression: ``frame(intensity, mouth, yaw)``.

    The backward map (output pixel -> source pixel) is computed only at the nodes of a grid
    every :data:`MESH_CELL` pixels and handed to PIL's mesh transform, which resamples each
    cell bilinearly in C: the fields are smooth, so this matches a per-pixel remap at a
    fraction of the cost (about 4 ms a frame instead of 20).
    """

    def __init__(self, speaker: SpeakerFace, emotion: str) -> None:
        self.speaker = speaker
        top, bottom, left, right = speaker.region
        self._region = (slice(top, bottom), slice(left, right))
        h, w = bottom - top, right - left
        lms = speaker.landmarks
        local = lms - np.array([left, top], dtype=np.float64)
        expr = expression_displacement(lms, emotion)
        mouth = mouth_open_displacement(lms)
        fields_ = np.concatenate([
            dense_backward_field(local + expr, expr, (h, w)),
            dense_backward_field(local + mouth, mouth, (h, w)),
        ])  # (4, h, w): expression dy, dx; mouth dy, dx
        self._fields = fields_.reshape(4, -1).T.copy()
        self._width = w
        # Source: the region plus a margin, so samples pushed past its edge stay in the photo.
        frame_h, frame_w, _ = speaker.frame.shape
        self._src_top, self._src_left = max(0, top - _PAD), max(0, left - _PAD)
        source = speaker.frame[self._src_top : min(frame_h, bottom + _PAD),
                               self._src_left : min(frame_w, right + _PAD)]
        self._source = Image.fromarray(np.ascontiguousarray(source))
        ys = np.minimum(np.arange(0, h + MESH_CELL, MESH_CELL), h)
        xs = np.minimum(np.arange(0, w + MESH_CELL, MESH_CELL), w)
        self._ny, self._nx = np.meshgrid(ys.astype(np.float64), xs.astype(np.float64),
                                         indexing="ij")
        self._boxes = [tuple(b) for b in np.stack(
            [self._nx[:-1, :-1], self._ny[:-1, :-1], self._nx[1:, 1:], self._ny[1:, 1:]], -1
        ).reshape(-1, 4).astype(int).tolist()]
        self._cell_w = np.diff(self._nx, axis=1)[:-1]
        self._cell_h = np.diff(self._ny, axis=0)[:, :-1]
        self._size = (w, h)
        self._radius = float(0.62 * (local[16, 0] - local[0, 0]))
        self._x = np.clip((self._nx - local[27, 0]) / self._radius, -1.0, 1.0)
        self._taper = _taper(self._ny, self._nx, h, w)
        d = interocular(lms)
        nose = local[[30, 33]].mean(0)
        self._nose_depth = 0.35 * self._radius * np.exp(
            -(((self._nx - nose[0]) / (0.35 * d)) ** 2 + ((self._ny - nose[1]) / (0.45 * d)) ** 2)
        )

    def frame(self, intensity: float, mouth: float, yaw_deg: float) -> np.ndarray:
        """Return the (H, W, 3) uint8 frame at expression ``intensity``, mouth opening, yaw."""
        theta = float(np.deg2rad(yaw_deg))
        x, r = self._x, self._radius
        # Depth profile 1 - x^2 rather than a true cylinder's sqrt(1 - x^2): its finite slope
        # keeps the map monotonic (no folded hair at the far edge) up to ~26 degrees.
        dx_yaw = r * (x * (np.cos(theta) - 1) - (1 - x * x) * np.sin(theta))
        qx = self._nx + dx_yaw * self._taper - self._nose_depth * np.sin(theta)
        # Expression and mouth fields live in the unturned face: look them up at the source.
        w = self._width
        col = np.clip(np.rint(qx), 0, w - 1).astype(np.intp)
        row = np.minimum(self._ny, self._size[1] - 1).astype(np.intp)
        f = self._fields[row * w + col]
        sy = self._ny + intensity * f[..., 0] + mouth * f[..., 2] + (self.speaker.region[0]
                                                                      - self._src_top)
        sx = qx + intensity * f[..., 1] + mouth * f[..., 3] + (self.speaker.region[2]
                                                              - self._src_left)
        coefficients = _quad_coefficients(sx, sy, self._cell_w, self._cell_h)
        warped = Image.new("RGB", self._size)
        # Image.transform(MESH) loops over the cells in Python with per-call checks that cost
        # more than the resampling; call its C routine per cell with the bilinear (QUAD)
        # coefficients computed for all cells at once.
        target, source = warped.im, self._source.im
        quad, bilinear = Image.Transform.QUAD, Image.Resampling.BILINEAR
        for box, coefficient in zip(self._boxes, coefficients.tolist(), strict=True):
            target.transform(box, source, quad, coefficient, bilinear, True)
        out = self.speaker.frame.copy()
        out[self._region] = np.asarray(warped)
        return out


def _quad_coefficients(sx: np.ndarray, sy: np.ndarray, cell_w: np.ndarray,
                       cell_h: np.ndarray) -> np.ndarray:
    """Return (cells, 8) coefficients of PIL's QUAD map for cells with source corners (sx, sy).

    Per cell, source = (x0 + ax*s + bx*t + cx*s*t, y0 + ...) for output offsets (s, t) in the
    cell: the bilinear map through the four corners (as ``Image.__transformer`` computes it).
    """
    out = []
    for c in (sx, sy):
        nw, ne, sw, se = c[:-1, :-1], c[:-1, 1:], c[1:, :-1], c[1:, 1:]
        out += [nw, (ne - nw) / cell_w, (sw - nw) / cell_h, (se - sw - ne + nw) / (cell_w * cell_h)]
    return np.stack(out, -1).reshape(-1, 8)


MESH_CELL = 12
"""Side in pixels of the cells whose corners carry the per-frame backward map."""
_PAD = 24


def _taper(y: np.ndarray, x: np.ndarray, h: int, w: int) -> np.ndarray:
    """Return a weight that is 1 inside the region and falls smoothly to 0 at its border."""

    def ramp(t: np.ndarray, n: int) -> np.ndarray:
        t = np.clip(np.minimum(t, n - t) / (0.18 * n), 0, 1)
        return t * t * (3 - 2 * t)

    return ramp(y, h) * ramp(x, w)
