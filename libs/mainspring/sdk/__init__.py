"""What routine authors use: the Routine base class, its trigger specs and code bundles."""
