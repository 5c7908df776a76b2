"""Infra validation: serve a candidate in the real serving stack and replay evaluation images before promotion.

TFX's InfraValidator idea, for an MLflow pyfunc: the candidate is started with `mlflow models serve` (the same
command `fracture serve` and the KServe predictor run) on loopback, and a request set drawn from the evaluation's
predictions is sent to it. The candidate passes when every answer arrives, the served probabilities equal the
offline ones within `register.infra_validation.tolerance`, decisions use the frozen threshold, bad inputs get a
4xx answer that names the problem while the server keeps serving, and the p95 latency of single-image requests
stays under `register.infra_validation.max_p95_latency_s`.

Modules, one concern each:

- `requestset`: the request set: evaluation rows joined with the manifest, a spread over file formats (PNG
  8/16-bit, JPEG, DICOM), each image sent as base64 `image` and as `path`, and the bad inputs.
- `checks`: pure checks of the answers and the result summary (no I/O).
- `run`: the orchestration: start the server (fracture.serving.server), send, check, record the result as version tags.
"""
