"""Tests for music2video.output.fonts: packaged fonts, per-character fallback, wrapping and fitting."""

import warnings

import numpy as np
import pytest
from PIL import Image, ImageDraw

from music2video.output.fonts import Fonts, draw_lines, fit, font_files, wrap


def test_packaged_fonts_cover_accents_and_cjk():
    pytest.importorskip("fontpkg_noto_sans")
    pytest.importorskip("noto_cjk_sans_jp_regular")
    fonts = Fonts(24)
    latin, cjk, pillow = (font for font, _ in fonts.faces)
    assert fonts.face("A") is latin and fonts.face("é") is latin and fonts.face("Ж") is latin
    assert fonts.face("三") is cjk and fonts.face("ア") is cjk and fonts.face("한") is cjk
    assert [font for _, font in fonts.runs("né 君の 名 ok")] == [latin, cjk, latin]
    # Real glyphs, not the same missing-glyph box for every character.
    masks = {bytes(cjk.getmask(ch)) for ch in "三日本語"}
    assert len(masks) == 4


def test_a_missing_character_warns_once_and_is_still_drawn():
    pytest.importorskip("fontpkg_noto_sans")
    fonts = Fonts(20, files=font_files()[:1])  # Noto Sans only: no CJK
    with pytest.warns(UserWarning, match=r"no font here has '三' \(U\+4E09") as caught:
        runs = fonts.runs("a 三日 b 本")
        fonts.width("語")
    assert len(caught) == 1
    assert runs[1] == ("三日 ", fonts.faces[-1][0])  # Pillow's own font draws the rest


def test_without_packaged_fonts_pillow_draws_ascii_silently():
    fonts = Fonts(20, files=[])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fonts.width("plain ascii") > 0
    with pytest.warns(UserWarning, match="no font here has 'é'"):
        fonts.width("café")


def test_wrap_keeps_lines_inside_the_width():
    fonts = Fonts(16)
    text = "a rather long lyric line that cannot possibly fit on one line of a small frame"
    wrapped = wrap(text, fonts, 120, max_lines=10)
    assert len(wrapped) > 2 and " ".join(wrapped) == text
    assert all(fonts.width(line) <= 120 for line in wrapped)
    cut = wrap(text, fonts, 120, max_lines=2)
    assert len(cut) == 2 and cut[0] == wrapped[0] and cut[1].endswith(fonts.ellipsis())
    assert fonts.width(cut[1]) <= 120
    assert wrap("one\ntwo", fonts, 120, max_lines=3) == ["one", "two"]


def test_wrap_cuts_text_without_spaces():
    pytest.importorskip("noto_cjk_sans_jp_regular")
    fonts = Fonts(16)
    text = "君の名は" * 8
    wrapped = wrap(text, fonts, 100, max_lines=10)
    assert len(wrapped) > 1 and "".join(wrapped) == text
    assert all(fonts.width(line) <= 100 for line in wrapped)


def test_fit_leaves_a_short_line_and_cuts_a_long_one():
    fonts = Fonts(16)
    assert fit("short", fonts, 200) == "short"
    assert fit("short", fonts, 200, force=True) == "short" + fonts.ellipsis()
    long = "a lyric line far too long for a narrow cell"
    cut = fit(long, fonts, 80)
    assert cut.endswith(fonts.ellipsis()) and fonts.width(cut) <= 80
    assert long.startswith(cut[:-len(fonts.ellipsis())])


def test_draw_lines_puts_the_fill_over_the_outline():
    fonts = Fonts(20)
    image = Image.new("RGB", (120, 60), (90, 90, 90))
    draw_lines(ImageDraw.Draw(image), ["Hi", "ok"], fonts, 60, 4, (255, 255, 255), 2, (0, 0, 0))
    pixels = np.asarray(image)  # (60, 120, 3)
    white, black = (pixels == 255).all(axis=-1), (pixels == 0).all(axis=-1)
    assert white.sum() > 20 and black.sum() > 20  # glyphs survive their own outlines
    rows = np.flatnonzero(white.any(axis=1))
    assert rows.max() - rows.min() >= fonts.line_height  # two lines, one under the other
