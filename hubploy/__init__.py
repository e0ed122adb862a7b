"""hubploy core library: config, git, values, secrets and argv builders. Imports nothing from Prefect."""
