"""New deployment repositories and new hubs: what `hubploy init` and `hubploy new-hub` write.

Every file is generated here from the facts the operator gives (hub name, provider, chart, registry, age
recipient); secrets are encrypted with sops before they are written. ``repository`` makes a repository,
``new_hub`` adds a hub to one, ``hubs`` and ``texts`` hold the files' contents, ``clusters`` the provider
sections and key files, ``staging`` the all-or-nothing writing.
"""
