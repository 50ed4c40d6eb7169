"""Which Ray Jobs API `sweeper logs --job` and `sweeper stop --kill-job` talk to (and send the token to).

`<storage>/<sweep>/job.json` records the job id and the address it was submitted to, but it lives
on storage that others may write (a shared filesystem). Whoever can write it could name their own
server there and receive `Authorization: Bearer <token>`. So the address is never taken from
job.json: it comes from the user (`--address`, else $RAY_DASHBOARD as `sweeper cluster start`
prints it, else $RAY_API_SERVER_ADDRESS, Ray's own variable). job.json only names the job, and when
it records an address that differs from the one given, the command refuses before any request,
showing both (the job was submitted elsewhere; a typo, or a planted file).
"""

from __future__ import annotations

import os
import re
from typing import Any

from scaling_sweeper.base.errors import SweeperError

ADDRESS_ENVS: tuple[str, ...] = ("RAY_DASHBOARD", "RAY_API_SERVER_ADDRESS")
_JOB_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class JobAddressError(SweeperError):
    """No Jobs API address from the user, or one that is not where job.json says the job went."""


def _endpoint(address: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) address; the port defaults to the scheme's."""
    from urllib.parse import urlsplit

    u = urlsplit(address if "://" in address else f"http://{address}")
    scheme = (u.scheme or "http").lower()
    try:
        port = u.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise JobAddressError(f"{address!r} is not an address (bad port)") from None
    return scheme, (u.hostname or "").lower(), port


def given_address(flag: str | None) -> tuple[str | None, str]:
    """(address, where it came from): the --address flag, else the first of ADDRESS_ENVS set."""
    if flag:
        return flag, "--address"
    for name in ADDRESS_ENVS:
        if os.environ.get(name):
            return os.environ[name], f"${name}"
    return None, ""


def job_endpoint(job: dict[str, Any], flag: str | None, sweep: str) -> tuple[str, str]:
    """(address to use, job id) for a job.json of sweep `sweep` (module doc). JobAddressError when
    the user gave no address, when job.json's address differs from it, or when the job id is not
    a plain id."""
    job_id = job.get("job_id")
    if not isinstance(job_id, str) or not _JOB_ID_RE.fullmatch(job_id):
        raise JobAddressError(f"{sweep}: job.json's job_id {str(job_id)[:80]!r} is not a Ray job id")
    stored = job.get("address")
    address, source = given_address(flag)
    if address is None:
        hint = f" (job.json says it went to {str(stored)[:200]!r})" if stored else ""
        raise JobAddressError(
            f"{sweep}: say which Ray dashboard the job runs on with --address http://HOST:PORT or "
            f"${ADDRESS_ENVS[0]}{hint}. The address in job.json is not used by itself: it is on storage others "
            "may write, and the Ray auth token is sent to that address")
    if isinstance(stored, str) and stored and _endpoint(stored) != _endpoint(address):
        raise JobAddressError(
            f"{sweep}: job.json says job {job_id} was submitted to {stored[:200]!r}, but {source} is {address!r}; "
            "refusing to send the Ray token anywhere else. If you trust that address (check who can write "
            f"{sweep}/job.json), pass it as --address")
    return address, job_id


__all__ = ["ADDRESS_ENVS", "JobAddressError", "given_address", "job_endpoint"]
