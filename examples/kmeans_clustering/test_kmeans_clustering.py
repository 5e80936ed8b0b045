"""The clustering routine's methods, called as a runner would call them."""

from kmeans_clustering import KMeansClustering

from mainspring.testing import call


def test_configure_records_the_hyperparameters_and_forgets_old_centroids():
    result = call(KMeansClustering, "configure", inputs={"clusters": 2}, state={"centroids": [1]})
    assert result.outputs == {"clusters": 2, "max_iterations": 20}
    assert result.state == {}


def test_fit_uses_the_configuration_and_keeps_centroids_for_predict():
    fitted = call(
        KMeansClustering,
        "fit",
        inputs={"values": [1, 2, 3, 10, 11, 12]},
        configuration={"clusters": 2},
    )
    assert fitted.status == "completed"
    assert fitted.outputs["centroids"] == [2.0, 11.0]
    assert fitted.artifacts["assignments"].column("cluster").to_pylist() == [0, 0, 0, 1, 1, 1]

    predicted = call(KMeansClustering, "predict", inputs={"value": 9}, state=fitted.state)
    assert predicted.outputs == {"cluster": 1, "centroid": 11.0}


def test_predict_before_fit_fails_saying_what_to_run():
    result = call(KMeansClustering, "predict", inputs={"value": 9})
    assert result.status == "failed"
    assert "run its `fit` method first" in (result.error or "")
