"""The package version, in one place (pyproject reads it; detector files and --version record it)."""

__version__ = "0.1.0"
