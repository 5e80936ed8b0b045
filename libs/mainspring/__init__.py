"""Mainspring: event-driven routines in Python on NATS JetStream."""

from typing import TYPE_CHECKING, Any

from mainspring.sdk.routine import ContractError, Routine, RoutineInvocationError, RunInfo, method
from mainspring.sdk.triggers import (
    CompletionEvent,
    DatasetEvent,
    ManualEvent,
    PollEvent,
    ScheduleEvent,
    on_complete,
    on_dataset_append,
    on_poll,
    on_schedule,
    on_workflow_failure,
    on_workflow_success,
)

if TYPE_CHECKING:
    from mainspring.apps.embedded import embedded

__all__ = [
    "CompletionEvent",
    "ContractError",
    "DatasetEvent",
    "ManualEvent",
    "PollEvent",
    "Routine",
    "RoutineInvocationError",
    "RunInfo",
    "ScheduleEvent",
    "embedded",
    "method",
    "on_complete",
    "on_dataset_append",
    "on_poll",
    "on_schedule",
    "on_workflow_failure",
    "on_workflow_success",
]


def __getattr__(name: str) -> Any:
    # Embedded mode needs the applications (up, the client); importing the SDK must not.
    if name == "embedded":
        from mainspring.apps.embedded import embedded

        return embedded
    raise AttributeError(f"module 'mainspring' has no attribute {name!r}")
