"""What predict reads: records (JSONL, CSV, text) and web pages and WARC crawls."""
