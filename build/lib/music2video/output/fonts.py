"""Fonts for text drawn into pictures: packaged-font discovery, per-character fallback, line
wrapping and fitting, and outlined drawing.

No system font, no ImageMagick: Noto Sans (PyPI fontpkg-noto-sans, OFL-1.1, 2 MB) for Latin,
Greek, Cyrillic and Vietnamese; Noto Sans CJK JP (PyPI noto-cjk-sans-jp-regular, OFL-1.1, 16 MB)
for Chinese, Japanese and Korean; Pillow's own font last. Each character is drawn with the first
of these that has it; characters none has are named in one warning and drawn as boxes.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from PIL import ImageDraw, ImageFont

ELLIPSIS = "\u2026"
PACKAGED_FONTS = 2  # Noto Sans and Noto Sans CJK JP, from PyPI


def font_files() -> list[Path]:
    """The packaged font files installed here, in the order they are tried."""
    found = []
    try:
        import fontpkg

        found.append(Path(fontpkg.path("Noto Sans")))
    except (ImportError, LookupError):  # fontpkg's FamilyNotInstalled is a LookupError
        pass
    try:
        import noto_cjk_sans_jp_regular

        found.append(Path(str(noto_cjk_sans_jp_regular.FONT_PATH)))
    except ImportError:
        pass
    return [path for path in found if path.is_file()]


def coverage(path: Path) -> frozenset[int]:
    """The code points a font file has glyphs for (its best cmap)."""
    from fontTools.ttLib import TTFont

    with TTFont(str(path), lazy=True, fontNumber=0) as font:
        return frozenset(font.getBestCmap() or ())


class Fonts:
    """The font chain at one pixel size: each character is drawn with the first font that has it."""

    def __init__(self, size: int, weight: str = "Regular", files: list[Path] | None = None):
        self.size = size
        self.faces: list[tuple[ImageFont.FreeTypeFont, frozenset[int] | None]] = []
        for path in font_files() if files is None else files:
            font = ImageFont.truetype(str(path), size)
            if weight in {n.decode() if isinstance(n, bytes) else n for n in _names(font)}:
                font.set_variation_by_name(weight)
            self.faces.append((font, coverage(path)))
        self.faces.append((ImageFont.load_default(size), None))  # last resort: Pillow's own
        metrics = [font.getmetrics() for font, _ in self.faces]
        self.ascent = max(a for a, _ in metrics)
        self.line_height = max(a + d for a, d in metrics)
        self.warned = False  # a missing character was reported

    def face(self, char: str) -> ImageFont.FreeTypeFont:
        """The first font that has the character; Pillow's own when none has (one warning)."""
        for font, chars in self.faces[:-1]:
            if ord(char) in chars:
                return font
        if not (char.isspace() or " " <= char <= "~" or self.warned):  # Pillow's has ASCII
            self.warned = True
            fix = ("" if len(self.faces) - 1 >= PACKAGED_FONTS else "; pip install "
                   "fontpkg-noto-sans noto-cjk-sans-jp-regular covers Latin, Greek, Cyrillic and CJK")
            warnings.warn(f"no font here has {char!r} (U+{ord(char):04X}, an emoji or a rare "
                          f"script); such characters are drawn as boxes{fix}", stacklevel=2)
        return self.faces[-1][0]

    def has(self, char: str) -> bool:
        """Whether a packaged font has the character."""
        return any(ord(char) in chars for _, chars in self.faces[:-1])

    def runs(self, text: str) -> list[tuple[str, ImageFont.FreeTypeFont]]:
        """The text cut into runs that one font draws."""
        result: list[tuple[str, ImageFont.FreeTypeFont]] = []
        for char in text:
            font = result[-1][1] if char == " " and result else self.face(char)
            if result and result[-1][1] is font:
                result[-1] = (result[-1][0] + char, font)
            else:
                result.append((char, font))
        return result

    def width(self, text: str) -> float:
        """Width of one line in pixels."""
        return sum(font.getlength(run) for run, font in self.runs(text))

    def ellipsis(self) -> str:
        """The ellipsis character when a font has it, else three dots."""
        return ELLIPSIS if self.has(ELLIPSIS) else "..."


def _names(font: ImageFont.FreeTypeFont) -> list:
    """Named instances of a variable font ([] for a static one)."""
    try:
        return font.get_variation_names()
    except OSError:  # not a variable font
        return []


def _split_long(word: str, fonts: Fonts, width: float) -> list[str]:
    """A word wider than the line, cut between characters (CJK lines have no spaces)."""
    if fonts.width(word) <= width:
        return [word]
    pieces = [""]
    for char in word:
        if pieces[-1] and fonts.width(pieces[-1] + char) > width:
            pieces.append("")
        pieces[-1] += char
    return pieces


def wrap(text: str, fonts: Fonts, width: float, max_lines: int) -> list[str]:
    """Text as lines no wider than `width`, at most max_lines; a cut last line ends in '…'."""
    lines: list[str] = []
    for paragraph in text.split("\n"):
        line = ""
        for word in paragraph.split():
            for piece in _split_long(word, fonts, width):
                joined = f"{line} {piece}" if line else piece
                if line and fonts.width(joined) > width:
                    lines.append(line)
                    line = piece
                else:
                    line = joined
        if line:
            lines.append(line)
    if len(lines) <= max_lines:
        return lines
    rest = " ".join(lines[max_lines - 1:])
    return lines[:max_lines - 1] + [fit(rest, fonts, width, force=True)]


def fit(text: str, fonts: Fonts, width: float, force: bool = False) -> str:
    """One line cut with an ellipsis to fit `width` (always ending in one when force)."""
    if not force and fonts.width(text) <= width:
        return text
    dots = fonts.ellipsis()
    while text and fonts.width(text.rstrip() + dots) > width:
        text = text[:-1]
    return text.rstrip() + dots


def draw_lines(draw: ImageDraw.ImageDraw, lines: list[str], fonts: Fonts, centre_x: float,
               top: float, fill, stroke: int = 0, stroke_fill=None) -> None:
    """Draws lines centred on centre_x from `top` down; outlines first, so none covers a glyph."""
    passes = ([(stroke_fill, stroke)] if stroke else []) + [(fill, 0)]
    for colour, width in passes:
        for n, line in enumerate(lines):
            x = centre_x - fonts.width(line) / 2
            baseline = top + n * fonts.line_height + fonts.ascent
            for run, font in fonts.runs(line):
                draw.text((x, baseline), run, font=font, anchor="ls", fill=colour,
                          stroke_width=width, stroke_fill=colour)
                x += font.getlength(run)
