"""Pages that open without a network: the browser libraries they load, vendored.

Two kinds of page the pipeline leaves for people load their scripts, styles and fonts from CDNs:
Great Expectations' Data Docs (bootstrap, bootstrap-table, jQuery, Font Awesome, vega; GX's logo
from an S3 bucket) and `dvc plots show`'s page (vega, vega-lite, vega-embed). On an air-gapped
hospital or HPC machine the Data Docs then open as an empty, unstyled page (bootstrap-table draws
their tables) and the plots page draws nothing. The files those URLs serve are vendored in
`biomedclip/vendor/` (from their npm packages, at the versions the pages ask for; its README.md
gives each licence), and:

- `localize_site` points a Data Docs site at copies of them inside the site (relative to each
  page, so the folder opens from `file://` and anywhere it is copied to);
- `dvc_plots_template` is the HTML template DVC fills (`plots.html_template` in .dvc/config,
  written to .dvc/plots.html by `python -m biomedclip.offline_pages`): the three vega libraries
  inlined, so the page DVC writes is whole wherever it is written (`dvc plots show -o DIR`).

GX's templates hard-code the CDN URLs (its `custom_views_directory` only adds templates after its
own in the lookup order, so it cannot replace them): the site is rewritten after GX writes it.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import shutil
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from biomedclip.atomic_io import atomic_write_bytes

log = logging.getLogger(__name__)

VENDOR = Path(str(files("biomedclip") / "vendor"))
SITE_VENDOR = "static/vendor"  # where a Data Docs site keeps its copies


@dataclass(frozen=True)
class Vendored:
    """One file of an npm package, kept as vendor/<package>@<version>/<path>."""

    package: str
    version: str
    path: str
    urls: tuple[str, ...] = ()  # the addresses pages load it from (none: another file loads it)

    @property
    def local(self) -> str:
        return f"{self.package}@{self.version}/{self.path}"


def _fonts(*names: str) -> tuple[Vendored, ...]:
    # all.min.css loads them relative to itself (../webfonts/); woff2 comes first in each
    # @font-face, so browsers never ask for the .ttf fallbacks, which are not vendored.
    return tuple(Vendored("@fortawesome/fontawesome-free", "6.6.0", f"webfonts/{name}.woff2")
                 for name in names)


JSDELIVR = "https://cdn.jsdelivr.net/npm/"
CDNJS = "https://cdnjs.cloudflare.com/ajax/libs/"
TABLE = "https://unpkg.com/bootstrap-table@"
FILTER_CONTROL = "dist/extensions/filter-control/bootstrap-table-filter-control"
VEGA = Vendored("vega", "5.20.2", "build/vega.min.js",
                (f"{JSDELIVR}vega@5", f"{JSDELIVR}vega@5.20.2"))
VEGA_LITE = Vendored("vega-lite", "5.2.0", "build/vega-lite.min.js",
                     (f"{JSDELIVR}vega-lite@5", f"{JSDELIVR}vega-lite@5.2.0"))
VEGA_EMBED = Vendored("vega-embed", "6.18.2", "build/vega-embed.min.js",
                      (f"{JSDELIVR}vega-embed@6", f"{JSDELIVR}vega-embed@6.18.2"))
# Every file, with the URLs of GX 1.x's templates (render/view/templates) and dvc-render's that
# serve it. The vega versions are the ones dvc-render pins; GX asks for any vega 5, vega-lite 5
# and vega-embed 6, which they are.
ASSETS: tuple[Vendored, ...] = (
    Vendored("bootstrap", "4.3.1", "dist/css/bootstrap.min.css",
             ("https://maxcdn.bootstrapcdn.com/bootstrap/4.3.1/css/bootstrap.min.css",)),
    Vendored("bootstrap", "4.3.1", "dist/js/bootstrap.min.js",
             ("https://stackpath.bootstrapcdn.com/bootstrap/4.3.1/js/bootstrap.min.js",)),
    Vendored("bootstrap-table", "1.19.1", "dist/bootstrap-table.min.css",
             (f"{TABLE}1.19.1/dist/bootstrap-table.min.css",)),
    Vendored("bootstrap-table", "1.19.1", "dist/bootstrap-table.min.js",
             (f"{TABLE}1.19.1/dist/bootstrap-table.min.js",)),
    Vendored("bootstrap-table", "1.19.1", f"{FILTER_CONTROL}.min.js",
             (f"{TABLE}1.19.1/{FILTER_CONTROL}.min.js",)),
    # GX asks for 1.19.0's filter-control CSS; its .css is byte for byte 1.19.1's (and its
    # .min.css the same rules, but for the version in the banner).
    Vendored("bootstrap-table", "1.19.1", f"{FILTER_CONTROL}.css",
             (f"{TABLE}1.19.0/{FILTER_CONTROL}.css", f"{TABLE}1.19.0/{FILTER_CONTROL}.min.css")),
    Vendored("bootstrap-datepicker", "1.9.0", "dist/css/bootstrap-datepicker.min.css",
             (f"{CDNJS}bootstrap-datepicker/1.9.0/css/bootstrap-datepicker.min.css",)),
    Vendored("bootstrap-datepicker", "1.9.0", "dist/js/bootstrap-datepicker.min.js",
             (f"{CDNJS}bootstrap-datepicker/1.9.0/js/bootstrap-datepicker.min.js",)),
    # The package's own minified build of the stylesheet GX loads unminified (883 KB -> 153 KB).
    Vendored("@forevolve/bootstrap-dark", "1.1.0", "dist/css/bootstrap-prefers-dark.min.css",
             (f"{JSDELIVR}@forevolve/bootstrap-dark@1.1.0/dist/css/bootstrap-prefers-dark.css",)),
    Vendored("@fortawesome/fontawesome-free", "6.6.0", "css/all.min.css",
             (f"{CDNJS}font-awesome/6.6.0/css/all.min.css",)),
    *_fonts("fa-brands-400", "fa-regular-400", "fa-solid-900", "fa-v4compatibility"),
    Vendored("jquery", "3.7.1", "dist/jquery.min.js",
             ("https://code.jquery.com/jquery-3.7.1.min.js",)),
    Vendored("popper.js", "1.12.9", "dist/umd/popper.min.js",
             (f"{CDNJS}popper.js/1.12.9/umd/popper.min.js",)),
    VEGA, VEGA_LITE, VEGA_EMBED,
)
# GX's logo, from its own bucket (with a `?d=<time>&dataContextId=<id>` query that tells GX who
# opened the page): the copy GX writes into every site instead. The dark-mode stylesheet swaps in
# a white-ink logo the package does not ship; the site's one is inverted for it (OFFLINE_STYLE).
GX_IMAGES = "https://great-expectations-web-assets.s3.us-east-2.amazonaws.com/"
SITE_FILES = {f"{GX_IMAGES}logo-long.png": "static/images/logo-long.png",
              f"{GX_IMAGES}full_logo_dark.png": "static/images/logo-long.png"}
OFFLINE_STYLE = ("<style>@media (prefers-color-scheme: dark) "
                 "{ .navbar-brand a { filter: invert(1); } }</style>\n")

URL = re.compile(r"""https?://[^\s"'()<>]+""")
LOADING_TAG = re.compile(r"<(?:script|link|img|iframe|source|embed|object|video|audio)\b[^>]*>",
                         re.I)
