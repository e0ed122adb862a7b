"""Prefect credential blocks, one per cloud, each yielding a temporary kubeconfig and a child env."""
