"""EmbedNewRows fired with appended rows built in the test: no system needed."""

import pyarrow as pa
from embed_new_rows import DIMENSIONS, EmbedNewRows

from mainspring import DatasetEvent
from mainspring.testing import fire


def test_embeds_every_appended_row():
    rows = pa.table({"id": [1, 2, 3], "text": ["a cat", "a dog", None]})
    result = fire(EmbedNewRows, event=DatasetEvent.from_table(rows, from_version=4, to_version=5))
    assert result.status == "completed", result.error
    assert result.outputs == {"embedded": 3, "versions": [4, 5]}
    assert result.messages == ["3 of 3 rows"]
    embeddings = result.artifacts["embeddings"]
    assert embeddings.column("id").to_pylist() == [1, 2, 3]
    assert {len(vector) for vector in embeddings.column("vector").to_pylist()} == {DIMENSIONS}


def test_reads_the_rows_in_batches_of_its_batch_size_input():
    rows = pa.table({"id": list(range(5)), "text": ["x"] * 5})
    result = fire(EmbedNewRows, event=DatasetEvent.from_table(rows), inputs={"batch_size": 2})
    assert result.messages == ["2 of 5 rows", "4 of 5 rows", "5 of 5 rows"]
