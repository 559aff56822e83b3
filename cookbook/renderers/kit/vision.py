"""Image parts -> tinker ``ImageChunk`` s: image bytes, header decoding and each family's token count.

Pure standard library (no Pillow, no torch): an image is sent to Tinker as its original PNG or JPEG bytes; the
renderer only needs its width and height (read from the PNG ``IHDR`` chunk or the JPEG ``SOFn`` marker) to
compute ``expected_tokens`` the way the family's image processor does.

Qwen3-VL / Qwen3.5 / Qwen3.6 (:data:`QWEN3_VL`): the Qwen2-VL "smart resize" with patch size 16 and merge
size 2 (factor 32), ``shortest_edge`` = 65,536 and ``longest_edge`` = 16,777,216 pixels (the values of
Qwen3-VL's ``preprocessor_config.json``): both sides rounded to a multiple of 32 (half to even, as Python's
``round``); if the area is above the maximum (below the minimum) both sides are scaled down (up) by
``sqrt(area ratio)`` and floored (ceiled) to a multiple of 32; the image then takes
``(h / 16) * (w / 16) / 4`` tokens. Oracle: tml-renderers 0.2.1's ``Qwen35`` renderer (the test
``tests/renderers/test_vision.py`` compares the counts). Unlike transformers' processor, an image smaller than
32 pixels on a side is accepted (tml-renderers accepts it and scales it up); an aspect ratio above 200 is
refused, as both do.

A renderer writes an image as the family's markers around an :class:`ImageSegment`; the flattened token list
holds ``expected_tokens`` copies of the family's pad token at its place (what the HF processor expands
``<|image_pad|>`` to), and :func:`model_input_from_tokens` turns those runs into ``ImageChunk`` s. Image
positions are never trained.
"""

from __future__ import annotations

import base64
import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cookbook.errors import RendererError

if TYPE_CHECKING:
    import tinker

ImageFormat = Literal["png", "jpeg"]

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


