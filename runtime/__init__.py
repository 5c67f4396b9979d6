"""The async-inference runtime: messages, client and server loops, supervisor, CLI."""

__version__ = "0.1.0"
