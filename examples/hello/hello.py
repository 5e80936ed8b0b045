"""A first routine: greets on a schedule, or when you run it by hand."""

import time

from mainspring import Routine, on_schedule


class Hello(Routine):
    def run(self, tick=on_schedule(every="10s"), name: str = "world", steps: int = 3) -> dict:
        for step in range(steps):
            self.progress((step + 1) / steps, f"step {step + 1} of {steps}")
            time.sleep(0.1)
        return {"greeting": f"hello, {name}", "run_number": self.run_info.number}