@dataclass(frozen=True)
class VisionConfig:
    """A family's image processor: Qwen2-VL-style smart resize."""

    patch_size: int
    merge_size: int
    min_pixels: int
    max_pixels: int
    max_aspect_ratio: float = 200.0

    @property
    def factor(self) -> int:
        return self.patch_size * self.merge_size

    def resized(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after the smart resize."""
        if width <= 0 or height <= 0:
            raise RendererError(f"image has size {width}x{height}; width and height must be positive")
        if max(width, height) / min(width, height) > self.max_aspect_ratio:
            raise RendererError(
                f"image of {width}x{height} has an aspect ratio above {self.max_aspect_ratio:g}, which the "
                "image processor refuses; crop or pad it"
            )
        f = self.factor
        h = max(f, round(height / f) * f)
        w = max(f, round(width / f) * f)
        if h * w > self.max_pixels:
            beta = math.sqrt(height * width / self.max_pixels)
            h = max(f, math.floor(height / beta / f) * f)
            w = max(f, math.floor(width / beta / f) * f)
        elif h * w < self.min_pixels:
            beta = math.sqrt(self.min_pixels / (height * width))
            h = math.ceil(height * beta / f) * f
            w = math.ceil(width * beta / f) * f
        return w, h

    def num_tokens(self, width: int, height: int) -> int:
        w, h = self.resized(width, height)
        return (w // self.patch_size) * (h // self.patch_size) // (self.merge_size**2)


#: Qwen3-VL, Qwen3.5, Qwen3.6 (patch 16, merge 2)
QWEN3_VL = VisionConfig(patch_size=16, merge_size=2, min_pixels=65_536, max_pixels=16_777_216)


@dataclass(frozen=True)
class NavitConfig(VisionConfig):
    """Kimi K2.5 / K2.6 (MoonViT, "navit" resize): the image is scaled down (never up) by
    ``min(1, sqrt(in_patch_limit / (max(1, w // patch) * max(1, h // patch))), side_limit * patch / w,
    side_limit * patch / h)``, each side truncated to an integer (at least 1, at most ``side_limit * patch``), then
    padded up to a multiple of ``patch * merge``; it takes ``(w / (patch * merge)) * (h / (patch * merge))``
    tokens. No aspect-ratio limit. Oracle: tml-renderers 0.2.1's ``KimiK25`` (``tests/renderers/test_kimi_k25_renderer.py``
    compares the counts over sizes from 1x1 to 7200x10 and 2000x1700)."""

    in_patch_limit: int = 16_384
    side_limit: int = 512

    def resized(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) after the scaling and the padding to a multiple of ``patch * merge``."""
        if width <= 0 or height <= 0:
            raise RendererError(f"image has size {width}x{height}; width and height must be positive")
        p = self.patch_size
        scale = min(
            1.0,
            math.sqrt(self.in_patch_limit / (max(1, width // p) * max(1, height // p))),
            self.side_limit * p / width,
            self.side_limit * p / height,
        )
        w = min(max(1, int(width * scale)), self.side_limit * p)
        h = min(max(1, int(height * scale)), self.side_limit * p)
        f = self.factor
        return -(-w // f) * f, -(-h // f) * f

    def num_tokens(self, width: int, height: int) -> int:
        w, h = self.resized(width, height)
        return (w // self.factor) * (h // self.factor)


#: Kimi K2.5 / K2.6 MoonViT (patch 14, merge 2, at most 16,384 patches and 512 patches a side)
MOONVIT = NavitConfig(patch_size=14, merge_size=2, min_pixels=1, max_pixels=16_384 * 14 * 14, max_aspect_ratio=math.inf)


@dataclass(frozen=True)
class GridConfig(VisionConfig):
    """Inkling (TMLv0): no resize; ``(width // patch + 1) * ceil(height / patch)`` tokens with ``patch`` 40 px --
    the count tml-renderers 0.2.1's ``v0.Renderer`` gives an ``ImagePointer`` (its compiled image layout; no Inkling
    image-processor config is public). The formula is fitted to and checked against tml over sizes from 1x1 to
    20000x1 and 40x8192 (``tests/renderers/test_tml_v0_vision.py``); the asymmetry (``// + 1`` across, ``ceil``
    down: 40x40 is 2 tokens, 39x39 and 40x39 one and two) is tml's. No size or aspect-ratio limit."""

    def resized(self, width: int, height: int) -> tuple[int, int]:
        if width <= 0 or height <= 0:
            raise RendererError(f"image has size {width}x{height}; width and height must be positive")
        return width, height

    def num_tokens(self, width: int, height: int) -> int:
        w, h = self.resized(width, height)
        return (w // self.patch_size + 1) * -(-h // self.patch_size)


#: Inkling / Inkling-Small (TMLv0 ``<|content_image|>`` messages)
INKLING = GridConfig(patch_size=40, merge_size=1, min_pixels=1, max_pixels=2**62, max_aspect_ratio=math.inf)


def vision_config_for_model(model_name: str) -> VisionConfig | None:
    """The image processor of a Tinker base model, or ``None`` for a text-only model."""
    low = model_name.lower()
    if "qwen3-vl" in low or "qwen3.5" in low or "qwen3.6" in low:
        return QWEN3_VL
    if "kimi-k2.5" in low or "kimi-k2.6" in low:
        return MOONVIT
    if low.startswith("thinkingmachines/inkling"):
        return INKLING
    return None


# ---------------------------------------------------------------------------------------------- decoding


def image_header(data: bytes) -> tuple[ImageFormat, int, int]:
    """``(format, width, height)`` of PNG or JPEG bytes, from the header alone; ``ValueError`` if neither."""
    if data.startswith(_PNG_MAGIC):
        if len(data) < 33 or data[12:16] != b"IHDR":
            raise ValueError("PNG data has no IHDR chunk (truncated or corrupt)")
        width, height = struct.unpack(">II", data[16:24])
        if width == 0 or height == 0:
            raise ValueError(f"PNG header gives size {width}x{height}")
        return "png", int(width), int(height)
    if data.startswith(b"\xff\xd8"):
        i = 2
        while i + 4 <= len(data):
            if data[i] != 0xFF:
                raise ValueError(f"JPEG data: expected a marker at byte {i}")
            marker = data[i + 1]
            if marker == 0xFF:  # fill byte
                i += 1
                continue
            if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
                i += 2
                continue
            (length,) = struct.unpack(">H", data[i + 2 : i + 4])
            if marker in _JPEG_SOF:
                if i + 9 > len(data):
                    break
                height, width = struct.unpack(">HH", data[i + 5 : i + 9])
                if width == 0 or height == 0:
                    raise ValueError(f"JPEG header gives size {width}x{height}")
                return "jpeg", int(width), int(height)
            if length < 2:
                raise ValueError(f"JPEG data: segment length {length} at byte {i}")
            i += 2 + length
        raise ValueError("JPEG data has no frame header (SOFn) marker (truncated or corrupt)")
    raise ValueError("not PNG or JPEG data (unknown magic bytes)")


def image_bytes(image: Any) -> bytes:
    """The bytes of an :class:`~cookbook.renderers.base.ImagePart` ``image``: raw bytes, a base64 ``data:`` URI,
    a local path / ``file://`` URI, or an object with a Pillow-style ``save(fp, format=)`` (saved as PNG)."""
    if isinstance(image, bytes | bytearray | memoryview):
        return bytes(image)
    if isinstance(image, Path):
        return _read(image)
    if isinstance(image, str):
        if image.startswith("data:"):
            header, sep, payload = image.partition(",")
            if not sep or not header.endswith(";base64"):
                raise RendererError("image data URI must be base64: data:image/png;base64,<payload>")
            try:
                return base64.b64decode(payload, validate=True)
            except ValueError as exc:
                raise RendererError(f"image data URI has invalid base64 ({exc})") from exc
        if image.startswith("file://"):
            return _read(Path(image[len("file://") :]))
        if "://" in image:
            raise RendererError(
                f"image {image[:60]!r} is a remote URL; renderers never fetch, so download it and pass the bytes "
                "(or a data: URI / local path)"
            )
        return _read(Path(image))
    save = getattr(image, "save", None)
    if callable(save):
        import io

        buf = io.BytesIO()
        save(buf, format="PNG")
        return buf.getvalue()
    raise RendererError(
        f"image part holds a {type(image).__name__}; expected PNG/JPEG bytes, a data: URI, a local path or a "
        "PIL image"
    )


def _read(path: Path) -> bytes:
    try:
        return path.expanduser().read_bytes()
    except OSError as exc:
        raise RendererError(f"cannot read image file {str(path)!r} ({exc})") from exc


# ---------------------------------------------------------------------------------------------- segments


@dataclass(frozen=True)
class ImageSegment:
    """One image in a rendered message: ``expected_tokens`` positions of ``pad_token`` in the token list."""

    data: bytes
    format: ImageFormat
    width: int
    height: int
    expected_tokens: int
    pad_token: int

    def chunk(self) -> tinker.types.ImageChunk:
        import tinker

        return tinker.types.ImageChunk(data=self.data, format=self.format, expected_tokens=self.expected_tokens)


def image_segment(image: Any, config: VisionConfig, pad_token: int, where: str = "image part") -> ImageSegment:
    """An image part's ``image`` -> :class:`ImageSegment` (bytes, format, size, token count)."""
    data = image_bytes(image)
    try:
        fmt, width, height = image_header(data)
    except ValueError as exc:
        raise RendererError(f"{where}: cannot decode the image ({exc}); pass PNG or JPEG bytes") from exc
    try:
        n = config.num_tokens(width, height)
    except RendererError as exc:
        raise RendererError(f"{where}: {exc}") from exc
    return ImageSegment(data, fmt, width, height, n, pad_token)


def content_runs(
    content: Sequence[Any], config: VisionConfig, pad_token: int, idx: int
) -> list[str | ImageSegment]:
    """A message's text and image parts in order, as what a format writes: consecutive text parts joined into one
    text (a chat template concatenates them, and the official renderers encode them as one text, so the tokens
    at a part boundary are the joined text's), each image part an :class:`ImageSegment`; thinking parts are left
    out (they are reasoning, not content). ``idx``: the message's index, for errors."""
    runs: list[str | ImageSegment] = []
    for j, p in enumerate(content):
        if p["type"] == "image":
            runs.append(image_segment(p["image"], config, pad_token, f"message {idx} part {j}"))
        elif p["type"] == "text":
            if runs and isinstance(runs[-1], str):
                runs[-1] += str(p["text"])
            else:
                runs.append(str(p["text"]))
    return runs


def model_input_from_tokens(tokens: Sequence[int], images: Sequence[tuple[int, ImageSegment]]) -> tinker.ModelInput:
    """A ``ModelInput`` from the flattened tokens, each ``(start, image)`` run of pad tokens an ``ImageChunk``."""
    import tinker

    chunks: list[Any] = []
    pos = 0
    for start, img in sorted(images, key=lambda s: s[0]):
        if start < pos or start + img.expected_tokens > len(tokens):
            raise RendererError(f"image at token {start} overlaps another chunk (internal error)")
        if start > pos:
            chunks.append(tinker.types.EncodedTextChunk(tokens=list(tokens[pos:start])))
        chunks.append(img.chunk())
        pos = start + img.expected_tokens
    if pos < len(tokens) or not chunks:
        chunks.append(tinker.types.EncodedTextChunk(tokens=list(tokens[pos:])))
    return tinker.ModelInput(chunks=chunks)


# ---------------------------------------------------------------------------------------------- test images


def make_png(width: int, height: int, seed: int = 0) -> bytes:
    """A deterministic RGB PNG (a gradient that depends on ``seed``), for specs and tests."""
    rows = []
    for y in range(height):
        row = bytes(((x * 7 + y * 13 + seed * 31 + c * 85) & 0xFF) for x in range(width) for c in range(3))
        rows.append(b"\x00" + row)

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return _PNG_MAGIC + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"".join(rows), 9)) + chunk(b"IEND", b"")


def data_uri(data: bytes, fmt: ImageFormat = "png") -> str:
    return f"data:image/{fmt};base64," + base64.b64encode(data).decode("ascii")
