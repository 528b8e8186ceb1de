"""Which MLflow run is whose child: study -> trial (or pipeline -> stages), set on the jobs before they start.

Every function here is a no-op for jobs with tracking=none and for dry runs. A tracking server that cannot
be reached for the parent runs costs the nesting, not the study: one warning, and the trials run unnested
(their own runs survive outages through the workers' spools).
"""

from __future__ import annotations

import sys

from bitcpm.frontend import study_tracking as st
from bitcpm.frontend.members import Member
from bitcpm.tracking.client import child_of


def _warn(what: str, exc: BaseException) -> None:
    print(f"bitcpm: warning: MLflow {what} failed ({type(exc).__name__}: {exc}); runs are not nested", file=sys.stderr)


def set_parent(member: Member, parent_id: str | None, extra_tags: dict[str, str] | None = None) -> None:
    """Make every stage's run a child of parent_id (the tag travels in RUN_DIR/config.yaml to the worker)."""
    for stage in member.stages:
        tags = stage.job.tracking.tags
        if parent_id is not None:
            tags.update(child_of(parent_id))
        tags.update(extra_tags or {})


def open_pipeline_run(member: Member, study_parent: str | None) -> str | None:
    """A run for a recipe member whose children are its stages; itself a child of the study run, if any."""
    tracking = member.stages[0].job.tracking
    if member.job.dry_run or not st.tracked(tracking):
        return None
    pipeline_id = tracking.tags.get("pipeline", "")
    tags = {"stage": "pipeline", "pipeline": pipeline_id, st.OVERRIDES_TAG: member.label}
    if study_parent is not None:
        tags.update(child_of(study_parent))
    name = f"pipeline {member.short_label}" if member.swept else f"pipeline-{member.job.experiment_name or pipeline_id}"
    try:
        run_id = st.open_parent(
            tracking,
            run_name=name,
            id_tag=st.PIPELINE_ID_TAG,
            id_value=pipeline_id,
            params={"stages": ",".join(s.name for s in member.stages)},
            tags=tags,
        )
    except Exception as exc:  # the server is down or refuses: train anyway
        _warn("pipeline run", exc)
        return None
    set_parent(member, run_id)
    return run_id


def close_pipeline_run(member: Member, run_id: str | None, failed: bool) -> None:
    """Summarise the stages' losses on the pipeline run and end it."""
    if run_id is None:
        return
    from bitcpm.frontend.results import member_losses, stage_table

    losses = member_losses(member)
    try:
        st.close_parent(
            member.stages[0].job.tracking,
            run_id,
            summary_md=stage_table(member),
            metrics={"final_val_loss": losses.final, "best_val_loss": losses.best},
            failed=failed,
        )
    except Exception as exc:
        _warn("pipeline summary", exc)
