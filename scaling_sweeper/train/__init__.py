"""Train layer: one resumable training trial, single process or DeepSpeed ZeRO under Ray Train.

    config.py             TrainConfig (validated, no torch)
    lifecycle.py          the trial lifecycle both trainers share: run folder, bookkeeping, final row
    single.py             the single-process step math and checkpoint format
    zero.py               the DeepSpeed/ZeRO step math, checkpoints and Ray Train wiring
    deepspeed_config.py   DeepSpeed configs of the strategies
    memory.py             per-GPU memory estimates and `strategy: auto`
    checkpoint.py         atomic, checksummed checkpoints
    checkpoint_manifest.py  sha256 manifests of pickle-loaded checkpoint folders
    batches.py            training batches, a pure function of (seed, step)
    position_loss.py      validation loss per constituent position, with a unigram baseline
    redone.py             steps executed twice after a crash (C_spent vs useful C)

Importing this package imports nothing: torch comes with the modules that need it, so the sweep
driver reads `train.config` without torch.
"""
