"""Desktop simulation of on-device continual learning: scenario runner, metrics, reports."""
