"""`dvc plots show` works offline: .dvc/config points DVC at an HTML template with vega inlined, no CDN."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

from dvc_render import VegaRenderer, render_html

REPO = Path(__file__).resolve().parents[2]
EXTERNAL = re.compile(r"""<(script|link|img|iframe)\b[^>]*\b(src|href)\s*=\s*["']?(https?:)?//""", re.I)


def template_path() -> Path:
    """`plots.html_template` of .dvc/config, resolved the way DVC does (relative to the .dvc directory)."""
    config = configparser.ConfigParser()
    config.read(REPO / ".dvc" / "config")
    return (REPO / ".dvc" / config["plots"]["html_template"].strip()).resolve()


def test_dvc_config_names_the_vendored_template() -> None:
    assert template_path() == REPO / "dvc_plots_template" / "offline.html"
    for package in ("vega", "vega-lite", "vega-embed"):  # BSD-3-Clause: the licence travels with the code
        assert "Redistribution and use" in (REPO / "dvc_plots_template" / f"LICENSE.{package}").read_text()


def test_plots_page_loads_nothing_from_the_network(tmp_path) -> None:
    points = [{"fpr": 0.0, "tpr": 0.0, "rev": "workspace"}, {"fpr": 1.0, "tpr": 1.0, "rev": "workspace"}]
    renderer = VegaRenderer(points, "roc", template="simple", x="fpr", y="tpr")
    default = Path(render_html([renderer], tmp_path / "cdn" / "index.html")).read_text()
    assert EXTERNAL.search(default), "dvc-render's default page no longer loads vega from a CDN: recheck this test"
    page = Path(render_html([renderer], tmp_path / "offline" / "index.html", template_path())).read_text()
    assert not EXTERNAL.search(page)
    assert "<script src" not in page and "cdn.jsdelivr" not in page
    assert page.count('var e="5.20.2"') + page.count('var n="5.2.0"') == 2  # vega and vega-lite inlined
    assert "vegaEmbed=" in page and "vegaEmbed('#" in page  # vega-embed defined, and the plot embedded with it
    assert "{plot_divs}" not in page and "{refresh_tag}" not in page
