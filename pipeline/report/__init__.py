"""Report: report.json (schema 1, written atomically, read back) and report.html rendered from it."""
