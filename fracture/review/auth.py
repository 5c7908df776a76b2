"""Who may use the review app: the users file, password hashing (scrypt), sessions and CSRF tokens.

Users file (YAML, one entry per clinical reviewer; write entries with `fracture review add-user`):

    users:
      - username: alice
        name: Dr Alice Example          # shown on verdicts and sign-offs
        password: scrypt$16384$8$1$<salt hex>$<hash hex>

Only hashes are stored: `scrypt` (hashlib, RFC 7914) with n, r, p and a 16-byte random salt in the string, so
the cost can be raised later without breaking existing entries.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import yaml

from fracture.base.errors import InputError

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1  # about 16 MiB and 50 ms per check
USERNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True)
class User:
    """A clinical reviewer who may log in."""

    username: str
    name: str
    password: str  # the scrypt string, never the password


def hash_password(password: str, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """`scrypt$n$r$p$salt$hash` for `password` with a fresh random salt."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32)
    return f"scrypt${n}${r}${p}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """True when `password` matches the scrypt string (constant-time comparison); False for a malformed string."""
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p), dklen=32)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got.hex(), digest)


def load_users(path: Path) -> dict[str, User]:
    """Read the users file.

    Raises:
        InputError: naming the file and the entry that is malformed.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise InputError(f"{path}: no users file (create one with `fracture review add-user`)") from None
    except yaml.YAMLError as err:
        raise InputError(f"{path}: not YAML ({err})") from None
    entries = data.get("users") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise InputError(f"{path}: needs a non-empty 'users' list")
    users: dict[str, User] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not USERNAME_RE.match(str(entry.get("username", ""))):
            raise InputError(f"{path}: users[{i}] needs a username of letters, digits, '_', '.', '-'")
        if not str(entry.get("password", "")).startswith("scrypt$"):
            raise InputError(f"{path}: users[{i}] ({entry['username']}): password must be a scrypt hash, not text")
        users[entry["username"]] = User(entry["username"], str(entry.get("name") or entry["username"]),
                                        entry["password"])  # fmt: skip
    return users


def add_user(path: Path, username: str, password: str, name: str | None = None) -> None:
    """Add (or replace) a user in the users file, creating it when absent; only the hash is written."""
    path = Path(path)
    if not USERNAME_RE.match(username):
        raise InputError(f"username {username!r}: use letters, digits, '_', '.', '-' (at most 64)")
    if len(password) < 8:
        raise InputError("password: at least 8 characters")
    data = yaml.safe_load(path.read_text()) if path.is_file() else None
    entries = [e for e in (data or {}).get("users", []) if e.get("username") != username]
    entries.append({"username": username, "name": name or username, "password": hash_password(password)})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({"users": entries}, sort_keys=False))
    path.chmod(0o600)


def new_csrf_token() -> str:
    """A random per-session token the forms carry back."""
    return secrets.token_urlsafe(32)


def same_token(a: str | None, b: str | None) -> bool:
    """Constant-time equality of two tokens (False when either is missing)."""
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))