LOADED_URL = re.compile(r"""\b(?:src|href|data)\s*=\s*["']?(https?://[^\s"'<>]+)""", re.I)
CSS_URL = re.compile(r"""(?:url\(\s*["']?|@import\s+["'])(https?://[^\s"')]+)""", re.I)
SRI = re.compile(r"""\s+(?:integrity|crossorigin)(?:\s*=\s*(?:"[^"]*"|'[^']*'|[^\s>]+))?""",
                 re.I)
# A reference to the site's own static folder: GX writes validation pages one level deeper than
# its templates count (their favicon points at validations/static/), so each is re-anchored.
STATIC_REF = re.compile(r"""(?P<attr>\b(?:src|href)=["'])(?:\./|(?:\.\./)+)static/""")


def _by_url() -> dict[str, Vendored]:
    return {url: asset for asset in ASSETS for url in asset.urls}


def external_loads(text: str) -> list[str]:
    """The URLs off this machine a page (or stylesheet) loads: script, style, font, image and
    frame sources, CSS `url()`s and `@import`s. Plain links (`<a href>`) are not loads."""
    tags = [tag.group() for tag in LOADING_TAG.finditer(text)]
    found = {url for tag in tags for url in LOADED_URL.findall(tag)}
    return sorted(found | set(CSS_URL.findall(text)))


