"""The self-contained HTML evaluation report and model card that a reviewer signs off on.

One file: CSS inline, every figure a base64 PNG drawn with matplotlib (Agg), no external URL. Every number in it
is read from an artifact (ingest summary and quarantine, validation.json, split_summary.json, the model dir,
the eval dir, the explain dir); numbers carry `data-metric="<metrics.json key>"` (or `data-summary`,
`data-split`, `data-subgroup` attributes) so that tests can check them against their source. No PHI: the report
names images by image_id only and never shows file paths or patient identifiers.

Modules, one layer each: `artifacts` (`load_artifacts`, the only file reads), `tables` (pure builders of table
rows and the display format), `figures` (matplotlib figures and the Grad-CAM gallery as base64 PNGs), `render`
(the template context, `render_html` over `fracture/templates/report.html.j2`, and `run_report`, the step).
"""

from fracture.report.render import run_report

__all__ = ["run_report"]
