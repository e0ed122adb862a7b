"""The planner is pure: changed paths in, affected hubs out."""

from hubploy.planner import plan_changes

HUBS = ["alpha", "beta", "gamma"]


def test_hub_dir_change_selects_that_hub_only() -> None:
    plan = plan_changes(["deployments/beta/config/common.yaml"], HUBS)
    assert plan.hub_names == ["beta"]
    assert plan.hubs[0].reasons == ("deployments/beta/config/common.yaml",)
    assert plan.all_hubs_reason is None


def test_chart_change_selects_all_hubs() -> None:
    plan = plan_changes(["hub/values.yaml", "deployments/beta/config/common.yaml"], HUBS)
    assert plan.hub_names == HUBS
    assert plan.all_hubs_reason == "hub/values.yaml changed"


def test_custom_chart_dir_and_shared_globs() -> None:
    assert plan_changes(["charts/z2jh/values.yaml"], HUBS, chart="charts/z2jh").hub_names == HUBS
    assert plan_changes(["hub/values.yaml"], HUBS, chart="charts/z2jh").empty
    assert plan_changes(["common/profiles.yaml"], HUBS, shared_paths=["common/*"]).hub_names == HUBS
    assert plan_changes([".sops.yaml"], HUBS).hub_names == HUBS
    assert plan_changes(["hubploy-repo.yaml"], HUBS).hub_names == HUBS


def test_irrelevant_changes_plan_nothing() -> None:
    plan = plan_changes(["README.md", "docs/index.md", ".github/workflows/x.yaml"], HUBS)
    assert plan.empty
    assert plan.summary().startswith("nothing to deploy")
    assert plan.ignored == ("README.md", "docs/index.md", ".github/workflows/x.yaml")


def test_unknown_hub_dir_is_ignored_and_chart_name_prefix_is_not_the_chart() -> None:
    assert plan_changes(["deployments/removed/hubploy.yaml"], HUBS).empty
    assert plan_changes(["hubs-notes.md", "hub2/values.yaml"], HUBS).empty


def test_secrets_submodule_path_selects_hub() -> None:
    assert plan_changes(["secrets/deployments/gamma/secrets/prod.yaml"], HUBS).hub_names == ["gamma"]


def test_image_dirs_reported() -> None:
    plan = plan_changes(
        [
            "deployments/alpha/images/user/environment.yml",
            "deployments/alpha/config/prod.yaml",
            "deployments/beta/image/Dockerfile",
        ],
        HUBS,
        image_dirs={"alpha": ["images/user", "images/hub"], "beta": ["image"]},
    )
    assert [(h.hub, h.images_changed) for h in plan.hubs] == [
        ("alpha", ("images/user",)),
        ("beta", ("image",)),
    ]
