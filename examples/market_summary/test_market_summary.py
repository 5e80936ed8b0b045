"""The market-summary pipeline run in this process, without the system."""

from market_summary import dag

from mainspring.runtime.dag_executor import run_dag


def test_summarize_receives_the_fetched_prices_and_is_the_output():
    run = run_dag(dag)
    assert run.record.status == "completed"
    assert run.record.outputs == {"summarize": "Portfolio value: $325.00"}
    fetched = run.record.node("fetch")
    assert fetched is not None
    assert fetched.output == {"AAPL": 185.0, "GOOG": 140.0}
