"""Embeds the rows appended to the `photos` dataset, 100 rows at a time at the least.

The "embedding" is a cheap, deterministic feature-hashing vector of each row's text (a real
vectoriser, just not a learned one), so the example runs anywhere in milliseconds.
"""

import hashlib

import pyarrow as pa

from mainspring import Routine, on_dataset_append

DIMENSIONS = 16


def embed(text: str) -> list[float]:
    """A unit-length hashed bag-of-words vector of `text`."""
    vector = [0.0] * DIMENSIONS
    for token in text.lower().split():
        digest = hashlib.blake2b(token.encode(), digest_size=8).digest()
        slot = digest[0] % DIMENSIONS
        vector[slot] += 1.0 if digest[1] % 2 else -1.0
    norm = sum(v * v for v in vector) ** 0.5 or 1.0
    return [v / norm for v in vector]


class EmbedNewRows(Routine):
    def run(self, new_rows=on_dataset_append("photos", batch_rows=100), batch_size: int = 256):
        ids: list[int] = []
        vectors: list[list[float]] = []
        for batch in new_rows:
            ids.extend(batch.column("id").to_pylist())
            vectors.extend(embed(text or "") for text in batch.column("text").to_pylist())
            done = len(ids) / max(1, new_rows.added_records)
            self.progress(min(1.0, done), f"{len(ids)} of {new_rows.added_records} rows")
        self.save_artifact(
            "embeddings",
            pa.table({"id": ids, "vector": pa.array(vectors, pa.list_(pa.float32(), DIMENSIONS))}),
        )
        return {
            "embedded": new_rows.added_records,
            "versions": [new_rows.from_version, new_rows.to_version],
        }
