"""Process management: the supervisor and its workers (process/supervisor.py)."""
