"""The kdiff pipeline: ingest → train → sample → evaluate / retrieve → report, on Apache Beam."""
