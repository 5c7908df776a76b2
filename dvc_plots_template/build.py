"""Build offline.html, the HTML template that makes `dvc plots show` / `dvc plots diff` work without a network.

dvc-render's default page loads vega, vega-lite and vega-embed from cdn.jsdelivr.net through its `{scripts}`
placeholder. This template has no such placeholder and inlines the same three versions instead; `.dvc/config`
points `plots.html_template` at it. Rebuild from the npm tarballs (`npm pack vega@5.20.2 vega-lite@5.2.0
vega-embed@6.18.2`):

    python dvc_plots_template/build.py vega-5.20.2.tgz vega-lite-5.2.0.tgz vega-embed-6.18.2.tgz
"""

from __future__ import annotations

import re
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGES = {"vega": "vega.min.js", "vega-lite": "vega-lite.min.js", "vega-embed": "vega-embed.min.js"}
# dvc-render fills a template with str.replace on these; "</script" or "<!--" would end or confuse an inline script.
FORBIDDEN = ("{plot_divs}", "{scripts}", "{refresh_tag}", "</script", "<!--")

PAGE = """<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8">
{refresh_tag}
<title>DVC Plot</title>
<!-- {versions}: inlined (BSD-3-Clause, see LICENSE.* in dvc_plots_template/), so this page needs no network.
     Built by dvc_plots_template/build.py. -->
{inline}
<style>
table { border-spacing: 15px; }
</style>
</head>
<body>
{plot_divs}
</body>
</html>
"""


def read_member(tgz: Path, name: str) -> str:
    """One file of an npm tarball (`package/<name>`), as text."""
    with tarfile.open(tgz) as tar:
        member = tar.extractfile(f"package/{name}")
        if member is None:
            raise SystemExit(f"{tgz}: no package/{name}")
        return member.read().decode("utf-8")


def version_of(tgz: Path, package: str) -> str:
    """The version in an npm tarball's name (`vega-lite-5.2.0.tgz` -> `5.2.0`)."""
    match = re.fullmatch(rf"{re.escape(package)}-(\d+\.\d+\.\d+)\.tgz", tgz.name)
    if not match:
        raise SystemExit(f"{tgz.name}: expected {package}-<version>.tgz")
    return match.group(1)


def inline_script(tgz: Path, package: str) -> str:
    """The package's minified build as an inline <script>, without its source-map comment."""
    code = read_member(tgz, f"build/{PACKAGES[package]}")
    code = re.sub(r"\n?//# sourceMappingURL=\S+\s*$", "", code)
    bad = [s for s in FORBIDDEN if s in code]
    if bad:
        raise SystemExit(f"{tgz.name}: cannot inline, contains {bad}")
    return f"<script>\n{code}\n</script>"


def main(tarballs: list[str]) -> None:
    """Write offline.html and LICENSE.<package> from the three tarballs (in PACKAGES order)."""
    if len(tarballs) != len(PACKAGES):
        raise SystemExit(__doc__)
    paths = dict(zip(PACKAGES, map(Path, tarballs), strict=True))
    versions = ", ".join(f"{p} {version_of(t, p)}" for p, t in paths.items())
    inline = "\n".join(inline_script(t, p) for p, t in paths.items())
    page = PAGE.replace("{versions}", versions).replace("{inline}", inline)  # the code last: it is not scanned again
    (HERE / "offline.html").write_text(page, encoding="utf-8")
    for package, tgz in paths.items():
        (HERE / f"LICENSE.{package}").write_text(read_member(tgz, "LICENSE"), encoding="utf-8")


if __name__ == "__main__":
    main(sys.argv[1:])
