"""Measure: run each artifact in its own runtime on the verifying device (this host or over SSH), judge it
against the budget, and re-measure a finished run (`edgepipe verify`)."""
