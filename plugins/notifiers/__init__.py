"""Notifiers: what on-call receives when a task fails."""
