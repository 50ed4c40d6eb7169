"""Train layer: one resumable training trial, single process or DeepSpeed ZeRO under Ray Train.

    config.py             TrainConfig and its ZeRO section (validated, no torch)
    lifecycle.py          THE step loop and the bookkeeping both trainers share (run_steps, Lifecycle)
    run_folder.py         the trial's run folder: stored outcome, config.yaml, the results row, STATUS
    single.py             the single-process trainer: its step, stop poll and checkpoint format
    zero.py               the ZeRO trainer: its step, stop poll, checkpoints and Ray Train wiring
    zero_plan.py          how a ZeRO trial will run (strategy, precision, batching, DeepSpeed config)
    strategy.py           the strategy table, per-GPU memory estimates, the one resolver of `auto`
    deepspeed_config.py   DeepSpeed configs of the strategies
    precision.py          device, precision (auto | bf16 | fp32), autocast, torch.compile
    checkpoint.py         atomic, checksummed checkpoints; the trained model of a run folder
    checkpoint_manifest.py  sha256 manifests of pickle-loaded checkpoint folders
    batches.py            training batches, a pure function of (seed, step)
    position_loss.py      validation loss per constituent position, with a unigram baseline
    redone.py             steps executed twice after a crash (C_spent vs useful C)

Importing this package imports nothing: torch comes with the modules that need it, so the sweep
driver reads `train.config` and `train.strategy` without torch.
"""
