"""Keyed pseudonymisation of identifiers (hospital and DICOM patients/studies).

Identifiers are replaced by `namespace:HMAC-SHA256(key, value)[:16 hex]`. The key comes only from the
environment variable FRACTURE_PSEUDONYM_KEY: there is no default key, so a pseudonym cannot be reversed by
hashing guessed identifiers without the key, and the key never lives in the repository or in params.yaml.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from fracture.base.errors import InputError

KEY_ENV = "FRACTURE_PSEUDONYM_KEY"
# The demo's key: public, for the synthetic demo data only (`make demo`, `fracture pipeline run-local` on the data it
# generates). Real data needs your own secret key; nothing falls back to this one.
DEMO_KEY = "fracture-demo-key-not-secret"
DIGEST_HEX = 16


def pseudonym_key(purpose: str = "hospital or DICOM data") -> bytes:
    """The pseudonymisation key from the environment.

    Args:
        purpose: what needs the key, for the error message.

    Raises:
        InputError: the variable is missing or empty.
    """
    value = os.environ.get(KEY_ENV, "")
    if not value.strip():
        raise InputError(
            f"{KEY_ENV} is not set: it is required to pseudonymise patient identifiers in {purpose}. "
            f"Set it to a long random secret (e.g. `export {KEY_ENV}=$(openssl rand -hex 32)`), keep it out of "
            "the repository, and reuse the same value for every ingest of the same data."
        )
    return value.encode("utf-8")


def pseudonymise(value: str, namespace: str, key: bytes | None = None) -> str:
    """Keyed, stable pseudonym of an identifier.

    Args:
        value: the identifier (patient ID, study UID, ...); never logged or stored.
        namespace: prefix of the result, e.g. "hospital".
        key: HMAC key; None reads FRACTURE_PSEUDONYM_KEY (see `pseudonym_key`).

    Returns:
        `namespace + ":" + HMAC-SHA256(key, value).hex()[:16]`.

    Raises:
        InputError: no key given and none in the environment.
    """
    if key is None:
        key = pseudonym_key()
    digest = hmac.new(key, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
    return f"{namespace}:{digest[:DIGEST_HEX]}"
