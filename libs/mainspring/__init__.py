"""Mainspring: event-driven routines in Python on NATS JetStream."""

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
    "method",
    "on_complete",
    "on_dataset_append",
    "on_poll",
    "on_schedule",
    "on_workflow_failure",
    "on_workflow_success",
]
