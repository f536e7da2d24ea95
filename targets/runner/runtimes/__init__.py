"""One module per runtime, each defining RUNNER (a `Runner` subclass with the SUFFIX of its artifacts)."""
