"""Wine quality model plugin for lambda-ml-serve."""

__version__ = "1.0.0"
