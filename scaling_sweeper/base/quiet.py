"""Silence third-party output a user cannot act on (each entry says what and why).

- FastJet prints a 14-line banner to stdout on the first clustering of a process (jet
  generation, N-subjettiness axes in evaluation): `silence_fastjet_banner()` triggers it once
  with stdout pointed at /dev/null.
- DeepSpeed logs "Setting accelerator to CPU. If you have GPU ..." on import when torch sees no
  CUDA device (every `sweeper memory`): `quiet_deepspeed_accelerator()` names the CPU accelerator
  (DS_ACCELERATOR=cpu) in that case only, which is what DeepSpeed picks anyway.
- Ray 2.59+ prints a notice about token authentication when a local cluster starts;
  `quiet_ray_token_notice()` lowers the level of the logger that prints it (errors still show).
"""

from __future__ import annotations

import logging
import os
import sys

_fastjet_silenced = False


def silence_fastjet_banner() -> None:
    """Print FastJet's banner into /dev/null (once per process); later clusterings print nothing."""
    global _fastjet_silenced
    if _fastjet_silenced:
        return
    import fastjet

    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
            jd = fastjet.JetDefinition(fastjet.antikt_algorithm, 0.4)
            fastjet.ClusterSequence([fastjet.PseudoJet(1.0, 0.0, 0.0, 1.0)], jd).inclusive_jets()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    _fastjet_silenced = True


def quiet_deepspeed_accelerator() -> None:
    """Before importing deepspeed: choose its CPU accelerator when torch sees no CUDA device (the
    same choice DeepSpeed makes, without its warning). A user's DS_ACCELERATOR is kept."""
    if "DS_ACCELERATOR" in os.environ:
        return
    try:
        import torch

        if torch.cuda.is_available():
            return
    except ImportError:
        return
    os.environ["DS_ACCELERATOR"] = "cpu"


# the logger through which Ray 2.60 prints its token-authentication notice (a warning)
RAY_NOTICE_LOGGERS = ("ray._private.authentication.authentication_token_setup",)


def quiet_ray_token_notice() -> None:
    """Ray's "Token authentication is enabled for this Ray cluster" warning: tokens are handled
    (scaling_sweeper.cluster.connection), so it is not actionable; errors still show."""
    for name in RAY_NOTICE_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
