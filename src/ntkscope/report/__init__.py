"""Reports: figures, HTML pages and JSON summaries drawn from stored results."""
