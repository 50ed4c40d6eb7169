"""Analysis errors: subclasses of the project's SweeperError (dependency-free module), so the
`sweeper` CLI prints them as `error: ...` with exit code 2."""

from __future__ import annotations

from scaling_sweeper.base.errors import SweeperError


class AnalysisError(SweeperError):
    """A problem with the results folder or an analysis request that the user can fix."""


class QueryError(AnalysisError):
    """Bad SQL, an unknown table or an unknown column."""


class DesignError(AnalysisError):
    """A malformed adaptive-design spec or observation (analysis.design), named before any compute."""
