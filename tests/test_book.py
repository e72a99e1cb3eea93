"""The Jupyter Book builds warning-free and the pages are self-contained.

One build of the whole book (every notebook executed in quick mode) into a
temporary folder, then checks on the HTML. Slow (a few minutes): marked
``book``; deselect with ``-m "not book"``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CDN_PATTERNS = ("cdn.jsdelivr", "unpkg.com", "unpkg", "cdnjs", "mathjax@", "googleapis", "polyfill.io")
HANGUL = re.compile("[\uac00-\ud7a3]")

pytestmark = [pytest.mark.book, pytest.mark.slow]


def _toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf8"))
    files = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                files.append(entry["file"])
            walk(entry.get("sections"))

    for part in toc.get("parts", []):
        walk(part.get("chapters"))
    walk(toc.get("chapters"))
    return files


def test_every_notebook_is_in_the_toc():
    """A chapter or assignment notebook left out of _toc.yml is silently not built."""
    listed = set(_toc_files())
    missing = [
        f"chapters/{nb.stem}"
        for nb in sorted((ROOT / "chapters").glob("*.ipynb"))
        if not nb.stem.endswith("_student") and f"chapters/{nb.stem}" not in listed
    ]
    assert not missing, f"notebooks not in _toc.yml (so not in the book): {missing}"


def test_every_toc_page_is_built(html):
    assert (html / "index.html").exists()
    for doc in _toc_files():
        page = html / f"{doc}.html"
        assert page.exists(), f"{doc} is in _toc.yml but {page.name} was not built"


def test_intro_shows_the_model_map(html):
    text = (html / "book" / "intro.html").read_text(encoding="utf8")
    assert re.search(r'<img[^>]+src="[^"]*\.png"', text), "the intro's model-map figure is missing"
    assert "Every chapter" in text


def test_chapter_one_has_a_png_figure(html):
    text = (html / "chapters" / "01_mle_kl.html").read_text(encoding="utf8")
    imgs = re.findall(r'<img[^>]+src="([^"]+)"', text)
    pngs = [src for src in imgs if src.startswith("data:image/png") or src.endswith(".png")]
    assert pngs, "chapter 1 should show at least one PNG figure"
    for src in pngs:
        if not src.startswith("data:"):
            assert (html / "chapters" / src).resolve().exists(), f"{src} is referenced but missing"


# a widget view needs a live kernel (or widget JavaScript from a CDN): in a static page it is dead
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
# what a tqdm text bar leaves in an output: " 45%|####5     | 450/1000 [00:01<00:02, 300.00step/s]"
TEXT_BAR = re.compile(r"\|\s*\d+/\d+ \[\d+:\d+|\d+(\.\d+)?(step|it)/s\]")


def test_no_dead_widgets_or_progress_bars(html):
    """The fixture builds with DGM_PROGRESS=on: progress bars and widgets must still stay out of the pages."""
    offenders = []
    for page in html.rglob("*.html"):
        text = page.read_text(encoding="utf8")
        if WIDGET_VIEW in text:
            offenders.append(f"{page.relative_to(html)}: a widget view")
        match = TEXT_BAR.search(text)
        if match:
            offenders.append(f"{page.relative_to(html)}: progress-bar text {match.group(0)!r}")
    assert not offenders, "\n".join(offenders)


def test_no_external_assets(html):
    offenders = []
    for page in html.rglob("*.html"):
        text = page.read_text(encoding="utf8")
        for pattern in CDN_PATTERNS:
            if pattern in text:
                offenders.append(f"{page.relative_to(html)}: {pattern}")
        for src in re.findall(r'<(?:script|link|img|iframe)[^>]+(?:src|href)="(https?://[^"]+)"', text):
            offenders.append(f"{page.relative_to(html)}: {src}")
    assert not offenders, "pages load external assets:\n" + "\n".join(sorted(set(offenders)))


def test_mathjax_is_served_locally(html):
    assert (html / "_static" / "mathjax" / "tex-chtml.js").exists()
    for name in ("book/intro.html", "book/notation.html"):
        text = (html / name).read_text(encoding="utf8")
        scripts = [s for s in re.findall(r'<script[^>]+src="([^"]+)"', text) if "mathjax" in s.lower()]
        assert scripts, f"{name} loads no MathJax"
        assert all(re.match(r"(\.\./)*_static/mathjax/", s) for s in scripts), scripts


def test_glossary_has_korean_terms(html):
    text = (html / "book" / "glossary.html").read_text(encoding="utf8")
    assert len(HANGUL.findall(text)) > 100
    assert "생성 모델" in text and "잠재변수" in text


def test_bibliography_lists_the_references(html):
    text = (html / "book" / "bibliography.html").read_text(encoding="utf8")
    for author in ("Goodfellow", "Kingma", "Ho", "Sohl-Dickstein", "Kullback"):
        assert author in text
