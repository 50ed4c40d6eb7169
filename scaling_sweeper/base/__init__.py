"""Base layer: what every other layer may use. Pure Python and numpy, no torch, no Ray.

    errors.py          exceptions for bad user input (the CLI prints them without a traceback)
    config.py          typed dataclass configs <-> YAML, strict keys, `a.b=v` overrides
    runfolder.py       the run-folder contract: atomic writes, STATUS, result.json, metrics.jsonl, lock
    progress.py        progress of a long step: a bar on a terminal, plain lines in a log
    quiet.py           silencing third-party output nobody can act on
    flops.py           C = 6 N_incl tokens_seen, C_exact, steps <-> tokens <-> FLOPs
    schedule.py        the learning-rate schedule (warmup, cosine)
    model_config.py    GPTConfig, the size ladder, closed-form parameter counts, config_for_rows
    results_schema.py  the results row and every results table's columns (names, types, fillers)
    worker_env.py      the environment a Ray worker needs to import this checkout
    private_dirs.py    private (0700, ours) folders for Ray sessions; 0600 logs
    process_registry.py  exactly the processes we started (pid + start time); the embedded Ray's watchdog
    secret_scrub.py    credentials kept out: storage URIs redacted, credential environment names
    strict_yaml.py     YAML loading that refuses duplicate keys and alias bombs
"""
