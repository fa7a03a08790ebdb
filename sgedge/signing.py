"""Ed25519 signatures over the bundle manifest (which holds every file's sha256).

Uses `cryptography` (Apache-2.0/BSD), a maintained library; keys are PEM files. The
signature file `sgedge.json.sig` is JSON: algorithm, key id, base64 signature over the
manifest's exact bytes. OpenSSF model-signing was considered: it signs whole model
folders with Sigstore identities, which needs a network at signing time; a pinned
offline Ed25519 key fits an app that ships its own trust root.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path

from sgedge._fs import atomic_path
from sgedge.errors import InputError, SgedgeError
from sgedge.manifest import MANIFEST, SIGNATURE


class SignatureError(SgedgeError):
    """A bundle's signature is missing, malformed, or does not verify."""


def _crypto():
    try:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as e:  # pragma: no cover
        raise SgedgeError("signing needs the cryptography package: pip install 'sgedge[runtime]'") from e
    return serialization, ed25519


def key_id(public_key) -> str:
    serialization, _ = _crypto()
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def keygen(private_path: str | Path, public_path: str | Path) -> str:
    serialization, ed25519 = _crypto()
    priv, pub = Path(private_path), Path(public_path)
    for p in (priv, pub):
        if p.exists():
            raise InputError(f"{p} exists; refusing to overwrite a key")
    key = ed25519.Ed25519PrivateKey.generate()
    with atomic_path(priv) as tmp:
        tmp.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
        os.chmod(tmp, 0o600)
    with atomic_path(pub) as tmp:
        tmp.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo))
    return key_id(key.public_key())


def _load_private(path: Path):
    serialization, ed25519 = _crypto()
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as e:
        raise InputError(f"{path} is not a readable unencrypted PEM private key ({e})") from e
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise InputError(f"{path} is not an Ed25519 key (create one with 'sgedge keygen')")
    return key


def load_public(path: str | Path):
    serialization, ed25519 = _crypto()
    try:
        key = serialization.load_pem_public_key(Path(path).read_bytes())
    except (OSError, ValueError) as e:
        raise InputError(f"{path} is not a readable PEM public key ({e})") from e
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise InputError(f"{path} is not an Ed25519 public key")
    return key


def sign_bundle(bundle: str | Path, private_key: str | Path) -> str:
    key = _load_private(Path(private_key))
    data = (Path(bundle) / MANIFEST).read_bytes()
    sig = {"algorithm": "ed25519", "key_id": key_id(key.public_key()),
           "signature": base64.b64encode(key.sign(data)).decode()}
    with atomic_path(Path(bundle) / SIGNATURE) as tmp:
        tmp.write_text(json.dumps(sig, indent=2) + "\n")
    return sig["key_id"]


def verify_signature(bundle: str | Path, manifest_bytes: bytes, public_key: str | Path) -> str:
    """Check the signature over `manifest_bytes` with the trusted key; returns its key id."""
    from cryptography.exceptions import InvalidSignature

    key = load_public(public_key)
    sig_path = Path(bundle) / SIGNATURE
    if not sig_path.is_file():
        raise SignatureError(f"bundle {bundle} is not signed ({SIGNATURE} missing) but a trusted key was given")
    try:
        sig = json.loads(sig_path.read_text())
        raw = base64.b64decode(sig["signature"], validate=True)
    except (ValueError, KeyError, TypeError) as e:
        raise SignatureError(f"{sig_path} is malformed ({e})") from e
    if sig.get("key_id") != key_id(key):
        raise SignatureError(f"bundle {bundle} was signed by key {sig.get('key_id')}, not by the trusted key {key_id(key)}")
    try:
        key.verify(raw, manifest_bytes)
    except InvalidSignature as e:
        raise SignatureError(f"the signature of bundle {bundle} does not match its manifest "
                             "(the manifest was changed after signing)") from e
    return key_id(key)


def signature_status(bundle: str | Path, manifest_bytes: bytes, trusted_key: str | Path | None = None) -> dict:
    """What `bundle inspect` says of the signature: {"signed", "key_id", "checked",
    "valid", "problem"}. Whether it matches the manifest is known only with the publisher's
    public key (the file names the key by id); without one, "checked" is False."""
    sig_path = Path(bundle) / SIGNATURE
    status: dict = {"signed": sig_path.is_file(), "key_id": None, "checked": False, "valid": None, "problem": None}
    if not status["signed"]:
        return status
    try:
        sig = json.loads(sig_path.read_text())
        status["key_id"] = sig.get("key_id") if isinstance(sig.get("key_id"), str) else None
    except (OSError, ValueError, AttributeError) as e:
        status["problem"] = f"{SIGNATURE} is malformed ({e})"
    if trusted_key is not None:
        status["checked"] = True
        try:
            verify_signature(bundle, manifest_bytes, trusted_key)
            status["valid"] = True
        except SignatureError as e:
            status["valid"], status["problem"] = False, str(e)
    return status
