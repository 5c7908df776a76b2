"""The one container image every component runs in (built from docker/Dockerfile).

The pipeline overrides it per task from params.yaml `pipeline.image` at compile time; this default only
names the image for components used on their own.
"""

IMAGE = "ghcr.io/fracture-mlops/fracture:0.1.0"
IMAGE_UID = 10001  # the image's non-root user and group (docker/Dockerfile `useradd --uid`, `USER`)


def container_security(read_only_root: bool) -> dict:
    """A container's securityContext: the image's non-root user, no privilege escalation, no capabilities."""
    return {
        "allowPrivilegeEscalation": False,
        "runAsNonRoot": True,
        "runAsUser": IMAGE_UID,
        "runAsGroup": IMAGE_UID,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": read_only_root,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
