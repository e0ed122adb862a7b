"""Notices: tell people that an approval waits, that a run failed or that a wave stopped the line,
through the Prefect notification blocks named in hubploy-repo.yaml (``notifications:``), e.g. a
``slack-webhook`` block or a ``custom-webhook`` one (any URL, any JSON body)::

    notifications:
      - block: slack-webhook/hub-ops
        events: [approval_waiting, wave_failed]
      - block: custom-webhook/pager

A notice that cannot be sent (a missing block, a receiver that is down) is logged as a warning and
never fails the run that sends it.
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.blocks.abstract import NotificationBlock
from prefect.blocks.core import Block
from prefect.context import FlowRunContext

from hubploy.config.repo_settings import Notice, RepoSettings

SUBJECTS = {
    Notice.approval_waiting: "approval waiting",
    Notice.run_failed: "run failed",
    Notice.wave_failed: "wave stopped the line",
}


def run_link() -> str:
    """Which flow run sends the notice (name and id), for the reader to find it in the UI."""
    context = FlowRunContext.get()
    run = context.flow_run if context else None
    return f"flow run {run.name} ({run.id})" if run else "no flow run"


@task(name="notify", task_run_name="notify-{notice}", retries=0)
def notify(settings: RepoSettings, notice: Notice, text: str) -> list[str]:
    """Send ``text`` to every block that gets ``notice``; the blocks that got it."""
    logger = get_run_logger()
    subject = f"hubploy: {SUBJECTS[notice]}"
    body = f"{text}\n\n{run_link()}"
    sent = []
    for name in settings.notice_blocks(notice):
        try:
            block = Block.load(name)
            if not isinstance(block, NotificationBlock):
                raise TypeError(f"{name} is a {type(block).__name__}, not a notification block")
            # async_dispatch: in this sync context notify runs synchronously, returning None
            block.notify(body, subject=subject)  # type: ignore[unused-coroutine]
        except Exception as exc:  # noqa: BLE001 - a notice never fails the run; say why it was not sent
            logger.warning(
                "notice %s not sent through %s: %s: %s", notice.value, name, type(exc).__name__, exc
            )
            continue
        sent.append(name)
    return sent


def tell(settings: RepoSettings, notice: Notice, text: str) -> None:
    """``notify`` when a block wants ``notice`` (no task run otherwise)."""
    if settings.notice_blocks(notice):
        notify(settings, notice, text)
