"""Pure decisions for a routine's `max_concurrent`: start a run now, or hold it back.

The dispatcher knows which runs of a routine it requested and which completed, so it admits
runs where that is known instead of letting runners nak them until a slot frees. Per routine
an `AdmissionState` (KV `dispatch`, `admission.<routine>`, compare-and-set) says which runs
hold a slot and how far the held requests on `run.held.<routine>` (stream sequences, in
arrival order) have been released. Like core.py: no I/O, no async, no clock.

The orders that keep a run from being lost or started twice across a crash or a second
dispatcher (see ARCHITECTURE.md, "Admission"):
- a slot is taken (written) before its request goes out, so a redelivered event finds the
  run active and republishes the same deduplicated request;
- a held request is stored before the state notes it, so whoever frees a slot after the note
  finds it on the stream; a hold racing a completion that freed a slot before the note
  admits itself when it is the oldest held request;
- a completion releases the oldest held requests into the slot it frees, in the same write
  that frees it; its redelivery (the run no longer active) republishes the released ones.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from mainspring.contract.messages import RequestRun


class AdmissionState(BaseModel):
    """One routine's slots: the runs holding one, and the released part of its held queue."""

    model_config = ConfigDict(frozen=True)
    # Run id -> stream sequence of its held request (0: admitted without waiting).
    active: dict[str, int] = Field(default_factory=dict)
    # The last held request released (or passed over): the queue is read after it.
    cursor: int = 0
    # The newest held request noted here; held requests wait while tail > cursor.
    tail: int = 0
    # The routine's max_concurrent as its latest request said.
    limit: int = 1
    # Held runs cancelled while they waited (run id -> sequence): passed over, never released.
    dropped: dict[str, int] = Field(default_factory=dict)

    def waiting(self) -> bool:
        """Are held requests noted that have not been released yet?"""
        return self.tail > self.cursor


RequestStep = Literal["republish", "admit", "hold"]


def admits(request: RequestRun) -> bool:
    """Does this request go through admission? Only runs of a routine with max_concurrent."""
    return bool(request.options.max_concurrent)


def on_request(
    state: AdmissionState, request: RequestRun, first_delivery: bool
) -> tuple[RequestStep, AdmissionState]:
    """A decided run of an admitted routine: republish (it holds a slot), admit, or hold.

    A redelivered event never admits directly: its first delivery may have stored a held
    request already, which would later be released a second time.
    """
    limit = request.options.max_concurrent or 1
    if request.run_id in state.active:
        return "republish", state
    if first_delivery and len(state.active) < limit and not state.waiting():
        active = {**state.active, request.run_id: 0}
        return "admit", state.model_copy(update={"active": active, "limit": limit})
    return "hold", state


HeldStep = Literal["republish", "admit", "wait", "released"]


def after_hold(
    state: AdmissionState, request: RequestRun, sequence: int, oldest: int | None
) -> tuple[HeldStep, AdmissionState]:
    """A request stored at `sequence` of the held queue: admit it (the oldest held request
    and a slot is free), note it and wait, or nothing (released by a completion already).

    `oldest`: the sequence of the first held request after the cursor, read only when a slot
    is free (None otherwise).
    """
    limit = request.options.max_concurrent or 1
    if request.run_id in state.active:
        return "republish", state
    if sequence <= state.cursor:
        return "released", state
    if len(state.active) < limit and oldest == sequence:
        active = {**state.active, request.run_id: sequence}
        admitted = state.model_copy(
            update={
                "active": active,
                "cursor": sequence,
                "tail": max(state.tail, sequence),
                "limit": limit,
            }
        )
        return "admit", admitted
    noted = state.model_copy(update={"tail": max(state.tail, sequence), "limit": limit})
    return "wait", noted


def slots_to_release(state: AdmissionState, finished: str) -> int | None:
    """How many held requests a run's completion releases; None: the run held no slot."""
    if finished not in state.active:
        return None
    if not state.waiting():
        return 0
    return state.limit - (len(state.active) - 1)


def after_release(
    state: AdmissionState, finished: str, released: list[tuple[str, int]], cursor: int
) -> AdmissionState:
    """The state once `finished` freed its slot and `released` (run id, sequence) took slots,
    the queue read up to `cursor`."""
    active = {run: seq for run, seq in state.active.items() if run != finished}
    active.update(released)
    read_to = max(state.cursor, cursor)
    return state.model_copy(
        update={
            "active": active,
            "cursor": read_to,
            "tail": max(state.tail, cursor),
            "dropped": {run: seq for run, seq in state.dropped.items() if seq > read_to},
        }
    )


CancelStep = Literal["runner", "passed", "drop"]


def drop_held(
    state: AdmissionState, run_id: str, sequence: int
) -> tuple[CancelStep, AdmissionState]:
    """A held run was cancelled: pass it over when its turn comes ("drop"). "runner": it holds
    a slot, so its runner ends it cancelled; "passed": the queue was read past it and it holds
    no slot (dropped before, or its run already ended: the ledger tells)."""
    if run_id in state.active:
        return "runner", state
    if sequence <= state.cursor:
        return "passed", state
    return "drop", state.model_copy(update={"dropped": {**state.dropped, run_id: sequence}})


def queue_reason(limit: int, running: int) -> str:
    """Why a held run waits, as `runs show` says it."""
    return f"waiting for a free slot: max_concurrent={limit}, {running} running"
