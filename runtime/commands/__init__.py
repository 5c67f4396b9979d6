"""The `asyncinf` commands, one module per command or group; wired in runtime/cli.py."""
