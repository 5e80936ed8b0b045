"""The applications: the CLI, `up`, the web page, the demo, the dev loop and the AsyncAPI generator."""
