"""Kubernetes Secrets the cluster tasks read as environment variables (templates in infra/base/secrets.example.yaml).

Names only, never values: the KFP tasks map them with `kfp.kubernetes.use_secret_as_env`, the TrainJob nodes with
`secretKeyRef` environment entries.
"""

MLFLOW_SECRET = "fracture-mlflow"
S3_SECRET = "fracture-s3"
# secret key -> environment variable
# The pipeline's MLflow user (role fracture-pipeline, see fracture/access): basic-auth credentials or a token.
MLFLOW_ENV = {
    "tracking_uri": "MLFLOW_TRACKING_URI",
    "username": "MLFLOW_TRACKING_USERNAME",
    "password": "MLFLOW_TRACKING_PASSWORD",
    "tracking_token": "MLFLOW_TRACKING_TOKEN",
}
S3_ENV = {
    "access_key_id": "AWS_ACCESS_KEY_ID",
    "secret_access_key": "AWS_SECRET_ACCESS_KEY",
    "endpoint_url": "MLFLOW_S3_ENDPOINT_URL",
}


def secret_env(required: frozenset[str] = frozenset()) -> list[dict]:
    """Container `env` entries reading both Secrets by `secretKeyRef`; keys not in `required` are optional."""
    return [
        {"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": key, "optional": key not in required}}}
        for secret, mapping in ((MLFLOW_SECRET, MLFLOW_ENV), (S3_SECRET, S3_ENV))
        for key, var in mapping.items()
    ]
