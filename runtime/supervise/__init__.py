"""The processes around the two loops: the supervisor, its workers, and what they tell the OS
(exit codes, sd_notify, the status file, systemd units)."""
