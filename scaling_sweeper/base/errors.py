"""Exceptions for bad user input. Raised at the boundary, before any compute is spent."""


class SweeperError(Exception):
    """Base class: a problem the user can fix; the CLI prints it without a traceback."""


class ConfigError(SweeperError, ValueError):
    """A malformed config or spec; the message names the offending field."""


class DataError(SweeperError):
    """A missing, corrupt or too-small dataset, shard or tokenizer."""


class CheckpointError(SweeperError):
    """A checkpoint that cannot be read or does not match the run."""


class BudgetError(SweeperError):
    """A compute budget that cannot fit the requested work."""


class ScheduleError(ConfigError):
    """A training schedule that cannot run (passes <= 0, tokens_seen below one batch, two kinds
    of schedule at once, a list that does not match its scan axis); names the spec field."""


class RepetitionError(ConfigError):
    """A repetition phase that cannot measure what repeating data is worth: unique tokens beyond
    the dataset (the 1-pass arm would repeat), or pass counts that cannot identify R*."""


class RunFolderError(SweeperError):
    """A sweep or run folder file (cells.json, result.json, ...) that is truncated, malformed or
    in the wrong place; names the file and what is wrong. Finished results are never rewritten
    because of it."""
