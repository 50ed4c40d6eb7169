"""Secrets kept out of what the project writes or hands on: storage URIs and environment names.

Storage URIs (`tune_storage`) are stored in spec.yaml and printed, so what authenticates is
replaced by REDACTED:
- user:password in the authority (`s3://KEY:SECRET@bucket`), and a lone user name except where
  it names something public: Azure's `abfs[s]://container@account.dfs.core.windows.net` (and
  wasb[s], az, adl) put the container there; redacting it would make the sweep impossible to
  resume;
- query values that authenticate (SECRET_QUERY: passwords, tokens, keys, `client_secret`,
  SAS `sig`, `X-Amz-Security-Token` / `X-Amz-Signature` / `X-Amz-Credential` of presigned URLs,
  `credentials`, ...), compared case-insensitively.

Environment variables whose names carry credentials (CREDENTIAL_ENV: AWS_*, *TOKEN*, *SECRET*,
...) are never sent through a Ray runtime_env, which Ray logs in clear text
(cluster.connection.check_env_vars, cluster.ray_env_scrub).
"""

from __future__ import annotations

import fnmatch

REDACTED = "***"
# query parameters of object-store URIs that carry secrets (pyarrow / fsspec / presigned spellings)
SECRET_QUERY: tuple[str, ...] = (
    "access_key", "secret_key", "session_token", "password", "passwd", "token", "key", "secret",
    "aws_access_key_id", "aws_secret_access_key", "aws_session_token", "sas_token", "account_key",
    "client_secret", "client_key", "credentials", "credential", "sig", "signature", "access_token",
    "refresh_token", "id_token", "api_key", "apikey", "private_key", "auth", "authorization",
    "x-amz-security-token", "x-amz-signature", "x-amz-credential", "x-goog-signature",
    "x-goog-credential", "x-ms-signature", "connection_string",
)
# query names that match these patterns are treated as secret as well
SECRET_QUERY_PATTERNS: tuple[str, ...] = ("*secret*", "*password*", "*token*", "*credential*", "*signature*",
                                          "*_key", "*-key", "*apikey*")
# environment variable names that carry credentials: never sent through a runtime_env (Ray logs
# runtime_envs in clear text, in files other users of the machine may read)
CREDENTIAL_ENV: tuple[str, ...] = (
    "AWS_*", "AZURE_*", "GOOGLE_APPLICATION_CREDENTIALS", "GCS_*KEY*", "*TOKEN*", "*SECRET*", "*PASSWORD*",
    "*PASSWD*", "*_KEY", "*_KEY_ID", "*CREDENTIAL*", "HF_TOKEN", "WANDB_API_KEY",
)
# schemes whose `user@host` names a container, not a credential
CONTAINER_AT_HOST_SCHEMES: tuple[str, ...] = ("abfs", "abfss", "wasb", "wasbs", "az", "adl")


def is_credential_env(name: str) -> bool:
    """Whether an environment variable's name says it holds a credential (CREDENTIAL_ENV)."""
    return any(fnmatch.fnmatchcase(name.upper(), pat) for pat in CREDENTIAL_ENV)


def is_secret_query(name: str) -> bool:
    n = name.lower()
    return n in SECRET_QUERY or any(fnmatch.fnmatchcase(n, p) for p in SECRET_QUERY_PATTERNS)


def _split_uri(uri: str):
    from urllib.parse import parse_qsl, urlsplit

    parts = urlsplit(uri)
    return parts, parse_qsl(parts.query, keep_blank_values=True)


def _userinfo_is_secret(parts) -> bool:
    if parts.password:
        return True
    return bool(parts.username) and parts.scheme.lower() not in CONTAINER_AT_HOST_SCHEMES


def uri_has_credentials(uri: str) -> bool:
    """Whether a storage URI carries a user:password (or a lone user outside the container@account
    schemes) or a secret query parameter."""
    if "://" not in uri:
        return False
    parts, query = _split_uri(uri)
    return _userinfo_is_secret(parts) or any(is_secret_query(k) for k, _ in query)


def redact_uri(uri: str) -> str:
    """`uri` with its credentials replaced by REDACTED (module doc); a URI without any comes back
    unchanged, byte for byte."""
    if not uri_has_credentials(uri):
        return uri
    from urllib.parse import urlencode, urlunsplit

    parts, query = _split_uri(uri)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    if _userinfo_is_secret(parts):
        netloc = f"{REDACTED}@{host}"
    elif parts.username:
        netloc = f"{parts.username}@{host}"
    else:
        netloc = host
    q = urlencode([(k, REDACTED if is_secret_query(k) else v) for k, v in query], safe="*:/")
    return urlunsplit((parts.scheme, netloc, parts.path, q, parts.fragment))


__all__ = ["CREDENTIAL_ENV", "REDACTED", "SECRET_QUERY", "is_credential_env", "is_secret_query", "redact_uri", "uri_has_credentials"]
