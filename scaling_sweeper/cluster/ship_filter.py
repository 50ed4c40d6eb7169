"""What `sweeper submit` may ship to a cluster: no symlink out of the checkout, nothing that looks
like a secret by name or by content.

A file is shipped by content (Ray packs the staged copy), so a symlink would ship whatever it
points at: `docs/x -> ~/.ray/auth_token` shipped the token. Rules, for every path git tracks and
every file under an `--include`:
- a path with a symbolic link in it (the file or any folder on the way) is shipped only when its
  real target lies inside the checkout AND is itself a file that is shipped (tracked or included,
  not secret); otherwise it is left out, with the reason;
- a name that looks like a secret (SECRET_PATTERNS plus EXTRA_SECRET_PATTERNS: service-
  account JSON, kubeconfig, docker config, `*.pem`, `*.p12`, tokens, terraform state, ...) on
  any path component, or a file stem ending in "token" (`api_token.txt`, `hf_token`; not
  `tokenizer.py`), is left out;
- a small file (up to CONTENT_SNIFF_BYTES) whose content looks like a private key, a service-
  account key, a kubeconfig with credentials, a docker/registry auth file or an AWS credentials
  file is left out whatever its name.
`sweeper submit` prints every file it leaves out and why.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass, field
from pathlib import Path

# file names (matched on every path component, case-insensitive) never shipped to a cluster
SECRET_PATTERNS: tuple[str, ...] = (
    ".env", ".env.*", "*.env", ".envrc", "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*", "*.pem", "*.key",
    "*.p12", "*.pfx", "*.jks", "*.keystore", "*.kdbx", "*.ppk", ".netrc", "_netrc", ".pgpass", ".git-credentials",
    "credentials", "credentials.*", "*credentials*.json", "*secret*", ".aws", ".ssh", ".gnupg", "auth_token",
    ".npmrc", ".pypirc", "*.gpg",
)
EXTRA_SECRET_PATTERNS: tuple[str, ...] = (
    # cloud and cluster credentials
    "*service-account*.json", "*service_account*.json", "*serviceaccount*.json", "*sa-key*.json",
    "application_default_credentials.json", "adc.json", "kubeconfig", "kubeconfig.*", "*.kubeconfig", ".kube",
    ".docker", ".dockercfg", "dockercfg", "docker-config.json", ".boto", ".s3cfg", ".azure", ".gcloud", ".databrickscfg",
    ".terraformrc", "*.tfstate", "*.tfstate.*", "*.tfvars", ".vault-token", ".htpasswd", "*.htpasswd",
    # keys, keystores and tokens
    "*.pem", "*.p12", "*.p8", "*.pfx", "*.key", "*.keytab", "*.jks", "*.ovpn", ".token", ".token.*", "token", "token.*",
    "*_token", "*_token.*", "*-token", "*-token.*", "*password*", "*passwd*", "*apikey*", "*api_key*", "*api-key*",
    "*private_key*", "*private-key*",
)
CONTENT_SNIFF_BYTES = 1 << 20  # files up to this size are read for secret-looking content
# written so that this file does not match itself
_CONTENT_SIGNS: tuple[tuple[str, re.Pattern[bytes]], ...] = (
    ("a private key", re.compile(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY( BLOCK)?-----")),
    ("a service-account key", re.compile(rb'"type"\s*:\s*"service_account"')),
    ("a kubeconfig with credentials",
     re.compile(rb"(?ms)^kind:\s*Config\s*$.*^\s*(client-key-data|token|password):\s*\S")),
    ("a registry auth file", re.compile(rb'"auths"\s*:\s*\{[^}]*"auth"\s*:\s*"[A-Za-z0-9+/=]{8,}')),
    ("an AWS credentials file", re.compile(rb"(?mi)^\s*aws_secret_access_key\s*=\s*\S")),
)


def is_secret_name(relpath: str) -> bool:
    """Whether any component of `relpath` has a secret-looking name (module doc)."""
    pats = SECRET_PATTERNS + EXTRA_SECRET_PATTERNS
    return any(fnmatch.fnmatch(part.lower(), pat) for part in Path(relpath).parts for pat in pats)


def secret_content(path: Path) -> str | None:
    """What a small regular file's content looks like when it looks like a secret, else None."""
    try:
        if path.stat().st_size > CONTENT_SNIFF_BYTES:
            return None
        data = path.read_bytes()
    except OSError:
        return None
    for what, sign in _CONTENT_SIGNS:
        if sign.search(data):
            return what
    return None


def _symlink_on_path(root: Path, rel: str) -> bool:
    cur = root
    for part in Path(rel).parts:
        cur = cur / part
        if cur.is_symlink():
            return True
    return False


@dataclass
class ShipPlan:
    """files: relative path in the staged copy -> the real file (inside the checkout) to copy;
    excluded: relative path -> why it is left out."""

    files: dict[str, Path] = field(default_factory=dict)
    excluded: dict[str, str] = field(default_factory=dict)


def plan_shipping(root: Path, candidates: set[str]) -> ShipPlan:
    """Apply the module's rules to `candidates` (paths relative to the resolved checkout `root`)."""
    root = root.resolve()
    plan = ShipPlan()
    plain: dict[str, Path] = {}
    links: list[str] = []
    for rel in sorted(candidates):
        if is_secret_name(rel):
            plan.excluded[rel] = "secret-looking name"
        elif _symlink_on_path(root, rel):
            links.append(rel)
        elif (root / rel).is_file():
            what = secret_content(root / rel)
            if what:
                plan.excluded[rel] = f"content looks like {what}"
            else:
                plain[rel] = root / rel
    for rel in links:
        try:
            real = (root / rel).resolve(strict=True)
        except (OSError, RuntimeError):
            plan.excluded[rel] = "broken symbolic link"
            continue
        if not real.is_relative_to(root):
            plan.excluded[rel] = f"symbolic link to {real}, outside the checkout"
        elif str(real.relative_to(root)) not in plain:
            plan.excluded[rel] = f"symbolic link to {real.relative_to(root)}, which is not shipped itself"
        else:
            plain[rel] = real
    plan.files = plain
    return plan


def format_excluded(excluded: dict[str, str]) -> str:
    """One line per file left out: `  path: reason`."""
    return "\n".join(f"  {rel}: {why}" for rel, why in sorted(excluded.items()))


__all__ = ["CONTENT_SNIFF_BYTES", "EXTRA_SECRET_PATTERNS", "SECRET_PATTERNS", "ShipPlan", "format_excluded", "is_secret_name",
           "plan_shipping", "secret_content"]
