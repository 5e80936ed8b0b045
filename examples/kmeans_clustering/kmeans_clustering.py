"""KMeans Clustering Routine: a blueprint with a constructor, `fit` and `predict`.

An instance ("customer_segments") is configured once with its hyperparameters
(`configure`); `fit` clusters values into that many groups and keeps the centroids in the
instance's state; `predict` assigns a value to the nearest centroid, quickly enough to run
in the caller's process (`--in-memory`). `fit` may not: it is the heavy one.
"""

import pyarrow as pa

from mainspring import Routine, method, on_schedule

# What `fit` clusters when it is given no values: three loose groups of order sizes.
SAMPLE = [12.0, 15.0, 14.0, 11.0, 48.0, 52.0, 50.0, 47.0, 95.0, 101.0, 99.0, 104.0]


def kmeans(values: list[float], clusters: int, max_iterations: int) -> tuple[list[float], int]:
    """One-dimensional k-means from evenly spread starting centroids; returns the centroids
    (ascending) and the iterations it took to settle."""
    ordered = sorted(values)
    step = max(1, len(ordered) // clusters)
    centroids = [ordered[min(i * step + step // 2, len(ordered) - 1)] for i in range(clusters)]
    for iteration in range(1, max_iterations + 1):
        groups: list[list[float]] = [[] for _ in centroids]
        for value in values:
            groups[nearest(centroids, value)].append(value)
        moved = [sum(g) / len(g) if g else c for g, c in zip(groups, centroids, strict=True)]
        if moved == centroids:
            return sorted(centroids), iteration
        centroids = moved
    return sorted(centroids), max_iterations


def nearest(centroids: list[float], value: float) -> int:
    """The index of the centroid closest to value."""
    return min(range(len(centroids)), key=lambda i: abs(centroids[i] - value))


class KMeansClustering(Routine):
    def configure(self, clusters: int = 3, max_iterations: int = 20) -> dict:
        """The constructor: an instance's hyperparameters. A new configuration forgets the
        centroids fitted under the old one."""
        if clusters < 1:
            raise ValueError(f"clusters must be at least 1, not {clusters}")
        self.state = {}
        return {"clusters": clusters, "max_iterations": max_iterations}

    @method
    def fit(self, values: list | None = None) -> dict:
        """Cluster the values (default: a sample) with this instance's configuration."""
        points = [float(v) for v in (values or SAMPLE)]
        clusters = int(self.config.get("clusters", 3))
        centroids, iterations = kmeans(points, clusters, int(self.config.get("max_iterations", 20)))
        assigned = [nearest(centroids, v) for v in points]
        self.save_artifact("assignments", pa.table({"value": points, "cluster": assigned}))
        self.state = {"centroids": centroids}
        inertia = sum((v - centroids[c]) ** 2 for v, c in zip(points, assigned, strict=True))
        return {"centroids": centroids, "inertia": round(inertia, 3), "iterations": iterations}

    @method(in_memory=True)
    def predict(self, value: float = 0.0) -> dict:
        """The cluster of one value, from the centroids the last `fit` kept."""
        centroids = self.state.get("centroids")
        if not centroids:
            raise RuntimeError("this instance is not fitted yet: run its `fit` method first")
        cluster = nearest(centroids, value)
        return {"cluster": cluster, "centroid": centroids[cluster]}

    def run(self, tick=on_schedule(every="1d")) -> dict:
        """Refit every day on the sample (a scheduled run is always run())."""
        return self.fit()
