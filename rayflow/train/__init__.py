"""Supervised training in plain torch: tasks, batch sources, the step loop, evaluation."""
