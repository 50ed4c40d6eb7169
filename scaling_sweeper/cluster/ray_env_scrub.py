"""Keep cloud credentials out of the runtime_envs Ray Tune builds for trials.

Ray Tune 2.60 copies AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SECURITY_TOKEN and
AWS_SESSION_TOKEN from the driver's environment into the runtime_env of every trial actor
(`ray/tune/execution/class_cache.py`: `_ActorClassCache.get` reads the module-level
`ENV_VARS_TO_PROPAGATE`), and Ray's runtime-env agent writes runtime_envs to
`runtime_env_agent.log` in clear text. `keep_credentials_out_of_tune` drops every credential
name (`secret_scrub.is_credential_env`) from that set, so trials get none through a runtime_env.
Where they need credentials (an `s3://` tune_storage) they use their own chain: on the embedded
cluster they inherit the driver's process environment through the raylet (never logged), on
other clusters the nodes' environment or instance role.
"""

from __future__ import annotations

from scaling_sweeper.base.secret_scrub import is_credential_env


def keep_credentials_out_of_tune() -> list[str]:
    """Remove credential names from Tune's driver-to-trial environment propagation (idempotent).
    Returns the names removed."""
    try:
        from ray.tune.execution import class_cache
    except ImportError:  # Tune not installed: nothing propagates anything
        return []
    names = getattr(class_cache, "ENV_VARS_TO_PROPAGATE", None)
    if names is None:
        return []
    dropped = sorted(n for n in names if is_credential_env(n))
    if dropped:
        class_cache.ENV_VARS_TO_PROPAGATE = type(names)(n for n in names if not is_credential_env(n))
    return dropped


def tune_trial_env_vars() -> dict[str, str]:
    """The env_vars Tune would put into a trial actor's runtime_env now (for checks and tests)."""
    import os

    from ray.tune.execution import class_cache

    return {**class_cache.DEFAULT_ENV_VARS,
            **{k: os.environ[k] for k in class_cache.ENV_VARS_TO_PROPAGATE if k in os.environ}}


__all__ = ["keep_credentials_out_of_tune", "tune_trial_env_vars"]
