"""EmbeddingReport fired with the completion of an upstream run built in the test."""

from embedding_report import EmbeddingReport

from mainspring import CompletionEvent
from mainspring.testing import fire


def test_adds_each_upstream_run_to_the_running_total():
    done = CompletionEvent.of("embed_new_rows", outputs={"embedded": 120}, run_id="run-7")
    result = fire(EmbeddingReport, event=done, state={"total": 80})
    assert result.status == "completed", result.error
    assert result.outputs == {"upstream_run": "run-7", "embedded": 120, "total": 200}
    assert result.state == {"total": 200}
