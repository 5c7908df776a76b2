"""The MLflow UI link that the demo summary (`tools/demo.py`) and `register` print opens the runs table.

Not the GenAI overview.

MLflow 3.17's UI starts every experiment on its GenAI overview whatever the experiment's kind tag says
(measured: `#/experiments/<id>` renders "Overview ... Traces ... Sessions" for a tagged experiment too); the
printed link carries `workflowType=machine_learning`, which switches the UI to model training. Needs Chromium
(Debian's, at /usr/bin/chromium); skipped with that reason when absent.
"""

from __future__ import annotations

import html
import re
import subprocess
import uuid

import pytest

from fracture.tracking import EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND, ensure_experiment, ui_links
from tests.integration.test_report_render import find_chromium

pytestmark = pytest.mark.integration


def page_text(url: str, profile) -> str:  # noqa: ANN001
    """The text of the page after its scripts ran (headless Chromium, --dump-dom)."""
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("Chromium not found (install it with `apt-get install -y chromium`)")
    cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", f"--user-data-dir={profile}",
           "--disable-background-networking", "--virtual-time-budget=20000", "--window-size=1400,1000",
           "--dump-dom", url]  # fmt: skip
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False).stdout
    text = re.sub(r"<script.*?</script>|<style.*?</style>", " ", dom, flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", text)))


def test_the_printed_runs_link_opens_the_runs_table(registry_env, tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(registry_env)
    exp_id = ensure_experiment(client, f"ui-{uuid.uuid4().hex[:8]}")
    assert client.get_experiment(exp_id).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    run_name = f"train-{uuid.uuid4().hex[:6]}-20261202T000000"
    client.set_terminated(client.create_run(exp_id, run_name=run_name).info.run_id)
    runs_link = ui_links(registry_env, exp_id, "fracture-swin")[0].removeprefix("runs:").strip()
    text = page_text(runs_link, tmp_path / "profile")
    assert "Run Name" in text and run_name in text, text[:1500]
    assert f"Runs - Experiment {exp_id}" in text  # the runs view, not "Overview - Experiment ..."
