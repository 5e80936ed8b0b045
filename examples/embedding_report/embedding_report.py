"""Keeps a running total of the rows EmbedNewRows embedded, after each of its successful runs."""

from mainspring import Routine, on_workflow_success


class EmbeddingReport(Routine):
    def run(self, done=on_workflow_success("embed_new_rows")) -> dict:
        embedded = done.outputs.get("embedded", 0)
        total = self.state.get("total", 0) + embedded
        self.state["total"] = total  # kept for the next run of this routine
        return {"upstream_run": done.run_id, "embedded": embedded, "total": total}
