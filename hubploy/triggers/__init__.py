"""What starts flows: the GitHub webhook receiver, serving, schedules."""