def _relative(target: str, page: Path, site: Path) -> str:
    """`target` (relative to the site root) as a URL relative to `page`'s folder."""
    return Path(os.path.relpath(site / target, page.parent)).as_posix()


def _localize(text: str, page: Path, site: Path, used: set[Vendored]) -> str:
    by_url = _by_url()

    def local(url: str) -> str | None:
        base = url.split("?", 1)[0]
        if base in by_url:
            used.add(by_url[base])
            return _relative(f"{SITE_VENDOR}/{by_url[base].local}", page, site)
        return _relative(SITE_FILES[base], page, site) if base in SITE_FILES else None

    def tag(match: re.Match[str]) -> str:
        # A subresource-integrity check needs CORS, which file:// pages do not have: it would
        # block the local copy. The copies are the very files the hashes name (tests check).
        text = match.group()
        return SRI.sub("", text) if any(local(url) for url in URL.findall(text)) else text

    depth = "../" * (len(page.relative_to(site).parts) - 1) or "./"
    text = LOADING_TAG.sub(tag, text)
    text = URL.sub(lambda m: local(m.group()) or m.group(), text)
    return STATIC_REF.sub(lambda m: f"{m['attr']}{depth}static/", text)


def localize_site(site: Path) -> list[str]:
    """Make a Data Docs site load no file from the network: every CDN URL of its pages and
    stylesheets points at a copy under `site/static/vendor/` instead, relative to the page.
    Returns the external loads left (a URL no vendored file serves: GX changed its templates),
    after logging them."""
    used: set[Vendored] = set()
    left: set[str] = set()
    for page in sorted([*site.rglob("*.html"), *site.rglob("*.css")]):
        if SITE_VENDOR in page.relative_to(site).as_posix():
            continue
        text = _localize(page.read_text(encoding="utf-8"), page, site, used)
        if page.suffix == ".html" and OFFLINE_STYLE not in text:
            text = text.replace("</head>", f"{OFFLINE_STYLE}</head>", 1)
        page.write_text(text, encoding="utf-8")
        left.update(external_loads(text))
    # A file that no URL names comes with the files of its package that load it (the fonts)
    packages = {(asset.package, asset.version) for asset in used}
    used |= {a for a in ASSETS if not a.urls and (a.package, a.version) in packages}
    for asset in used:
        copy = site / SITE_VENDOR / asset.local
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(VENDOR / asset.local, copy)
    if left:
        log.warning("the Data Docs in %s still load %d file(s) from the network (no vendored copy "
                    "in biomedclip/vendor): %s", site, len(left), ", ".join(sorted(left)))
    return sorted(left)


def _inline_script(asset: Vendored) -> str:
    code = (VENDOR / asset.local).read_text(encoding="utf-8")
    # What would end the <script> early, or be filled in by DVC (it replaces `{name}` in the page)
    for unsafe in ("</script", "<!--", "{plot_divs}", "{scripts}", "{refresh_tag}"):
        if unsafe in code.lower():
            raise ValueError(f"{asset.local} holds {unsafe!r}: it cannot be inlined as it is")
    return f"<script>/* {asset.package}@{asset.version} */\n{code}\n</script>"


def dvc_plots_template() -> str:
    """The page `dvc plots show` / `dvc plots diff` fill: DVC's own page (dvc_render.html), but
    for vega, vega-lite and vega-embed inlined in place of its CDN `{scripts}`."""
    scripts = "\n".join(_inline_script(asset) for asset in (VEGA, VEGA_LITE, VEGA_EMBED))
    return f"""<!DOCTYPE html>
<html>
<head>
    {{refresh_tag}}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- Written by `python -m biomedclip.offline_pages` from biomedclip/vendor (licences in its
         README.md): the plots open without a network. Do not edit; rewrite. -->
{scripts}
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m biomedclip.offline_pages",
        description="Write the HTML template `dvc plots show` fills (.dvc/config's "
                    "plots.html_template), with vega, vega-lite and vega-embed inlined from "
                    "biomedclip/vendor: run it after changing a vendored vega file.")
    parser.add_argument("out", nargs="?", type=Path, default=Path(".dvc/plots.html"),
                        help="where to write it (default: .dvc/plots.html)")
    out = parser.parse_args(argv).out
    atomic_write_bytes(out, dvc_plots_template().encode())
    print(f"wrote {out}")


if __name__ == "__main__":  # pragma: no cover
    main()
